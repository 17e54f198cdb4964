"""Leaderboards from finished runs: mean ± 95% CI over seeds, gains over frozen embeddings
(paired over seeds, as the study's Figure 1), cost columns, Pareto fronts and the study's
published values for comparison.

Everything here is plain data (:class:`Report`); ``render`` turns a report into a rich table,
Markdown, CSV, JSON or HTML, and ``heatmap`` draws one with matplotlib.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path
from statistics import mean

from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.results.intervals import mean_ci

Row = tuple[str, str, str]  # backbone, method, head
FORMATS = ("table", "md", "csv", "json", "html")


@dataclass(frozen=True)
class Cell:
    """One result over ``n`` seeds: mean and 95% half-width (None with a single seed)."""

    mean: float
    half_width: float | None
    n: int
    flag: str = ""  # e.g. "outside study CI", "gain", "loss"

    def __str__(self) -> str:
        spread = "" if self.half_width is None else f" ± {self.half_width:.3f}"
        return f"{self.mean:.3f}{spread} (n={self.n}){' ' + self.flag if self.flag else ''}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n, "flag": self.flag or None}


@dataclass
class Report:
    """A titled table: row labels, column names and cells (or plain values)."""

    title: str
    label_columns: tuple[str, ...]
    columns: list[str]
    rows: dict[tuple, dict[str, Cell | float | str | None]] = field(default_factory=dict)


def aggregate(values: list[float], flag: str = "") -> Cell:
    return Cell(*mean_ci(values), len(values), flag)


def select(records: list[dict], tasks=(), backbones=(), methods=()) -> list[dict]:
    """Records matching every non-empty filter."""
    def keep(record: dict) -> bool:
        c = record["config"]
        return all(not wanted or c[key] in wanted
                   for key, wanted in (("task", tasks), ("backbone", backbones), ("method", methods)))

    return [r for r in records if keep(r)]


def test_value(record: dict, metric: str | None) -> float | None:
    """The record's test ``metric`` (its primary metric when None), or None if it lacks it."""
    return record["metrics"]["test"].get(metric or record["primary_metric"])


def by_cell(records: list[dict], metric: str | None) -> dict[Row, dict[str, dict[int, float]]]:
    """row -> task -> seed -> test value."""
    cells: dict[Row, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        value = test_value(record, metric)
        if value is not None:
            c = record["config"]
            cells[(c["backbone"], c["method"], c["head"])][c["task"]][c["seed"]] = value
    return cells


def leaderboard(records: list[dict], metric: str | None = None, reference: bool = False) -> Report:
    """Rows backbone × method × head, columns tasks, cells test metric mean ± 95% CI.

    With ``reference`` (primary metric only), each task gets the study's published value beside
    it, and our cells whose mean falls outside the study's CI are flagged.
    """
    if reference and metric:
        raise BenchError("the study's reference values are for each task's primary metric; drop --metric")
    cells = by_cell(records, metric)
    tasks = sorted({task for row in cells.values() for task in row})
    report = Report(f"test {metric or 'primary metric'}, mean ± 95% CI over seeds",
                    ("backbone", "method", "head"), list(tasks))
    for row, per_task in sorted(cells.items()):
        report.rows[row] = {}
        for task, seeds in per_task.items():
            cell = aggregate(list(seeds.values()))
            if reference:
                study = study_reference().get((row[0], task, row[1]))
                if study and abs(cell.mean - study[0]) > study[1]:
                    cell = replace(cell, flag="outside study CI")
                report.rows[row][f"{task} (study)"] = f"{study[0]:.3f} ± {study[1]:.3f}" if study else None
            report.rows[row][task] = cell
    if reference:
        report.columns = [c for t in tasks for c in (t, f"{t} (study)")]
    return report


def delta(records: list[dict], baseline: str, metric: str | None = None) -> Report:
    """Gain of each method over ``baseline`` for the same backbone, head, task and seed.

    Differences are paired over the seeds both have, then mean ± 1.96·SE of the differences;
    flagged "gain"/"loss" when that CI excludes zero.
    """
    cells = by_cell(records, metric)
    tasks = sorted({task for row in cells.values() for task in row})
    report = Report(f"test {metric or 'primary metric'} gain over {baseline}, paired over seeds",
                    ("backbone", "method", "head"), tasks)
    for (backbone, method, head), per_task in sorted(cells.items()):
        base = cells.get((backbone, baseline, head))
        if method == baseline or base is None:
            continue
        report.rows[(backbone, method, head)] = {}
        for task, seeds in per_task.items():
            shared = sorted(set(seeds) & set(base.get(task, {})))
            if not shared:
                continue
            cell = aggregate([seeds[s] - base[task][s] for s in shared])
            sign = "" if cell.half_width is None or abs(cell.mean) <= cell.half_width else (
                "gain" if cell.mean > 0 else "loss")
            report.rows[(backbone, method, head)][task] = Cell(cell.mean, cell.half_width, cell.n, sign)
    if not report.rows:
        raise BenchError(f"no runs pair with a {baseline!r} run of the same backbone, head, task and seed; "
                         f"run `bench run --method {baseline}` with the same seeds first")
    return report


COSTS = {  # column -> how to read it from a record's cost
    "peak memory (GiB)": lambda cost: (cost["peak_memory"].get("allocated_bytes")
                                       or cost["peak_memory"].get("rss_bytes", 0)) / 2**30,
    "train time (s)": lambda cost: cost["train_seconds"],
    "time to best (s)": lambda cost: cost["time_to_best_seconds"],
    "residues/s": lambda cost: cost["train_residues_per_second"],
}


def costs(records: list[dict], metric: str | None = None) -> Report:
    """One row per backbone × method × head × task: the metric and the mean cost over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        c = record["config"]
        if test_value(record, metric) is not None and "cost" in record:
            groups[(c["backbone"], c["method"], c["head"], c["task"])].append(record)
    report = Report("cost per run, mean over seeds", ("backbone", "method", "head", "task"),
                    ["test", *COSTS])
    for key, group in sorted(groups.items()):
        row: dict = {"test": aggregate([test_value(r, metric) for r in group])}
        for column, read in COSTS.items():
            values = [read(r["cost"]) for r in group if read(r["cost"]) is not None]
            row[column] = mean(values) if values else None
        report.rows[key] = row
    return report


def pareto(records: list[dict], cost: str = "train time (s)", metric: str | None = None) -> Report:
    """Per task, which backbone × method × head are on the metric-vs-cost front
    (no other setting is at least as good for less, or better for the same cost)."""
    table = costs(records, metric)
    report = Report(f"Pareto front per task: test metric vs {cost}", table.label_columns,
                    ["test", cost, "on front"])
    for key, row in table.rows.items():
        rivals = [r for k, r in table.rows.items() if k[3] == key[3] and k != key and r[cost] is not None]
        if row[cost] is None:
            continue
        dominated = any(r["test"].mean >= row["test"].mean and r[cost] <= row[cost]
                        and (r["test"].mean > row["test"].mean or r[cost] < row[cost]) for r in rivals)
        report.rows[key] = {"test": row["test"], cost: row[cost], "on front": "no" if dominated else "yes"}
    return report


@cache
def study_reference() -> dict[tuple[str, str, str], tuple[float, float]]:
    """(backbone, task, method) -> (mean, 95% half-width) published by the study."""
    path = Path(str(files("plm_bench.results").joinpath("study_reference.toml")))
    return {(r["backbone"], r["task"], r["method"]): (r["mean"], r["ci"]) for r in load_toml(path)["result"]}


def text(value) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render(report: Report, fmt: str) -> str:
    """The report as Markdown, CSV, JSON or HTML text (``table`` is drawn by the CLI with rich)."""
    header = [*report.label_columns, *report.columns]
    lines = [[*key, *(text(cells.get(c)) for c in report.columns)] for key, cells in report.rows.items()]
    if fmt == "md":
        out = [f"**{report.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *lines])
        return buffer.getvalue()
    if fmt == "json":
        def raw(value):
            return value.as_dict() if isinstance(value, Cell) else value

        return json.dumps({"title": report.title, "rows": [
            {**dict(zip(report.label_columns, key, strict=True)), **{c: raw(cells.get(c)) for c in report.columns}}
            for key, cells in report.rows.items()]}, indent=2) + "\n"
    if fmt == "html":
        def row(cells, tag):
            return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

        return (f"<table>\n<caption>{html.escape(report.title)}</caption>\n{row(header, 'th')}\n"
                + "\n".join(row(line, "td") for line in lines) + "\n</table>\n")
    raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def heatmap(report: Report, path: Path) -> None:
    """Rows × tasks coloured by mean, annotated with mean ± CI (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'plm-bench[plot]'") from None
    import numpy as np

    columns = [c for c in report.columns if any(isinstance(r.get(c), Cell) for r in report.rows.values())]
    labels = [" / ".join(key) for key in report.rows]
    values = np.array([[r[c].mean if isinstance(r.get(c), Cell) else np.nan for c in columns]
                       for r in report.rows.values()])
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(columns), 1 + 0.5 * len(labels)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i, r in enumerate(report.rows.values()):
        for j, c in enumerate(columns):
            if isinstance(r.get(c), Cell):
                spread = "" if r[c].half_width is None else f"\n± {r[c].half_width:.3f}"
                ax.text(j, i, f"{r[c].mean:.3f}{spread}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(report.title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
