"""``bench pilot``'s answer: per backbone, does fine-tuning pay over the best frozen head, by how
much, at what cost, and is that settled; from the pilot's stored runs and its plan
(harness/run/pilot.py), in the terminal and as a section of ``bench report``.

Gains are paired over seeds (each fine-tuned seed minus the same seed of the best frozen head
at that training fraction, mean ± 95% CI by :func:`plm_bench.results.leaderboard.aggregate`), so
they carry the seed-to-seed noise that the comparison has. The verdict never says more than
those intervals: a gain whose CI excludes 0 is a gain; "frozen is enough" needs every measured
method's CI to lie below the smallest gain worth having (``min_gain``, in the metric's units);
anything else is inconclusive, with the seeds (at the observed spread) or the data fraction that
would settle it and what they would cost. Choosing the better of two frozen heads after the fact
favours frozen slightly: a gain over it is conservative.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from scipy import stats

from plm_bench.results import leaderboard as lb
from plm_bench.results import records as rec
from plm_bench.results.report import Section
from plm_bench.run.pilot import FROZEN, duration, stored_plans

MAX_SEEDS = 100  # beyond this many seeds a difference is too small to settle by seeds
FROZEN_ROLES = ("probe", "frozen MLP")


@dataclass
class Answer:
    """One backbone's answer: the gains table, costs, baselines, trend and the verdict."""

    backbone: str
    verdict: str
    gains: lb.Report
    costs: lb.Report
    evidence: list[str] = field(default_factory=list)


def latest_by_hash(records: list[dict]) -> dict[str, dict]:
    return {r["config_hash"]: r for r in sorted(records, key=lambda r: r.get("run_id", 0))}


def condition_runs(plan: dict, records: list[dict]) -> dict[str, dict[tuple[str, float], dict[int, dict]]]:
    """backbone -> (role, fraction) -> seed -> finished record of the plan's runs."""
    found = latest_by_hash([r for r in records if r.get("status", "finished") == "finished"])
    out: dict = defaultdict(lambda: defaultdict(dict))
    for run in plan["runs"]:
        record = found.get(run["hash"])
        if record is not None and rec.test_score(record) is not None:
            out[run["backbone"]][(run["role"], run["train_fraction"])][run["seed"]] = record
    return out


def served(plan: dict, backbone: str) -> list[str]:
    """The fine-tuning methods the plan could run on ``backbone`` (not LoRA on one-hot, say)."""
    return plan.get("serves", {}).get(backbone, [*plan["methods"], *plan.get("left_out", [])])


def oriented(value: float, up: bool) -> float:
    return value if up else -value


def still_improving(runs: dict[int, dict]) -> int:
    """How many of a condition's seeds ended every epoch still improving (the record's flag)."""
    return sum(bool(r.get("early_stopping", {}).get("still_improving")) for r in runs.values())


def seeds_to_decide(differences: list[float], min_gain: float) -> int | None:
    """Seeds at which the paired CI, at the spread seen so far, would exclude 0 or ``min_gain``
    (whichever the mean is further from); None beyond MAX_SEEDS or without a spread to go on."""
    if len(differences) < 2:
        return None
    cell = lb.aggregate(differences)
    spread = cell.half_width / stats.t.ppf(0.975, cell.n - 1) * math.sqrt(cell.n)  # the SD of the differences
    room = max(cell.mean, min_gain - cell.mean)
    for n in range(cell.n + 1, MAX_SEEDS + 1):
        if stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) < room:
            return n
    return None


def seconds_per_run(by: dict, role: str, fraction: float) -> float:
    """A condition's time per run at ``fraction``, mean over seeds. A frozen head's includes the
    embedding its runs read, computed once for every frozen run of the fraction by whichever ran
    first (either head alone would need it); a fine-tuning run's is its own."""
    runs = list(by[(role, fraction)].values())
    if role in (*FROZEN_ROLES, "shuffled labels"):
        shared = [r for (other, f), seeds in by.items() if f == fraction and other in (*FROZEN_ROLES, "shuffled labels")
                  for r in seeds.values()]
        embedding = max(r["cost"]["embed_seconds"] for r in shared)
        return embedding + statistics.fmean(r["cost"]["total_seconds"] - r["cost"]["embed_seconds"] for r in runs)
    return statistics.fmean(r["cost"]["total_seconds"] for r in runs)


def baseline_text(name: str, runs: dict[int, dict]) -> str:
    """How a condition's seeds fare against the trivial baseline (the record's ``baseline``)."""
    found = [r["baseline"] for r in runs.values() if "baseline" in r]
    if not found:
        return f"{name}: no baseline recorded"
    first = found[0]
    model = sum(b["model"] for b in found) / len(found)
    clears = sum(b["clears"] for b in found)
    return (f"{name}: test {first['metric']} {model:.4g} against the {first['trivial']}'s {first['baseline']:.4g}, "
            f"clears it in {clears}/{len(found)} seeds")


def answer(plan: dict, records: list[dict], ci: str = "t") -> list[Answer]:
    """Each backbone's answer from the plan's finished runs (any subset: a stopped pilot answers
    what it can)."""
    runs = condition_runs(plan, records)
    min_gain = plan.get("min_gain", 0.0)
    metric = plan.get("metric")
    up = lb.higher_is_better(metric) is not False
    out = []
    for backbone in plan["backbones"]:
        methods = [m for m in plan["methods"] if m in served(plan, backbone)]
        by = runs.get(backbone, {})
        fractions = sorted({f for _, f in by})
        gains = lb.Report(f"{backbone} on {plan['task']}: test {metric}, fine-tuned minus the best frozen head, "
                          "paired over seeds (mean ± 95% CI)", ("train fraction",),
                          ["best frozen head", "frozen score", *(f"{m} gain" for m in methods)],
                          higher_is_better=None)
        cells: dict[str, dict[float, tuple[lb.Cell, list[float], str]]] = defaultdict(dict)
        best_frozen: dict[float, tuple[str, dict[int, dict]]] = {}
        for fraction in fractions:
            frozen = {role: by[(role, fraction)] for role in FROZEN_ROLES if by.get((role, fraction))}
            if not frozen:
                continue
            role, base = max(frozen.items(), key=lambda kv: oriented(
                lb.aggregate([rec.test_score(r) for r in kv[1].values()], ci).mean, up))
            best_frozen[fraction] = (role, base)
            row: dict = {"best frozen head": role,
                         "frozen score": lb.aggregate([rec.test_score(r) for r in base.values()], ci)}
            for method in methods:
                tuned = by.get((method, fraction), {})
                shared = sorted(set(tuned) & set(base))
                if not shared:
                    continue
                differences = [oriented(rec.test_score(tuned[s]) - rec.test_score(base[s]), up) for s in shared]
                cell = lb.aggregate(differences, ci)
                cell = replace(cell, flags=lb.sign(cell.mean, cell.half_width))
                row[f"{method} gain"] = cell
                cells[method][fraction] = (cell, differences, role)
            gains.rows[(f"{fraction:g}",)] = row
        if not up:
            gains.caption.append(f"{metric}: lower is better, so a gain is the fine-tuned value below frozen's")
        gains.caption.append(f"gain/loss: the paired 95% CI excludes 0; a gain smaller than {min_gain:g} is not "
                             "worth having (--min-gain)")
        left = [m for m in plan.get("left_out", []) if m in served(plan, backbone)]
        answer_ = Answer(backbone, "", gains, cost_table(plan, backbone, by, fractions, [*methods, *left]))
        answer_.evidence += trends(cells)
        answer_.evidence += baselines(by, fractions)
        largest = max(fractions, default=None)
        if largest is not None and largest < 1:
            answer_.evidence.append(f"Largest training fraction run: {largest:g}; gains beyond it are not measured "
                                    "(costs at fraction 1 below are projected from the cost model, labelled so).")
        answer_.verdict = verdict(plan, backbone, cells, best_frozen, by, min_gain)
        out.append(answer_)
    return out


def trends(cells: dict[str, dict[float, tuple[lb.Cell, list[float], str]]]) -> list[str]:
    """Whether each method's gain grows or shrinks with data: the smallest and the largest
    fraction's gains differ by more than their CIs together (the study's Figure-1 rule)."""
    out = []
    for method, by_fraction in cells.items():
        if len(by_fraction) < 2:
            continue
        points = sorted(by_fraction.items())
        (first, _, _), (last, _, _) = points[0][1], points[-1][1]
        listed = "; ".join(f"{f:g}: {c.mean:+.3f}" for f, (c, _, _) in points)
        if first.half_width is None or last.half_width is None:
            call = "no CI at one end, so no call on the trend"
        elif last.mean - first.mean > first.half_width + last.half_width:
            call = "the gain grows with data"
        elif first.mean - last.mean > first.half_width + last.half_width:
            call = "the gain shrinks with data"
        else:
            call = "no clear trend (the gains at the smallest and largest fraction are within their CIs)"
        out.append(f"Trend of the {method} gain with data ({listed}): {call}.")
    return out


def baselines(by: dict, fractions: list[float]) -> list[str]:
    """The trivial and shuffled-label baselines at the largest fraction, against each condition."""
    if not fractions:
        return []
    largest = max(fractions)
    lines = [baseline_text(f"{role} at fraction {largest:g}", runs)
             for (role, fraction), runs in sorted(by.items()) if fraction == largest and role != "shuffled labels"]
    for (role, fraction), runs in sorted(by.items()):
        for record in runs.values() if role == "shuffled labels" else ():
            found, values = record["baseline"], record["baseline"]["baselines"]
            trivial = next(f"the {name}'s {values[name]:.4g}" for name in ("train mean", "majority class")
                           if name in values)
            lines.append(f"a frozen MLP trained on shuffled labels at fraction {fraction:g}: test {found['metric']} "
                         f"{values['shuffled labels']:.4g} (what a head learns without the label signal), against "
                         f"{trivial} and {found['model']:.4g} for the same head on the true labels")
    return ["Baselines: " + "; ".join(lines) + "."] if lines else []


def peak_text(runs: dict[int, dict]) -> str:
    costs = [r["cost"] for r in runs.values()]
    return f"{lb.COSTS['peak memory (GiB)'](costs):.2f} GiB ({lb.COSTS['memory kind'](costs)})"


def cost_table(plan: dict, backbone: str, by: dict, fractions: list[float], methods: list[str]) -> lb.Report:
    """Measured cost of each condition at the largest fraction it ran, and projected at fraction 1."""
    table = lb.Report(f"{backbone}: cost per run on {plan['device']}", ("condition",),
                      ["largest fraction run", "time per run (measured)", "time per run at fraction 1",
                       "peak memory", "trainable share"], higher_is_better=None)
    estimates = plan.get("run_estimates", {}).get(backbone, {})
    for role in (*FROZEN_ROLES, *methods):
        ran = [f for f in fractions if by.get((role, f))]
        method = role if role in methods else FROZEN
        if not ran:
            full = estimates.get(method, {}).get("1")
            table.rows[(role,)] = {"largest fraction run": "not run",
                                   "time per run at fraction 1": None if full is None else
                                   f"{duration(full)} (projected: cost model)"}
            continue
        largest = max(ran)
        runs = by[(role, largest)]
        measured = seconds_per_run(by, role, largest)
        if largest == 1:
            projected = f"{duration(measured)} (measured)"
        else:
            planned, full = estimates.get(method, {}).get(f"{largest:g}"), estimates.get(method, {}).get("1")
            projected = (f"{duration(measured * full / planned)} (projected from fraction {largest:g})"
                         if planned and full else "not projected")
        share = [r["parameters"]["trainable"] / r["parameters"]["total"] for r in runs.values()
                 if r.get("parameters", {}).get("total")]
        table.rows[(role,)] = {"largest fraction run": f"{largest:g}", "time per run (measured)": duration(measured),
                               "time per run at fraction 1": projected, "peak memory": peak_text(runs),
                               "trainable share": f"{sum(share) / len(share):.2%}" if share else None}
    table.caption.append("time per run: mean over seeds, a frozen head's including the embedding it reads; projections "
                         "scale the measured time by the cost model's ratio (training time grows with the data, "
                         "evaluation does not); peak memory at the largest fraction run")
    return table


def verdict(plan: dict, backbone: str, cells: dict, best_frozen: dict, by: dict, min_gain: float) -> str:
    """One of: fine-tune (METHOD): +X [CI] for Y× the cost; frozen is enough; inconclusive: what would decide it."""
    metric = plan.get("metric")
    if not served(plan, backbone):
        return f"nothing to decide: no fine-tuning method of this pilot applies to {backbone} (frozen heads only)"
    decided: dict[str, tuple[str, float, lb.Cell, list[float], str]] = {}
    for method in (m for m in plan["methods"] if m in served(plan, backbone)):
        paired = {f: v for f, v in cells.get(method, {}).items() if v[0].half_width is not None}
        if not paired:
            continue
        fraction = max(paired)
        cell, differences, role = paired[fraction]
        # a gain found while still improving stands (more training would only add to it); "not worth
        # it" does not: the CI is then of a method stopped short, not of the method
        state = "gain" if cell.ci_low > 0 else "enough" if cell.ci_high < min_gain and not still_improving(
            by[(method, fraction)]) else "open"
        decided[method] = (state, fraction, cell, differences, role)
    gains = {m: v for m, v in decided.items() if v[0] == "gain"}
    if gains:
        method, (_, fraction, cell, _, role) = max(gains.items(), key=lambda kv: kv[1][2].mean)
        ratio = seconds_per_run(by, method, fraction) / seconds_per_run(by, role, fraction)
        short = [r for r in by[(method, fraction)].values() if r.get("baseline", {}).get("clears") is False]
        caveat = (f"; but {len(short)}/{len(by[(method, fraction)])} of its seeds do not clear the trivial baseline"
                  if short else "")
        return (f"fine-tune ({method}): {cell.mean:+.3f} [{cell.ci_low:+.3f}, {cell.ci_high:+.3f}] {metric} over the "
                f"{role} for {ratio:.2g}× the cost per run{where(fraction)}{caveat}")
    unmeasured = [m for m in (*plan["methods"], *plan.get("left_out", [])) if m not in decided
                  and m in served(plan, backbone)]
    if decided and all(v[0] == "enough" for v in decided.values()) and not unmeasured:
        listed = "; ".join(f"{m}: {v[2].mean:+.3f} [{v[2].ci_low:+.3f}, {v[2].ci_high:+.3f}]{where(v[1])}"
                           for m, v in decided.items())
        return f"frozen is enough: every fine-tuning gain's CI lies below {min_gain:g} {metric} ({listed})"
    return "inconclusive: " + what_would_decide(plan, backbone, decided, unmeasured, by, best_frozen, min_gain)


def what_would_decide(plan: dict, backbone: str, decided: dict, unmeasured: list[str], by: dict, best_frozen: dict,
                      min_gain: float) -> str:
    """The cheapest next step per undecided method: more seeds at the spread seen, or a larger fraction."""
    parts = []
    estimates = plan.get("run_estimates", {}).get(backbone, {})
    for method, (state, fraction, cell, differences, _) in decided.items():
        if state != "open":
            continue
        per_seed = seconds_per_run(by, method, fraction) + seconds_per_run(by, best_frozen[fraction][0], fraction)
        n = seeds_to_decide(differences, min_gain)
        gain = f"{method} {cell.mean:+.3f} [{cell.ci_low:+.3f}, {cell.ci_high:+.3f}] at fraction {fraction:g}"
        stopped = still_improving(by[(method, fraction)])
        if stopped and cell.ci_high < min_gain:
            epochs = plan["design"]["epochs"]
            parts.append(f"{gain}, but {stopped}/{len(by[(method, fraction)])} of its seeds were still improving "
                         f"when their {epochs} epochs ended: more epochs would decide it (--epochs {2 * epochs}: "
                         f"est. {duration(len(differences) * seconds_per_run(by, method, fraction))} more for these "
                         f"{len(differences)} seeds, by the time measured)")
            continue
        if n is not None:
            more = n - len(differences)
            parts.append(f"{gain}: about {more} more seed{'s' * (more > 1)} would decide it, est. "
                         f"{duration(more * per_seed)}")
        else:
            parts.append(f"{gain}: more than {MAX_SEEDS} seeds at this spread; a larger fraction would decide it "
                         "sooner")
        if fraction < 1 and "1" in estimates.get(method, {}):
            seeds = max(3, len(differences))
            parts[-1] += (f" (or fraction 1: {seeds} seeds, est. {duration(seeds * estimates[method]['1'])} "
                          "by the cost model)")
    for method in unmeasured:
        if method in plan.get("needs", {}):
            parts.append(f"{method} did not fit the budget: the smallest pilot with it needs about "
                         f"{duration(plan['needs'][method])} here (--budget {math.ceil(plan['needs'][method] / 60)}m)")
            continue
        full = estimates.get(method, {})
        fraction = min((float(f) for f in full), default=None)
        if fraction is None:
            parts.append(f"{method} was not measured")
            continue
        why = "did not fit the budget" if method in plan.get("left_out", []) else \
            "has fewer than 2 seeds paired with a frozen head"
        parts.append(f"{method} {why}; about 3 seeds at fraction {fraction:g} would start to decide it, est. "
                     f"{duration(3 * full[f'{fraction:g}'])} (by the cost model)")
    return "; ".join(parts) or "no fine-tuned run finished"


def where(fraction: float) -> str:
    return "" if fraction == 1 else f" at training fraction {fraction:g} (larger fractions not run)"


def render_text(answer_: Answer) -> list[str]:
    return [f"{answer_.backbone}: {answer_.verdict}", *answer_.evidence]


def sections(store_path: Path, records: list[dict], ci: str = "t") -> list[Section]:
    """``bench report``'s pilot section: one per pilot plan kept beside the store whose runs finished."""
    out = []
    for plan in stored_plans(store_path):
        answers = answer(plan, records, ci)
        if not any(a.gains.rows for a in answers):
            continue
        section = Section(f"Pilot: {plan['task']} within {duration(plan['budget_seconds'])} on {plan['device']}")
        ran = plan.get("ran")
        section.text.append(f"Plan: {plan['description']}; estimated {duration(plan['estimated_seconds'])}"
                            + (f", ran in {duration(ran['seconds'])} with {ran['left_out']} runs left out for the "
                               "budget" if ran else "") + "."
                            + (f" {'; '.join(plan['notes'])}." if plan.get("notes") else ""))
        for a in answers:
            section.text += render_text(a)
            section.tables += [a.gains, a.costs]
        out.append(section)
    return out
