"""``bench report``: one self-contained page (HTML, or Markdown) answering, per task, whether
fine-tuning pays and at what cost, from the stored runs.

Every number comes from the leaderboard's functions (conditions, paired deltas and the study's
Figure-1 rule, seed CIs, costs, Pareto fronts) or, for the memory envelope, from the stored
``bench profile`` entries as measured (``results.profiles``); this module only chooses the views,
draws them and writes the recommendation. Charts are drawn by matplotlib as inline SVG: the project's plot
dependency already, well kept, and its SVG output is static markup that any browser shows
without JavaScript or network (fonts as the reader's sans-serif: ``svg.fonttype = none``).
"""

from __future__ import annotations

import html
import io
import json
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plm_bench.errors import BenchError
from plm_bench.results import leaderboard as lb
from plm_bench.results import profiles as pf
from plm_bench.results import records as rec

FORMATS = ("html", "md")
BASELINE = "frozen"  # the method fine-tuning is compared with
FRACTION = "train_fraction"
PROBE_PREFIX = "probe-"  # the linear-probe heads
SENSITIVITY_SKIP = (lb.COLUMN, "backbone", "method", FRACTION)  # what a sensitivity group holds constant
COST_VIEWS = {"total time (s)": "total (s)", "peak memory (GiB)": "peak memory (GiB)",
              "trainable parameters (%)": None}  # chart axis -> lb.COSTS column (None: from record parameters)


@dataclass
class Leakage:
    """A task's test proteins' highest identity to training, from ``bench data overlap``."""

    task: str
    train: int
    identities: list[float]
    seconds: float


@dataclass
class Section:
    """A titled part of the report: prose, tables and charts (SVG text), in that order."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[lb.Report] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)


@dataclass
class Group:
    """One condition's runs on one task: its config, test cell and costs."""

    config: dict
    records: list[dict]
    cell: lb.Cell

    def cost(self, view: str) -> float:
        column = COST_VIEWS[view]
        if column is not None:
            return lb.COSTS[column]([r["cost"] for r in self.records])
        shares = [r["parameters"]["trainable"] / r["parameters"]["total"] * 100 for r in self.records
                  if r.get("parameters", {}).get("total")]
        return sum(shares) / len(shares) if shares else float("nan")

    def name(self, fields: Sequence[str]) -> str:
        return " / ".join(lb.show(json.dumps(self.config[f], sort_keys=True)) for f in fields)


def groups(records: list[dict], metric: str | None, ci: str) -> dict[str, list[Group]]:
    """task -> its conditions with a test value; a later run of a condition and seed replaces an earlier one."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if rec.test_score(record, metric) is not None:
            by_key[json.dumps(lb.condition(record))].append(record)
    out: dict[str, list[Group]] = defaultdict(list)
    for runs in by_key.values():
        latest = {r["config"]["seed"]: r for r in sorted(runs, key=lambda r: r.get("run_id", 0))}
        config = vars_of(runs[0])
        cell = lb.aggregate([rec.test_score(r, metric) for r in latest.values()], ci)
        out[config[lb.COLUMN]].append(Group(config, list(latest.values()), cell))
    return dict(sorted(out.items()))


def vars_of(record: dict) -> dict:
    return lb.fields_of(record)


def headline(records: list[dict]) -> list[dict]:
    """Each task's runs at its largest training fraction: what the heatmap, costs and
    recommendation compare (smaller fractions are the learning curves)."""
    largest: dict[str, float] = {}
    for r in records:
        task, fraction = r["config"][lb.COLUMN], vars_of(r)[FRACTION]
        largest[task] = max(largest.get(task, 0.0), fraction)
    return [r for r in records if vars_of(r)[FRACTION] == largest[r["config"][lb.COLUMN]]]


# --- charts ----------------------------------------------------------------------------------

def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("bench report draws its charts with matplotlib: pip install 'plm-bench[plot]'") from None
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "plm-bench", "font.size": 9})
    return plt


def svg(fig) -> str:
    """The figure as inline SVG markup (no XML prolog), and the figure closed."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})  # no <metadata> block
    pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def delta_heatmap(report: lb.Report, tasks: list[str]) -> str:
    """Fine-tuned − frozen per condition × task, coloured by the paired difference and marked by
    both significance rules."""
    import numpy as np

    plt = pyplot()
    rows = list(report.rows)
    values = np.array([[report.rows[k][t].mean if isinstance(report.rows[k].get(t), lb.Cell) else np.nan
                        for t in tasks] for k in rows])
    bound = float(np.nanmax(np.abs(values))) or 1.0
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(tasks), 1.4 + 0.55 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(rows)), [" / ".join(k) for k in rows])
    for i, key in enumerate(rows):
        for j, task in enumerate(tasks):
            cell = report.rows[key].get(task)
            if isinstance(cell, lb.Cell):
                dark = abs(cell.mean) > 0.6 * bound  # RdBu's ends are dark
                ax.text(j, i, f"{cell.mean:+.3f}{marks(cell, report.rows[key].get(f'{task} ({lb.FIGURE1})'))}",
                        ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="fine-tuned − frozen")
    ax.set_title("* paired CI excludes 0   † study's Figure-1 rule: a gain or loss", fontsize=8)
    return svg(fig)


def marks(cell: lb.Cell, figure1: str | None) -> str:
    """``*`` where the paired CI excludes zero, ``†`` where the Figure-1 rule calls a gain or loss."""
    paired = "*" if {"gain", "loss"} & set(cell.flags) else ""
    return paired + ("†" if figure1 and figure1.split()[-1] in ("gain", "loss") else "")


def cost_chart(task: str, conditions: list[Group], better: bool) -> str:
    """Test metric vs each cost, with seed CIs, the Pareto front drawn as a line; points are
    numbered in ``conditions``' order (the section's text names them)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(COST_VIEWS), figsize=(4.2 * len(COST_VIEWS), 3.4), squeeze=False,
                             layout="constrained")
    for ax, view in zip(axes[0], COST_VIEWS, strict=True):
        spent = {i: g.cost(view) for i, g in enumerate(conditions)}
        points = {i: (g.cell.mean, spent[i]) for i, g in enumerate(conditions) if not math.isnan(spent[i])}
        on = lb.front(points, better)
        for i, (score, spent) in points.items():
            g = conditions[i]
            ax.errorbar(spent, score, yerr=g.cell.half_width or 0, fmt="o", capsize=3,
                        color="#c0392b" if i in on else "#7f8c8d")
            ax.annotate(str(i + 1), (spent, score), fontsize=7, xytext=(4, 4), textcoords="offset points")
        line = sorted((points[i] for i in on), key=lambda p: p[1])
        ax.plot([p[1] for p in line], [p[0] for p in line], "-", color="#c0392b", linewidth=1)
        costs = [p[1] for p in points.values()]
        if costs and min(costs) > 0 and max(costs) > 10 * min(costs):  # log only where it spans a decade
            ax.set_xscale("log")
        ax.set_xlabel(view)
        ax.set_ylabel(f"test {metric_name(conditions)}")
    fig.suptitle(f"{task}: accuracy vs cost (red: Pareto front)", fontsize=9)
    return svg(fig)


def metric_name(conditions: list[Group]) -> str:
    return conditions[0].records[0]["primary_metric"]


def curve_chart(task: str, series: dict[str, list[tuple[float, lb.Cell]]], metric: str) -> str:
    """Metric vs training fraction per condition, the seed CI as a band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, points in series.items():
        xs = [x for x, _ in points]
        ax.plot(xs, [c.mean for _, c in points], "o-", label=name)
        ax.fill_between(xs, [c.ci_low if c.ci_low is not None else c.mean for _, c in points],
                        [c.ci_high if c.ci_high is not None else c.mean for _, c in points], alpha=0.2)
    ax.set_xlabel("train fraction")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{task}: learning curve (band: 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    return svg(fig)


def bar_chart(title: str, table: lb.Report) -> str:
    """One bar per condition and task with its seed CI: the sensitivity to a varying setting."""
    import numpy as np

    plt = pyplot()
    keys, tasks = list(table.rows), [c for c in table.columns if c in lb.cell_columns(table)]
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(keys) * len(tasks), 3.4))
    width = 0.8 / max(len(tasks), 1)
    for j, task in enumerate(tasks):
        cells = [table.rows[k].get(task) for k in keys]
        xs = np.arange(len(keys)) + j * width
        ax.bar(xs, [c.mean if c else 0 for c in cells], width, label=task,
               yerr=[(c.half_width or 0) if c else 0 for c in cells], capsize=3)
    ax.set_xticks(np.arange(len(keys)) + width * (len(tasks) - 1) / 2, [" / ".join(k) for k in keys], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return svg(fig)


def leakage_chart(found: list[Leakage]) -> str:
    """Histogram of test proteins' highest identity to training, per task."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for item in found:
        ax.hist(item.identities, bins=20, range=(0, 1), histtype="step", linewidth=1.5, label=item.task)
    ax.set_xlabel("highest identity to a training protein")
    ax.set_ylabel("test proteins")
    ax.legend(fontsize=7)
    return svg(fig)


# --- sections --------------------------------------------------------------------------------

def significance(records: list[dict], metric: str | None, ci: str) -> tuple[Section, lb.Report | None]:
    section = Section("Does fine-tuning beat frozen embeddings?")
    try:
        report = lb.delta(records, BASELINE, metric, ci, by=("backbone", "method"))
    except BenchError as exc:
        section.text.append(f"No heatmap: {exc}.")
        return section, None
    tasks = sorted({c for row in report.rows.values() for c in row if isinstance(row[c], lb.Cell)})
    section.text.append("Each cell: the fine-tuned condition minus the frozen run of the same backbone and "
                        "settings, paired over the seeds both have. * the paired 95% CI excludes 0; † the "
                        "study's Figure-1 rule (difference of means beyond the sum of both 1.96·SD/√n "
                        "half-widths, whatever --ci is) calls a gain "
                        "or loss. Both rules are shown because they disagree on small seed counts.")
    section.charts.append(delta_heatmap(report, tasks))
    section.tables.append(report)
    return section, report


def study_section(records: list[dict], ci: str, logs: Mapping | None) -> Section | None:
    """The study's published values and logged runs beside the runs of its protocol (None when
    no run used it)."""
    if not any(lb.study_comparable(c) or lb.comparable_to_logs(c) for c in map(lb.condition, records)):
        return None
    section = Section("Beside the study (Schmirler et al. 2024)")
    section.text.append("Runs of the study protocol next to the study's published values (Tables S3-S6) and, "
                        "where `bench data fetch study-logs` put them in the data folder, its own logged runs of "
                        "the same condition (`bench reference logs` shows each selection rule).")
    section.tables.append(lb.leaderboard(records, reference=True, ci=ci, by=("backbone", "method"), logs=logs))
    return section


def cost_section(by_task: dict[str, list[Group]], records: list[dict], metric: str | None, ci: str) -> Section:
    section = Section("Accuracy vs cost")
    section.text.append("Per task, the test metric (mean ± 95% CI over seeds) against total time, peak memory "
                        "and the trainable share of parameters; red points are on the Pareto front (no other "
                        "condition is at least as good for less).")
    for task, conditions in by_task.items():
        fields = varying(conditions) or ["backbone", "method"]
        section.charts.append(cost_chart(task, conditions, lb.higher_is_better(metric) is not False))
        section.text.append(f"{task} points ({' / '.join(fields)}): "
                            + "; ".join(f"{i + 1} = {g.name(fields)}" for i, g in enumerate(conditions)))
    section.tables.append(lb.pareto(records, "total (s)", metric, ci))
    return section


def varying(conditions: list[Group], skip: Sequence[str] = (lb.COLUMN,)) -> list[str]:
    """The settings whose values differ among ``conditions``: what tells their points apart."""
    return [name for name in lb.condition_fields()
            if name not in skip and len({json.dumps(g.config[name], sort_keys=True) for g in conditions}) > 1]


def lb_condition(group: Group) -> lb.Condition:
    return lb.condition(group.records[0])


def curves_section(records: list[dict], metric: str | None, ci: str) -> Section | None:
    """Where a task has several training fractions: metric vs fraction per condition."""
    by_task = groups(records, metric, ci)
    section = Section("Learning curves")
    for task, conditions in by_task.items():
        if len({g.config[FRACTION] for g in conditions}) < 2:
            continue
        fields = varying(conditions, skip=(lb.COLUMN, FRACTION)) or ["backbone", "method"]
        series: dict[str, list[tuple[float, lb.Cell]]] = defaultdict(list)
        for g in sorted(conditions, key=lambda g: g.config[FRACTION]):
            series[g.name(fields)].append((g.config[FRACTION], g.cell))
        section.charts.append(curve_chart(task, dict(series), metric or metric_name(conditions)))
        task_records = [r for r in records if r["config"][lb.COLUMN] == task]
        section.tables.append(lb.leaderboard(task_records, metric, ci=ci, by=(FRACTION,)))
    if not section.charts:
        return None
    section.text.append("Nested training subsets (each larger fraction holds every smaller one); a curve still "
                        "rising at fraction 1 says more data would help.")
    return section


def sensitivity_section(records: list[dict], metric: str | None, ci: str) -> Section | None:
    """Per backbone and method, the settings that vary (method options such as LoRA rank or target
    modules or layers, lr, head, …): one bar per value, ``bench leaderboard --by`` style."""
    section = Section("Sensitivity to settings")
    families: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        families[(r["config"]["backbone"], r["config"]["method"])].append(r)
    for (backbone, method), runs in sorted(families.items()):
        labels, _ = lb.layout([lb.condition(r) for r in runs], skip=SENSITIVITY_SKIP)
        changing = [n for n in labels if len({json.dumps(lb.condition(r)[n]) for r in runs}) > 1]
        if not changing:
            continue
        table = lb.leaderboard(runs, metric, ci=ci, by=tuple(changing))
        table.title = f"{backbone} · {method}: {table.title}"
        section.charts.append(bar_chart(f"{backbone} · {method}: by {', '.join(changing)}", table))
        section.tables.append(table)
    return section if section.tables else None


def leakage(task_name: str, data_dir: Path, split: str = "test") -> Leakage:
    """The ``split`` proteins' highest identity to any training protein, timed."""
    from plm_bench import plugins
    from plm_bench.tasks.overlap import nearest

    started = time.perf_counter()
    loaded = plugins.get("task", task_name).load(data_dir)
    found = nearest([(e.id, e.sequence) for e in loaded[split]], [(e.id, e.sequence) for e in loaded["train"]])
    return Leakage(task_name, len(loaded["train"]), [n.identity for n in found], time.perf_counter() - started)


def leakage_section(found: list[Leakage] | None) -> Section:
    from plm_bench.tasks.overlap import THRESHOLDS, above

    section = Section("Leakage: test proteins similar to training")
    if found is None:
        section.text.append("Not computed: rerun with --overlap (it aligns every test protein against the "
                            "training set, as `bench data overlap TASK`).")
        return section
    table = lb.Report("test proteins at or above each identity to their nearest training protein",
                      ("task",), ["test proteins", "train proteins", *(f"≥ {t:.0%}" for t in THRESHOLDS),
                                  "seconds"], higher_is_better=None)
    for item in found:
        counts = above(item.identities)
        table.rows[(item.task,)] = {"test proteins": str(len(item.identities)), "train proteins": str(item.train),
                                    **{f"≥ {t:.0%}": str(counts[t]) for t in THRESHOLDS},
                                    "seconds": f"{item.seconds:.1f}"}
    table.caption.append("identity: identical aligned residues over the shorter length, global alignment "
                         "(pyopal, BLOSUM62), as `bench data overlap`")
    section.tables.append(table)
    section.charts.append(leakage_chart(found))
    return section


ENVELOPE = "Memory envelope"
BASE_METHOD = "full"  # what the adapters' longest lengths are compared with


def envelope_section(profiles: Sequence[dict], store: str = "FILE") -> Section:
    """Per device, the stored profiles' longest sequence at batch 1 per memory budget and their
    throughput (the latest profile per backbone, method, precision and device), and where a backbone
    was profiled fully fine-tuned too, each other method's longest over full's."""
    section = Section(ENVELOPE)
    if not profiles:
        section.text.append(f"No profiles stored: measure one with `bench profile --backbone X --method lora "
                            f"--store {store}` (it adds its throughput and memory envelope to the store).")
        return section
    section.text.append("The longest sequence one step at batch 1 fits within each memory budget, as `bench profile` "
                        "measured it (train step: forward, backward and AdamW step; frozen: inference), to each "
                        "profile's resolution; throughput on synthetic sequences of one length. Each row: the "
                        "latest profile with an envelope (else the latest) of its backbone, method, precision and "
                        "device; profiles: how many are stored.")
    by_device: dict[str, list[tuple[dict, int]]] = defaultdict(list)
    for profile, count in pf.latest(profiles):
        by_device[profile["device"]].append((profile, count))
    for device, rows in sorted(by_device.items()):
        budgets = sorted({b for profile, _ in rows for b in pf.budgets(profile)})
        columns = [budget_column(b) for b in budgets]
        table = lb.Report(f"{device}: longest sequence at batch 1 (residues) within each budget, and throughput",
                          ("backbone", "method", "precision (weights)"),
                          [*columns, "step", "train residues/s", "inference residues/s", "MFU train / inference",
                           "batch × length", "trainable / total parameters", "measured (UTC)", "profiles"],
                          higher_is_better=None)
        for profile, count in rows:
            envelope, longest = profile["envelope"], pf.budgets(profile)
            rates = {r["mode"]: r for r in profile["rates"]}
            row: dict[str, str | None] = {
                column: pf.longest_text(longest[b], envelope["max_length"], envelope["resolution"], cap="cap")
                if b in longest else None for b, column in zip(budgets, columns, strict=True)}
            row.update({
                "step": envelope["step"] if envelope else "no envelope",
                "train residues/s": rate_text(rates.get("train")),
                "inference residues/s": rate_text(rates.get("inference")),
                "MFU train / inference": " / ".join(mfu_text(rates.get(m)) for m in ("train", "inference")),
                "batch × length": ", ".join(sorted({f"{r['batch_size']} × {r['length']}" for r in rates.values()})),
                "trainable / total parameters": f"{profile['parameters']['trainable']:,} / "
                                                f"{profile['parameters']['total']:,}",
                "measured (UTC)": profile["profiled_at"][:16].replace("T", " "),
                "profiles": str(count),
            })
            table.rows[(backbone_label(profile), profile["method"], pf.compute(profile))] = row
        kinds = sorted({p["envelope"]["memory"] for p, _ in rows if p["envelope"]})
        table.caption.append("memory: " + "; ".join(pf.MEMORY_KINDS[k] for k in kinds) if kinds else
                             "no envelope measured (profiled with --no-envelope)")
        table.caption.append("— : budget not measured by that profile; ≥ N (cap): the search stopped at "
                             "its --max-length before memory ran out")
        section.tables.append(table)
        ratios = envelope_ratios(device, rows, budgets, columns)
        if ratios.rows:
            section.tables.append(ratios)
    return section


def budget_column(budget: int) -> str:
    return f"≤ {budget / pf.GIB:g} GiB"


def rate_text(rate: dict | None) -> str | None:
    return None if rate is None else f"{rate['residues_per_second']:,.0f}"


def mfu_text(rate: dict | None) -> str:
    """``—``: that step not measured; ``n/a``: the device's bf16 peak is unknown."""
    return "—" if rate is None else "n/a" if rate["mfu"] is None else f"{rate['mfu']:.1%}"


def backbone_label(profile: dict) -> str:
    """The backbone, and its weights' folder where they were not the registry's."""
    return profile["backbone"] + (f" ({profile['backbone_path']})" if profile["backbone_path"] else "")


def envelope_ratios(device: str, rows: list[tuple[dict, int]], budgets: list[int], columns: list[str]) -> lb.Report:
    """Each trained method's longest length over full fine-tuning's, per budget, where both are
    measured for the same backbone (and weights) and precision on ``device``."""
    table = lb.Report(f"{device}: each method's longest sequence at batch 1 over {BASE_METHOD} fine-tuning's "
                      "(same backbone and precision)", ("backbone", "method", "precision (weights)"), columns,
                      higher_is_better=None)
    trained = {(pf.key(p)[:2], pf.compute(p), p["method"]): p for p, _ in rows
               if p["envelope"] and p["envelope"]["step"] == "train"}
    for (weights, dtype, method), profile in trained.items():
        base = trained.get((weights, dtype, BASE_METHOD))
        if method == BASE_METHOD or base is None:
            continue
        ours, theirs = pf.budgets(profile), pf.budgets(base)
        table.rows[(backbone_label(profile), f"{method} / {BASE_METHOD}", dtype)] = {
            column: pf.ratio_text(ours[b], theirs[b], profile["envelope"], base["envelope"])
            if b in ours and b in theirs else None for b, column in zip(budgets, columns, strict=True)}
    table.caption.append("each to within both profiles' resolution; ≥ where the method reached its length cap, ≤ "
                         f"where {BASE_METHOD} did, — where both did or a budget was not measured by both")
    return table


# --- recommendation --------------------------------------------------------------------------

def recommend(task: str, conditions: list[Group], paired: lb.Report | None, metric: str | None) -> str:
    """What the numbers support for one task, in words; never more than the CIs carry."""
    metric = metric or metric_name(conditions)
    up = lb.higher_is_better(metric) is not False
    best = max(conditions, key=lambda g: g.cell.mean if up else -g.cell.mean)
    fields = ("backbone", "method", "head")
    spread = "" if best.cell.half_width is None else f" ± {best.cell.half_width:.3f}"
    lines = [f"Best condition: {best.name(fields)} at {best.cell.mean:.3f}{spread} {metric} (n={best.cell.n})."]
    lines.append(fine_tune_advice(conditions, paired, task, metric, up))
    probes = [g for g in conditions if g.config["head"].startswith(PROBE_PREFIX)]
    if probes:
        probe = max(probes, key=lambda g: g.cell.mean if up else -g.cell.mean)
        if probe is best:
            lines.append(f"A linear probe ({probe.name(fields)}) is itself the best condition.")
        elif up and best.cell.mean > 0 and probe.cell.mean > 0:
            lines.append(f"A linear probe ({probe.name(fields)}) reaches {probe.cell.mean / best.cell.mean:.0%} of "
                         f"the best mean ({probe.cell.mean:.3f} vs {best.cell.mean:.3f}) for "
                         f"{ratio(probe, best)} the total time.")
    return " ".join(line for line in lines if line)


def fine_tune_advice(conditions: list[Group], paired: lb.Report | None, task: str, metric: str, up: bool) -> str:
    frozen = [g for g in conditions if g.config["method"] == BASELINE]
    tuned = []
    for g in conditions:
        row = paired.rows.get(lb.label(lb_condition(g), paired.label_columns)) if paired else None
        if g.config["method"] != BASELINE and row and isinstance(row.get(task), lb.Cell):
            tuned.append((g, row[task], row.get(f"{task} ({lb.FIGURE1})", "")))
    if not tuned:
        return ("No fine-tuned run pairs with a frozen run of the same settings and seeds, so whether "
                "fine-tuning pays is not measured; run both methods with the same seeds.")
    g, cell, rule = max(tuned, key=lambda t: t[1].mean if up else -t[1].mean)
    # the cost baseline: the frozen condition closest to the fine-tuned one (its backbone, then its head)
    twin = min(frozen, key=lambda f: (f.config["backbone"] != g.config["backbone"],
                                      f.config["head"] != g.config["head"])) if frozen else None
    cost = f" for {ratio(g, twin)} the total time of frozen {twin.config['backbone']}" if twin else ""
    what = f"{g.config['method']} on {g.config['backbone']}"
    if cell.half_width is None:
        return (f"Fine-tuning with {what}: {cell.mean:+.3f} {metric} over frozen on one shared seed{cost}; "
                "no CI, so not enough to decide; run at least 3 seeds of each.")
    change = f"{cell.mean:+.3f} ± {cell.half_width:.3f} {metric} (paired over {cell.n} seeds; Figure-1 rule: {rule})"
    better, worse = ("gain", "loss") if up else ("loss", "gain")  # the delta's flags are by sign, not by merit
    if better in cell.flags:
        strict = "" if rule.endswith(better) else ("; the paired CI excludes 0, the stricter Figure-1 rule does not "
                                                    "call it")
        return f"Fine-tune with {what}: {change}{cost}{strict}."
    if worse in cell.flags:
        return f"Keep the backbone frozen: fine-tuning with {what} is worse by {change}{cost}."
    return (f"Fine-tuning is not shown to help: the best fine-tuned condition, {what}, changes it by {change}, "
            f"a CI that includes 0,{cost}; stay frozen unless more seeds narrow it.")


def ratio(a: Group, b: Group) -> str:
    ours, theirs = a.cost("total time (s)"), b.cost("total time (s)")
    return f"{ours / theirs:.2g}×" if theirs > 0 else "an unmeasured multiple of"


# --- the page --------------------------------------------------------------------------------

def build(records: list[dict], metric: str | None = None, ci: str = "t", found: list[Leakage] | None = None,
          notes: Sequence[str] = (), profiles: Sequence[dict] = (), store: str = "FILE",
          logs: Mapping | None = None) -> list[Section]:
    """The report's sections from finished records and stored profiles (already filtered);
    ``store`` names the store in the hint of how to add a profile. Profiles without runs make a
    report of their memory envelope alone."""
    envelope = envelope_section(profiles, store)
    if not records and profiles:
        envelope.text.insert(0, "No finished runs to report on (start with `bench run`); only the memory "
                                "envelope of the stored profiles.")
        return [envelope]
    if not records:
        raise BenchError("no finished runs to report on; start with `bench run` or loosen the filters")
    lb.check_metric(records, metric)
    main = headline(records)
    by_task = groups(main, metric, ci)
    if not by_task:
        raise BenchError(f"no finished run has test {metric or 'primary metric'}; see `bench runs`")
    overview, paired = significance(main, metric, ci)
    advice = Section("Recommendation per task")
    advice.text += [f"{task}: {recommend(task, conditions, paired, metric)}" for task, conditions in by_task.items()]
    advice.text.append("Heatmap, costs and recommendations compare each task's runs at its largest training "
                       "fraction; CIs are 95% over seeds.")
    advice.text += list(notes)
    study = study_section(main, ci, logs) if metric is None else None
    sections = [advice, overview, study, cost_section(by_task, main, metric, ci), envelope,
                curves_section(records, metric, ci), sensitivity_section(main, metric, ci), leakage_section(found)]
    return [s for s in sections if s is not None]


STYLE = lb.HTML_STYLE + """
section { margin-bottom: 2.5rem; } h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
"""


def render(sections: list[Section], fmt: str, title: str = "plm-bench report") -> str:
    """The sections as one self-contained HTML page (inline SVG and CSS) or as Markdown (the
    tables and text; charts are in the HTML only)."""
    if fmt == "md":
        parts = [f"# {title}"]
        for s in sections:
            parts += [f"\n## {s.title}\n", *(f"{t}\n" for t in s.text), *(lb.render(t, "md") for t in s.tables)]
        return "\n".join(parts) + "\n"
    if fmt != "html":
        raise BenchError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    body = []
    for s in sections:
        body.append(f"<section>\n<h2>{html.escape(s.title)}</h2>\n"
                    + "".join(f"<p>{html.escape(t)}</p>\n" for t in s.text)
                    + "".join(f'<figure class="chart">{c}</figure>\n' for c in s.charts)
                    + "".join(lb.html_table(t) for t in s.tables) + "</section>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n" + "\n".join(body)
            + "\n</body>\n</html>\n")
