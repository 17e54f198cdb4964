"""Uncertainty: bootstrap CIs over test proteins, and mean ± 1.96·SE over seeds.

The bootstrap resamples whole proteins (also for residue tasks, whose residues are not
independent), re-scoring the task's primary metric on each resample.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np

from plm_bench.tasks.metrics import score
from plm_bench.tasks.task import Example, Task


def bootstrap_ci(task: Task, examples: list[Example], predictions: list[np.ndarray], seed: int,
                 resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the primary metric over proteins resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(examples)
    scores = []
    for _ in range(resamples):
        picks = rng.integers(0, n, size=n)
        scores.append(score(task, [examples[i] for i in picks], [predictions[i] for i in picks]))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and 95% half-width (1.96 standard errors); no half-width from a single value."""
    if len(values) < 2:
        return values[0], None
    return mean(values), 1.96 * stdev(values) / math.sqrt(len(values))
