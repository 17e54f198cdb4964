"""Aggregate finished runs over seeds: mean ± 95% CI (1.96 standard errors) per cell."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from plm_bench.statistics import mean_ci


@dataclass(frozen=True)
class Cell:
    """One (backbone, method, head, task) result over ``n`` seeds."""

    mean: float
    half_width: float | None  # None with a single seed: no spread to estimate
    n: int

    def __str__(self) -> str:
        spread = "" if self.half_width is None else f" ± {self.half_width:.3f}"
        return f"{self.mean:.3f}{spread} (n={self.n})"


def aggregate(values: list[float]) -> Cell:
    return Cell(*mean_ci(values), len(values))


Row = tuple[str, str, str]  # backbone, method, head


def leaderboard(records: list[dict]) -> tuple[list[str], dict[Row, dict[str, Cell]]]:
    """Tasks (columns) and rows keyed by (backbone, method, head) of test primary-metric cells."""
    values: dict[Row, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        config = record["config"]
        test = record["metrics"]["test"][record["primary_metric"]]
        values[(config["backbone"], config["method"], config["head"])][config["task"]].append(test)
    tasks = sorted({task for cells in values.values() for task in cells})
    rows = {key: {task: aggregate(v) for task, v in cells.items()} for key, cells in sorted(values.items())}
    return tasks, rows
