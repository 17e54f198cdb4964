"""Leaderboards from finished runs: one row per *condition* (every setting but the seed), cells
mean ± 95% CI over its seeds; gains over a baseline condition; cost columns, Pareto fronts and
the study's published values for comparison.

A condition is a run's :class:`~plm_bench.config.RunConfig` without the seed, so runs that differ
in any setting (init, limits, lr, method options, protocol, …) never pool or replace each other,
and a setting added to RunConfig joins the key by itself. Settings that vary among the shown
runs become label columns; the constant ones go to the caption. ``--by`` takes a setting or a
method option (``layer``, ``top_layers``, ``rank``): an option named there becomes a column of
its own, out of the ``method_options`` one.

Everything here is plain data (:class:`Report`); ``render`` turns a report into Markdown, CSV,
JSON or HTML, and ``heatmap`` draws one with matplotlib.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path
from statistics import mean
from typing import Any

from plm_bench.config import config_fields
from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.results import provenance
from plm_bench.results import records as rec
from plm_bench.results.intervals import mean_ci

FORMATS = ("table", "md", "csv", "json", "html")
REPLICATE = "seed"  # what a row pools over: its cells are means over this field
OPTIONS = "method_options"  # the field whose keys --by may also name
COLUMN = "task"  # what the columns of a leaderboard are
CODE = "code"  # the code a run's result depends on (provenance.code): part of the condition, so never pooled across
FILTERS = ("plm_bench_version",)  # what else --where can filter on: facts of the record, not of the condition
STUDY_PROTOCOL = "study"  # the protocol whose runs are comparable with the study's published values
FIGURE1 = "Fig. 1 rule"
# Settings a baseline method brings with it: its training recipe. Each method resolves its own lr,
# options, head and every protocol setting (the study trains frozen heads 50-240 epochs and
# fine-tunes 5-50), so `--delta frozen` pairs runs on the same backbone, data and seed whose
# recipes are each their method's; the data, the weights and the seed must still be equal.
AXIS_FIELDS = {"method": ("method", "method_options", "lr", "head", "patience", "min_delta",
                          *(f.name for f in config_fields() if f.metadata["protocol"]))}
DELTA_SHORTHANDS = {"init": ("init", "random")}  # --delta init: what pretraining adds over random weights

Condition = dict[str, str]  # field name -> JSON of its value (hashable, exact)


@dataclass(frozen=True)
class Cell:
    """One result over ``n`` seeds: mean and 95% half-width (None with a single seed)."""

    mean: float
    half_width: float | None
    n: int
    flags: tuple[str, ...] = ()  # e.g. "outside study CI", "gain", "loss", "smoke"

    @property
    def ci_low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def ci_high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def __str__(self) -> str:
        spread = "" if self.half_width is None else f" ± {self.half_width:.3f}"
        flags = f" {', '.join(self.flags)}" if self.flags else ""
        return f"{self.mean:.3f}{spread} (n={self.n}){flags}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n,
                "flags": list(self.flags)}


@dataclass
class Report:
    """A titled table: row labels, column names and cells (or plain values), and a caption with
    what is the same for every row."""

    title: str
    label_columns: tuple[str, ...]
    columns: list[str]
    rows: dict[tuple, dict[str, Cell | float | str | None]] = field(default_factory=dict)
    caption: list[str] = field(default_factory=list)
    higher_is_better: bool | None = True  # of the Cell columns; None: no best is marked


def aggregate(values: list[float], ci: str = "t", flags: tuple[str, ...] = ()) -> Cell:
    return Cell(*mean_ci(values, ci), len(values), flags)


# --- conditions ------------------------------------------------------------------------------

def condition_fields() -> list[str]:
    """Every RunConfig field but the seed, in RunConfig's order, then the code that produced the
    run: what makes a condition."""
    return [*(f.name for f in config_fields() if f.name != REPLICATE), CODE]


def fields_of(record: dict) -> dict[str, Any]:
    """What filters and conditions read of a record: its settings (fields newer than the record
    at RunConfig's defaults), the code its result depends on, and the plm-bench version that ran it."""
    version = (record.get("provenance") or {}).get("plm_bench", {}).get("version", "0.1.0")
    return {**asdict(rec.config_of(record)), CODE: provenance.code(record), "plm_bench_version": version}


def condition(record: dict) -> Condition:
    """The record's condition."""
    config = fields_of(record)
    return {name: json.dumps(config[name], sort_keys=True) for name in condition_fields()}


def show(encoded: str) -> str:
    """A condition value for people: ``rank=8 ffn=true`` for options, ``—`` for unset."""
    value = json.loads(encoded)
    if value is None or value == {}:
        return "—"
    if isinstance(value, dict):
        return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(value.items()))
    return f"{value:g}" if isinstance(value, float) else str(value)


def smoke(record: dict) -> bool:
    return rec.config_of(record).is_smoke


def parse_where(pairs: Iterable[str]) -> dict[str, str]:
    """``FIELD=VALUE`` filters as field -> encoded value (VALUE parses as JSON where it can). A
    FIELD that is no setting names a method option (``rank=8``), checked against the runs."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BenchError(f"--where {pair!r}: write FIELD=VALUE, FIELD a setting (e.g. lr) or a method "
                             "option (e.g. rank)")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[name] = json.dumps(None if parsed == "none" else parsed, sort_keys=True)
    return out


def setting(config: dict, name: str) -> Any:
    """A run's setting ``name`` (``asdict`` of its config): a config field, else its method's
    option of that name (None where its method has none)."""
    return config[name] if name in config else config[OPTIONS].get(name)


def select(records: list[dict], where: dict[str, str] | None = None, include_smoke: bool = False,
           **any_of: Sequence[str]) -> tuple[list[dict], list[str]]:
    """Records matching every filter, and caption notes on what was left out.

    ``where`` holds exact (encoded) values; ``any_of`` maps a field to accepted plain values
    (``task=("gb1", "aav")``). Smoke runs (limits) are left out unless ``include_smoke``.
    """
    where = where or {}

    def keep(record: dict) -> bool:
        config = fields_of(record)
        return (all(json.dumps(setting(config, k), sort_keys=True) == v for k, v in where.items())
                and all(not wanted or config[k] in wanted for k, wanted in any_of.items()))

    check_filters(records, where, any_of)
    chosen = [r for r in records if keep(r)]
    hidden = [r for r in chosen if smoke(r)]
    if include_smoke or not hidden:
        return chosen, []
    return [r for r in chosen if not smoke(r)], [f"{len(hidden)} smoke runs (--limit-train/--limit-eval) "
                                                 "hidden: not comparable with full runs; --smoke shows them"]


def check_filters(records: list[dict], where: dict[str, str], any_of: dict[str, Sequence[str]]) -> None:
    """One clear error, listing what the store has, for a filter value that no record has."""
    configs = [fields_of(r) for r in records]
    if records:
        for name in where:
            check_name("--where", name, [*(f.name for f in config_fields()), CODE, *FILTERS],
                       {k for c in configs for k in c[OPTIONS]})
    for name, wanted in [*((k, [v]) for k, v in where.items()), *any_of.items()]:
        present = {json.dumps(setting(c, name), sort_keys=True) if name in where else c[name] for c in configs}
        missing = [w for w in wanted if w not in present]
        if missing and records:
            shown = sorted(show(v) if name in where else str(v) for v in present)
            value = show(missing[0]) if name in where else missing[0]
            raise BenchError(f"no stored run has {name} = {value}; the store has: {', '.join(shown)}")


def check_name(flag: str, name: str, known: Sequence[str], options: Iterable[str]) -> None:
    """One line for ``flag``'s ``name`` when it is neither a setting (``known``) nor one of the
    runs' method ``options``."""
    options = sorted(options)
    if name not in known and name not in options:
        from plm_bench.plugins.specs import did_you_mean

        raise BenchError(f"{flag} {name}: unknown setting{did_you_mean(name, [*known, *options])}; use one of "
                         f"{', '.join(known)}, or a method option of the shown runs "
                         f"({', '.join(options) or 'they have none'})")


def option_names(conditions: Iterable[Condition]) -> set[str]:
    """The method options the conditions' methods take."""
    return {k for c in conditions for k in json.loads(c[OPTIONS])}


def project(c: Condition, names: Iterable[str]) -> Condition:
    """``c`` with each of ``names`` that is a method option rather than a setting as a field of
    its own (``null`` where the run's method lacks it), taken out of ``method_options``."""
    picked = [n for n in names if n not in c]
    if not picked:
        return c
    options = json.loads(c[OPTIONS])
    rest = {k: v for k, v in options.items() if k not in picked}
    return {**c, OPTIONS: json.dumps(rest, sort_keys=True),
            **{n: json.dumps(options.get(n), sort_keys=True) for n in picked}}


def layout(conditions: Iterable[Condition], by: Sequence[str] = (), skip: Iterable[str] = (COLUMN,)
           ) -> tuple[list[str], list[str]]:
    """(label fields, caption lines): the ``by`` fields (settings or method options), then every
    field whose value varies, in RunConfig's order; each constant field as ``name = value`` for
    the caption."""
    conditions = list(conditions)
    known = condition_fields()
    for name in by:
        check_name("--by", name, known, option_names(conditions))
    conditions = [project(c, by) for c in conditions]
    picked = [n for n in by if n not in known]  # method options, now fields of the projected conditions
    skip = set(skip)
    known = [*picked, *(n for n in known if n not in skip)]
    values = {name: {c[name] for c in conditions} for name in known}
    varying = [n for n in known if n not in by and len(values[n]) > 1]
    labels = [*by, *varying] or ["backbone"]
    constant = [f"{n} = {show(next(iter(values[n])))}" for n in known if n not in labels and len(values[n]) == 1]
    return labels, (["same for every row: " + ", ".join(constant)] if constant else [])


def label(c: Condition, labels: Sequence[str]) -> tuple[str, ...]:
    shown = project(c, labels)  # options among the labels are columns of their own
    return tuple(show(shown[name]) for name in labels)


def check_metric(records: list[dict], metric: str | None) -> list[str]:
    """Caption notes for tasks without ``metric``; one clear error when no run has it."""
    if metric is None:
        return []
    have: dict[str, set[str]] = defaultdict(set)
    for r in records:
        have[r["config"]["task"]].update(r["metrics"].get("test", {}))
    if not any(metric in names for names in have.values()):
        existing = sorted(set().union(*have.values()))
        raise BenchError(f"no shown run has test metric {metric!r}; they have: {', '.join(existing) or 'none'}")
    lacking = sorted(t for t, names in have.items() if metric not in names)
    return [f"tasks without {metric}: {', '.join(lacking)}"] if lacking else []


def higher_is_better(metric: str | None) -> bool | None:
    """Whether larger values of ``metric`` are better (primary metrics always are); None: unknown."""
    if metric is None:
        return True
    from plm_bench.tasks.metrics import METRICS

    spec = METRICS.get(metric) or METRICS.get(metric.split("_")[0])
    return spec.higher_is_better if spec else None


def row_key(record: dict) -> str:
    """The record's condition without the task (a row of a leaderboard), as JSON."""
    return json.dumps({k: v for k, v in condition(record).items() if k != COLUMN})


def by_condition(records: list[dict], metric: str | None) -> dict[str, dict[str, dict[int, float]]]:
    """row key -> task -> seed -> test value; a later run of the same condition and seed
    replaces an earlier one."""
    cells: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in sorted(records, key=lambda r: r.get("run_id", 0)):
        value = rec.test_score(record, metric)
        if value is not None:
            cells[row_key(record)][record["config"][COLUMN]][record["config"][REPLICATE]] = value
    return cells


BASELINE_FLAG = "≤ trivial baseline"
IMPROVING_FLAG = "still improving"
# What each seed-level flag means, for the caption of a report that shows it.
SEED_FLAGS = {
    BASELINE_FLAG: "a seed whose 95% interval of squared error (regression) or accuracy holds the training "
                   "mean's or majority class's value",
    IMPROVING_FLAG: "a seed whose best validation was its last: it ran every epoch still improving; raise "
                    "--epochs or set --patience",
}


def seed_flags(records: list[dict]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(row key, task) -> the flags of conditions with a seed that does not clear its trivial
    baseline (the record's ``baseline``) or that ended still improving."""
    flags: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        key = (row_key(r), r["config"][COLUMN])
        if r.get("baseline", {}).get("clears") is False:
            flags[key].add(BASELINE_FLAG)
        if r.get("early_stopping", {}).get("still_improving"):
            flags[key].add(IMPROVING_FLAG)
    return {key: tuple(f for f in SEED_FLAGS if f in found) for key, found in flags.items()}


def smoke_flag(records: list[dict]) -> Callable[[str], tuple[str, ...]]:
    """Row key -> ("smoke",) for the rows of smoke runs, so they stay marked wherever shown."""
    keys = {row_key(r) for r in records if smoke(r)}
    return lambda key: ("smoke",) if key in keys else ()


def titled(what: str, metric: str | None, ci: str) -> str:
    rule = "t-distribution" if ci == "t" else "1.96·SE, the study's rule"
    return f"test {metric or 'primary metric'}{what}, mean ± 95% CI over seeds ({rule})"


# --- reports ---------------------------------------------------------------------------------

def leaderboard(records: list[dict], metric: str | None = None, reference: bool = False, ci: str = "t",
                by: Sequence[str] = (), logs: Mapping[tuple[str, str, str, str], tuple] | None = None) -> Report:
    """Rows conditions, columns tasks, cells the test metric's mean ± 95% CI over seeds.

    With ``reference`` (primary metric only), each task gets the study's published value beside
    it for the conditions comparable with the study (pretrained runs of the study protocol);
    those whose CI does not overlap the study's are flagged. Like with like: that test uses the
    study's rule (1.96·SD/√n) whatever ``ci`` is, and a cell of another seed count says so. With
    ``logs`` (:func:`plm_bench.results.study_logs.load`), conditions of the study protocol on all
    the data, random init included, also get the study's logged runs of the same condition under
    the selection rule the run used (:func:`study_logs.describe`).
    """
    if reference and metric:
        raise BenchError("the study's reference values are for each task's primary metric; drop --metric")
    notes = check_metric(records, metric)
    cells, flagged = by_condition(records, metric), smoke_flag(records)
    by_seed = seed_flags(records)
    conditions = {key: json.loads(key) for key in cells}
    labels, caption = layout(conditions.values(), by)
    tasks = sorted({task for per_task in cells.values() for task in per_task})
    report = Report(titled("", metric, ci), tuple(labels), list(tasks), caption=caption + notes,
                    higher_is_better=higher_is_better(metric))
    shown = {f for flags in by_seed.values() for f in flags}
    report.caption += [f"{flag}: {meaning}" for flag, meaning in SEED_FLAGS.items() if flag in shown]
    others = 0
    for key, per_task in sorted(cells.items(), key=lambda kv: label(conditions[kv[0]], labels)):
        c = conditions[key]
        row = report.rows.setdefault(label(c, labels), {})
        comparable = study_comparable(c)
        others += reference and not comparable
        for task, seeds in per_task.items():
            cell = aggregate(list(seeds.values()), ci, flagged(key) + by_seed.get((key, task), ()))
            if reference:
                study = study_reference().get((json.loads(c["backbone"]), task, json.loads(c["method"])))
                if study and comparable:
                    if not overlaps(aggregate(list(seeds.values()), "normal"), study.mean, study.ci):
                        cell = replace(cell, flags=(*cell.flags, "outside study CI"))
                    if cell.n != study.n:
                        cell = replace(cell, flags=(*cell.flags, f"study n={study.n}"))
                    row[f"{task} (study)"] = str(study)
                else:
                    row[f"{task} (study)"] = None
                if logs is not None:
                    row[f"{task} (study logs)"] = logged(logs, c, task) if comparable_to_logs(c) else None
            row[task] = cell
    if reference:
        extra = ("study", "study logs") if logs is not None else ("study",)
        report.columns = [c for t in tasks for c in (t, *(f"{t} ({e})" for e in extra))]
        report.caption.append("study: Schmirler et al. 2024, Tables S3–S6, mean ± 1.96·SD/√n over the seeds shown; "
                              f"compared only with pretrained runs of --protocol {STUDY_PROTOCOL} on all the data; "
                              "flagged where the CIs (ours by the same 1.96·SD/√n rule) do not overlap; values marked "
                              "'best test epoch' were selected on the test set (ESM2-3B; Ankh LoRA subcellular "
                              "location), so no honest run reaches them")
        if logs is not None:
            report.caption.append("study logs: the study's own runs of the same condition (training_logs.zip), each "
                                  "seed's test value at its lowest validation loss (else marked best test epoch), "
                                  "mean ± 1.96·SD/√n; `bench reference logs` shows every rule")
        if others:
            report.caption.append(f"{others} conditions not of the study's protocol, weights or data have no "
                                  "study value")
    return report


def comparable_to_logs(c: Condition) -> bool:
    """Whether the study's logs hold runs like this condition's: as :func:`study_comparable` on
    every training and test protein (no smoke limits), random initialization included (the logs
    have it; the published tables do not)."""
    whole = all(json.loads(c.get(name, "null")) is None for name in ("limit_train", "limit_eval"))
    return whole and study_comparable({**c, "init": json.dumps("pretrained")})


def logged(logs: Mapping[tuple[str, str, str, str], tuple], c: Condition, task: str) -> str | None:
    """The study logs' value for condition ``c`` on ``task``: by lowest validation loss, the rule
    of the study protocol (the logs hold no validation metric), else marked as best test epoch;
    a run whose schedule is not the one its study runs logged says so."""
    from plm_bench.results.study_logs import describe

    runs = logs.get((json.loads(c["backbone"]), task, json.loads(c["method"]), json.loads(c["init"])))
    if not runs:
        return None
    ours = (json.loads(c["epochs"]), json.loads(c["val_per_epoch"]))
    logged_schedules = sorted({(r.epochs, r.val_per_epoch) for r in runs})
    other = "" if ours in logged_schedules else (
        f"; logged {' or '.join(f'{e}x{v}' for e, v in logged_schedules)}, this run {ours[0]}x{ours[1]}")
    return describe(runs) + other


def study_comparable(c: Condition) -> bool:
    """Whether a condition ran the study's recipe on the study's data: pretrained weights, the
    study protocol, and every training and test protein (no --train-fraction, --dedup or
    --max-identity subset, whose numbers would differ from the published ones by design)."""
    value = {name: json.loads(c[name]) for name in ("protocol", "init", "train_fraction", "dedup", "max_identity")}
    return value == {"protocol": STUDY_PROTOCOL, "init": "pretrained", "train_fraction": 1.0, "dedup": False,
                     "max_identity": None}


def overlaps(cell: Cell, study_mean: float, study_half_width: float) -> bool:
    """Whether our CI (a point with one seed) meets the study's."""
    low = cell.mean if cell.ci_low is None else cell.ci_low
    high = cell.mean if cell.ci_high is None else cell.ci_high
    return low <= study_mean + study_half_width and high >= study_mean - study_half_width


def parse_delta(spec: str) -> tuple[str, str]:
    """``--delta`` as (field, baseline value): ``FIELD=VALUE`` (a setting or a method option),
    ``init`` (random), or a method name."""
    if spec in DELTA_SHORTHANDS:
        return DELTA_SHORTHANDS[spec]
    name, sep, value = spec.partition("=")
    if not sep:
        return "method", spec
    if not name:
        raise BenchError(f"--delta {spec!r}: write FIELD=VALUE, FIELD a setting or a method option")
    return name, value


def closest(candidates: list[str], c: Condition, conditions: dict[str, Condition], fields: Sequence[str]) -> list[str]:
    """The baseline candidates equal to condition ``c`` in the most of ``fields`` (those the pairing
    lets differ): a frozen MLP head pairs with the fine-tuned MLP head's run, not the probe's;
    still tied, those whose method runs with its default options (an inner layer is a variant
    of frozen embeddings, not the baseline)."""
    equal = {k: sum(conditions[k].get(f) == c.get(f) for f in fields) for k in candidates}
    most = max(equal.values(), default=0)
    tied = [k for k in candidates if equal[k] == most]
    plain = [k for k in tied if default_options(conditions[k])]
    return plain if len(tied) > 1 and plain else tied


def default_options(c: Condition) -> bool:
    """Whether condition ``c``'s method options are its method's defaults (False for a method no
    installed plugin provides)."""
    from plm_bench import plugins

    try:
        method = plugins.get("method", json.loads(c["method"]))
    except BenchError:
        return False
    return json.loads(c.get(OPTIONS, "{}")) == json.loads(json.dumps(method.resolve_options({})))


def delta(records: list[dict], spec: str, metric: str | None = None, ci: str = "t",
          by: Sequence[str] = ()) -> Report:
    """Gain of each condition over the baseline condition that matches it in every setting but
    the compared one (``spec``, see :func:`parse_delta`), per task.

    Two readings, each labelled: the paired difference over the seeds both have (mean ± CI of
    the differences; "gain"/"loss" when that CI excludes zero), and the study's Figure-1 rule (a
    gain counts when the difference of means exceeds CI_condition + CI_baseline).
    """
    axis, baseline = parse_delta(spec)
    notes = check_metric(records, metric)
    ignored = AXIS_FIELDS.get(axis, (axis,))
    cells, flagged = by_condition(records, metric), smoke_flag(records)
    stored = {key: json.loads(key) for key in cells}
    if axis not in condition_fields():  # a method option: a field of its own, out of method_options
        check_name("--delta", axis, condition_fields(), option_names(stored.values()))
        by = (axis, *(n for n in by if n != axis))
    conditions = {key: project(c, [axis]) for key, c in stored.items()}

    def pair_key(c: Condition) -> str:
        return json.dumps({k: v for k, v in c.items() if k not in ignored})

    def matches(c: Condition) -> bool:
        return show(c[axis]) == baseline or c[axis] == json.dumps(baseline)

    bases: dict[str, list[str]] = defaultdict(list)
    for key, c in conditions.items():
        if matches(c):
            bases[pair_key(c)].append(key)
    compared = {key: c for key, c in conditions.items() if not matches(c) and bases.get(pair_key(c))}
    if not compared:
        option = f"--{axis.replace('_', '-')} {baseline}"
        raise BenchError(f"no condition pairs with a {axis} = {baseline} condition that matches it in every other "
                         f"setting; run `bench run {option}` with the same settings and seeds (see `bench runs`)")
    labels, caption = layout((stored[key] for key in compared), by)
    tasks = sorted({t for key in compared for t in cells[key]})
    report = Report(titled(f": gain over {axis} = {baseline}", metric, ci), tuple(labels),
                    [c for t in tasks for c in (t, f"{t} ({FIGURE1})")], caption=caption + notes,
                    higher_is_better=higher_is_better(metric))
    own = " (its own training recipe: lr, options, head, protocol settings)" if axis == "method" else ""
    report.caption.append(f"each row minus the {axis} = {baseline} run of the same settings{own}: the paired "
                          f"difference over shared seeds (gain/loss: its CI excludes 0), and the study's {FIGURE1} "
                          "(gain: the difference of means exceeds the sum of both 1.96·SD/√n half-widths, "
                          "whatever --ci is)")
    for key, c in sorted(compared.items(), key=lambda kv: label(kv[1], labels)):
        candidates = closest(bases[pair_key(c)], c, conditions, ignored)
        if len(candidates) > 1:
            differ = sorted({n for n in ignored if len({conditions[b][n] for b in candidates}) > 1})
            raise BenchError(f"{len(candidates)} {axis} = {baseline} conditions match {' '.join(label(c, labels))}: "
                             f"they differ in {', '.join(differ)}; pick one with --where")
        base = cells[candidates[0]]
        row = report.rows.setdefault(label(c, labels), {})
        for task, seeds in cells[key].items():
            shared = sorted(set(seeds) & set(base.get(task, {})))
            if not shared:
                continue
            cell = aggregate([seeds[s] - base[task][s] for s in shared], ci, flagged(key))
            row[task] = replace(cell, flags=(*cell.flags, *sign(cell.mean, cell.half_width)))
            # the study's Figure-1 rule whatever --ci is: its CI column is the sum of both 1.96·SD/√n half-widths
            ours, theirs = aggregate(list(seeds.values()), "normal"), aggregate(list(base[task].values()), "normal")
            row[f"{task} ({FIGURE1})"] = figure1(ours, theirs)
    if not any(report.rows.values()):
        raise BenchError(f"conditions pair with {axis} = {baseline}, but share no seed on any task; run the "
                         "baseline with the same seeds")
    return report


def sign(difference: float, half_width: float | None) -> tuple[str, ...]:
    if half_width is None or abs(difference) <= half_width:
        return ()
    return ("gain",) if difference > 0 else ("loss",)


def figure1(ours: Cell, theirs: Cell) -> str:
    """The study's Figure-1 call: a gain (loss) when the means differ by more than both CIs together."""
    if ours.half_width is None or theirs.half_width is None:
        return "n/a (one seed)"
    difference = ours.mean - theirs.mean
    verdict = sign(difference, ours.half_width + theirs.half_width)
    return f"{difference:+.3f} {verdict[0] if verdict else 'within CIs'}"


MEMORY_KINDS = {"cuda": "GPU allocated", "process_rss": "process RSS",
                "process_rss_lifetime": "process RSS (lifetime peak)"}  # record kind -> column text


def memory_kind(cost: dict) -> str:
    kind = cost["peak_memory"]["kind"]
    return MEMORY_KINDS.get(kind, kind)


def peak_bytes(cost: dict) -> int:
    memory = cost["peak_memory"]
    return memory.get("allocated_bytes") if memory["kind"] == "cuda" else memory.get("rss_bytes", 0)


# column -> how one condition's records give it (a frozen run embeds once, later seeds read the cache)
COSTS: dict[str, Callable[[list[dict]], float | str | None]] = {
    "embed (s)": lambda costs: max(c["embed_seconds"] for c in costs),
    "train (s)": lambda costs: mean(c["train_seconds"] for c in costs),
    "total (s)": lambda costs: (max(c["embed_seconds"] for c in costs)
                                + mean(c["total_seconds"] - c["embed_seconds"] for c in costs)),
    "time to best (s)": lambda costs: (max(c["embed_seconds"] for c in costs)
                                       + mean(c["time_to_best_seconds"] for c in costs)),
    "peak memory (GiB)": lambda costs: max(peak_bytes(c) for c in costs) / 2**30,
    "memory kind": lambda costs: " / ".join(sorted({memory_kind(c) for c in costs})),
    "backbone dtype": lambda costs: " / ".join(sorted({c.get("backbone_dtype", "not recorded") for c in costs})),
}
COST_AXES = ("total (s)", "train (s)", "time to best (s)", "peak memory (GiB)")


def costs(records: list[dict], metric: str | None = None, ci: str = "t", by: Sequence[str] = ()) -> Report:
    """One row per task and condition: the metric and what its runs cost."""
    notes = check_metric(records, metric)
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if rec.test_score(record, metric) is not None and "cost" in record:
            groups[json.dumps(condition(record))].append(record)
    conditions = {key: json.loads(key) for key in groups}
    labels, caption = layout(conditions.values(), by)
    report = Report(f"cost per condition, test {metric or 'primary metric'} mean ± 95% CI over seeds",
                    (COLUMN, *labels), ["test", *COSTS], caption=caption + notes,
                    higher_is_better=higher_is_better(metric))
    report.caption.append("embed: the frozen embedding, computed once per condition (later seeds read the cache); "
                          "train, total, time to best: per run, mean over seeds, total and time to best including "
                          "the embedding; peak memory: the largest over seeds")
    for key, group in sorted(groups.items(), key=lambda kv: (kv[1][0]["config"][COLUMN],
                                                                label(conditions[kv[0]], labels))):
        c = conditions[key]
        row: dict = {"test": aggregate([rec.test_score(r, metric) for r in group], ci,
                                       ("smoke",) if smoke(group[0]) else ())}
        row.update({column: read([r["cost"] for r in group]) for column, read in COSTS.items()})
        report.rows[(json.loads(c[COLUMN]), *label(c, labels))] = row
    return report


def pareto(records: list[dict], cost: str = "total (s)", metric: str | None = None, ci: str = "t",
           by: Sequence[str] = ()) -> Report:
    """Per task, which conditions are on the metric-vs-cost front (no other condition is at least
    as good for less, or better for the same cost)."""
    if cost not in COST_AXES:
        raise BenchError(f"--cost-axis {cost!r}: use one of {', '.join(COST_AXES)}")
    table = costs(records, metric, ci, by)
    better = 1 if table.higher_is_better is not False else -1
    report = Report(f"Pareto front per task: test {metric or 'primary metric'} vs {cost}", table.label_columns,
                    ["test", cost, "on front"], caption=table.caption, higher_is_better=table.higher_is_better)
    for task in {key[0] for key in table.rows}:
        rows = {k: r for k, r in table.rows.items() if k[0] == task}
        on = front({k: (r["test"].mean, r[cost]) for k, r in rows.items()}, better > 0)
        for key, row in rows.items():
            report.rows[key] = {"test": row["test"], cost: row[cost], "on front": "yes" if key in on else "no"}
    report.rows = dict(sorted(report.rows.items()))
    return report


def front(points: dict, higher_is_better: bool = True) -> set:
    """Keys of the (score, cost) points no other point dominates (at least as good for no more
    cost, and better or cheaper)."""
    better = 1 if higher_is_better else -1
    return {key for key, (score, spent) in points.items()
            if not any(better * s >= better * score and c <= spent and (better * s > better * score or c < spent)
                       for k, (s, c) in points.items() if k != key)}


@dataclass(frozen=True)
class Published:
    """A value the study published: mean ± 1.96·SD/√n over ``seeds``, each run's test value at the
    validation ``selected_by`` picked (valid-loss, or best-test: selected on the test set)."""

    mean: float
    ci: float
    n: int
    seeds: tuple[int, ...]
    selected_by: str

    def __str__(self) -> str:
        marked = ", best test epoch" if self.selected_by == "best-test" else ""
        return f"{self.mean:.3f} ± {self.ci:.3f} (n={self.n}{marked})"


@cache
def study_reference() -> dict[tuple[str, str, str], Published]:
    """(backbone, task, method) -> the value published by the study, with the seeds behind it."""
    path = Path(str(files("plm_bench.results").joinpath("study_reference.toml")))
    return {(r["backbone"], r["task"], r["method"]): Published(r["mean"], r["ci"], r["n"], tuple(r["seeds"]),
                                                               r["selected_by"])
            for r in load_toml(path)["result"]}


# --- output ----------------------------------------------------------------------------------

def text(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def best(report: Report) -> dict[str, float]:
    """Per Cell column, the best mean (where the metric's direction is known)."""
    if report.higher_is_better is None:
        return {}
    pick = max if report.higher_is_better else min
    out = {}
    for column in report.columns:
        means = [r[column].mean for r in report.rows.values() if isinstance(r.get(column), Cell)]
        if len(means) > 1:
            out[column] = pick(means)
    return out


def cell_columns(report: Report) -> set[str]:
    return {c for c in report.columns if any(isinstance(r.get(c), Cell) for r in report.rows.values())}


def render(report: Report, fmt: str) -> str:
    """The report as Markdown, CSV, JSON or HTML text (``table`` is drawn by the CLI with rich).

    CSV and JSON carry numbers: each result column as mean, ci_low, ci_high and n (and its flags).
    """
    header = [*report.label_columns, *report.columns]
    lines = [[*key, *(text(cells.get(c)) for c in report.columns)] for key, cells in report.rows.items()]
    if fmt == "md":
        out = [f"**{report.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines]
                         + [f"\n{note}" for note in report.caption]) + "\n"
    if fmt == "csv":
        numeric = cell_columns(report)
        head = [*report.label_columns]
        for c in report.columns:
            head += [f"{c} {part}" for part in ("mean", "ci_low", "ci_high", "n", "flags")] if c in numeric else [c]
        body = []
        for key, cells in report.rows.items():
            line = [*key]
            for c in report.columns:
                value = cells.get(c)
                if c in numeric:
                    line += ([value.mean, value.ci_low, value.ci_high, value.n, "; ".join(value.flags)]
                             if isinstance(value, Cell) else [None] * 5)
                else:
                    line.append(value)
            body.append(["" if v is None else v for v in line])
        buffer = io.StringIO()
        csv.writer(buffer).writerows([head, *body])
        return buffer.getvalue()
    if fmt == "json":
        def raw(value):
            return value.as_dict() if isinstance(value, Cell) else value

        return json.dumps({"title": report.title, "caption": report.caption, "rows": [
            {**dict(zip(report.label_columns, key, strict=True)), **{c: raw(cells.get(c)) for c in report.columns}}
            for key, cells in report.rows.items()]}, indent=2) + "\n"
    if fmt == "html":
        return render_html(report)
    raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1a1a1a;
       margin: 2rem; }
table { border-collapse: collapse; font-size: 14px; }
caption { caption-side: top; text-align: left; font-weight: 600; font-size: 16px; padding-bottom: .5rem; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #e2e2e2; vertical-align: top; }
th { background: #f4f4f6; text-align: left; border-bottom: 2px solid #bbb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.label { white-space: nowrap; }
.ci { color: #666; font-size: 12px; }
.n { color: #999; font-size: 11px; }
.bar { display: block; position: relative; height: 4px; margin-top: 3px; background: #eee; }
.bar span { position: absolute; top: 0; height: 4px; background: #4a78c2; }
td.best { background: #eaf5ea; font-weight: 700; }
.flag { display: inline-block; margin-left: .3rem; padding: 0 .3rem; border-radius: 3px; font-size: 11px;
        background: #fde2e1; color: #a1260d; font-weight: 400; }
.flag.gain { background: #ddf3dd; color: #1f6b1f; }
.notes { color: #555; font-size: 13px; max-width: 60rem; }
"""


def render_html(report: Report) -> str:
    """A self-contained page (inline CSS, no network) holding the report's table."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(report.title)}'
            f"</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n{html_table(report)}</body>\n</html>\n")


def html_table(report: Report) -> str:
    """The report as an HTML table and its notes: numbers right-aligned in tabular figures, each
    CI as ± and as a bar on the column's scale, the best mean per column marked."""
    numeric = cell_columns(report)
    tops = best(report)
    scale = {}
    for c in numeric:
        cells = [r[c] for r in report.rows.values() if isinstance(r.get(c), Cell)]
        low = min(x.ci_low if x.ci_low is not None else x.mean for x in cells)
        high = max(x.ci_high if x.ci_high is not None else x.mean for x in cells)
        scale[c] = (low, high - low or 1.0)

    def cell_html(column: str, value) -> str:
        if not isinstance(value, Cell):
            klass = "num" if column in numeric or isinstance(value, float | int) else "label"
            return f'<td class="{klass}">{html.escape(text(value))}</td>'
        low, width = scale[column]
        spread = "" if value.half_width is None else f' <span class="ci">± {value.half_width:.3f}</span>'
        bar = ""
        if value.half_width is not None:
            left = (value.ci_low - low) / width * 100
            bar = (f'<span class="bar"><span style="left:{left:.1f}%;'
                   f'width:{max(value.half_width * 2 / width * 100, 1):.1f}%"></span></span>')
        flags = "".join(f'<span class="flag{" gain" if f == "gain" else ""}">{html.escape(f)}</span>'
                        for f in value.flags)
        klass = "num best" if tops.get(column) == value.mean else "num"
        return (f'<td class="{klass}">{value.mean:.3f}{spread} <span class="n">n={value.n}</span>{flags}'
                f"{bar}</td>")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*report.label_columns, *report.columns))
    body = "\n".join(
        "<tr>" + "".join(f'<td class="label">{html.escape(k)}</td>' for k in key)
        + "".join(cell_html(c, cells.get(c)) for c in report.columns) + "</tr>"
        for key, cells in report.rows.items())
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in report.caption)
    marked = "<p>Shaded bold: the best mean of each column.</p>" if tops else ""
    return (f"<table>\n<caption>{html.escape(report.title)}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
            f'{body}\n</tbody>\n</table>\n<div class="notes">{notes}{marked}</div>\n')


def heatmap(report: Report, path: Path) -> None:
    """Rows × result columns coloured by mean, annotated with mean ± CI (needs matplotlib).

    The figure grows with its labels and is saved with a tight bounding box, so the title
    (wrapped), row labels and column labels are never clipped.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'plm-bench[plot]'") from None
    import textwrap

    import numpy as np

    columns = [c for c in report.columns if c in cell_columns(report)]
    if not columns or not report.rows:
        raise BenchError("--plot: the report has no results to draw")
    labels = [" / ".join(key) for key in report.rows]
    values = np.array([[r[c].mean if isinstance(r.get(c), Cell) else np.nan for c in columns]
                       for r in report.rows.values()])
    width = 1.5 + 0.09 * max(len(label) for label in labels) + 1.3 * len(columns)
    fig, ax = plt.subplots(figsize=(max(width, 5.0), 1.6 + 0.5 * len(labels)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    low, high = np.nanmin(values), np.nanmax(values)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylabel(" / ".join(report.label_columns))
    for i, r in enumerate(report.rows.values()):
        for j, c in enumerate(columns):
            if isinstance(r.get(c), Cell):
                spread = "" if r[c].half_width is None else f"\n± {r[c].half_width:.3f}"
                light = high > low and (r[c].mean - low) / (high - low) > 0.6  # viridis turns yellow
                ax.text(j, i, f"{r[c].mean:.3f}{spread}", ha="center", va="center",
                        color="black" if light else "white", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(textwrap.fill(report.title, 60), fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.2)
    plt.close(fig)
