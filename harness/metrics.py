"""Scores, from scipy/scikit-learn, over pooled arrays.

Residue-level tasks pool all scored residues of all proteins (the study's per-residue
Spearman and Q3); unknown labels are removed by the caller's mask before scoring.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score

from plm_bench.errors import BenchError
from plm_bench.task import Example, Task


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman rank correlation. Constant predictions carry no ranking, so they score 0
    (scipy would return NaN, which must never reach a table)."""
    if len(y_true) < 2:
        raise BenchError(f"Spearman needs at least 2 scored values, got {len(y_true)}")
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        return 0.0
    return float(spearmanr(y_true, y_pred).statistic)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction correct; ``y_pred`` holds class scores ``[N, C]`` or class indices ``[N]``."""
    predicted = y_pred.argmax(axis=-1) if y_pred.ndim == 2 else y_pred
    return float(accuracy_score(y_true, predicted))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "spearman": spearman,
    "accuracy": accuracy,
    "q3": accuracy,
}


def metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if name not in METRICS:
        raise BenchError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def score(task: Task, examples: list[Example], predictions: list[np.ndarray]) -> float:
    """The task's primary metric over all examples (residue tasks: pooled scored residues)."""
    if task.level == "protein":
        y_true = np.array([e.label for e in examples])
        y_pred = np.stack(predictions)
    else:
        known = [np.ones(len(e.sequence), bool) if e.mask is None else e.mask for e in examples]
        y_true = np.concatenate([np.asarray(e.label)[k] for e, k in zip(examples, known, strict=True)])
        y_pred = np.concatenate([p[k] for p, k in zip(predictions, known, strict=True)])
    return metric(task.metric)(y_true, y_pred)
