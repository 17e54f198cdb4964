"""Uncertainty: bootstrap CIs over test proteins, and 95% CIs of a mean over seeds.

The bootstrap resamples whole proteins (also for residue tasks, whose residues are not
independent), re-scoring the task's primary metric on each resample.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np
from scipy import stats

from plm_bench.errors import BenchError
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


CI_RULES = ("t", "normal")


def mean_ci(values: list[float], rule: str = "t") -> tuple[float, float | None]:
    """Mean and 95% half-width over seeds; no half-width from a single value.

    ``t`` (default): the t-distribution's quantile with n-1 degrees of freedom times the standard
    error (4.30 with 3 seeds), right for the handful of seeds a run has. ``normal``: 1.96 standard
    errors, the study's rule (its tables report mean ± 1.96·SD/√n), to reproduce its numbers.
    """
    if rule not in CI_RULES:
        raise BenchError(f"CI rule {rule!r}: unknown; use one of {', '.join(CI_RULES)}")
    if len(values) < 2:
        return values[0], None
    quantile = 1.96 if rule == "normal" else float(stats.t.ppf(0.975, len(values) - 1))
    return mean(values), quantile * stdev(values) / math.sqrt(len(values))
