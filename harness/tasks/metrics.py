"""Scores from scipy/scikit-learn (the protein-resampling bootstrap CI over them is in
:mod:`plm_bench.results.intervals`).

Residue-level tasks pool all scored residues of all proteins (the study's per-residue Spearman
and Q3, as its per-residue notebooks score them); residues whose label is unknown
(``Example.mask`` False) are dropped before scoring.
A task names a primary metric (the protocol maximizes it) and secondary ones; one metric may
give several values (``recall`` gives ``recall_<class>`` per class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, matthews_corrcoef, mean_squared_error, recall_score

from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.tasks.task import Example, Task


def correlation(name: str, statistic: Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    """A correlation metric from scipy's ``statistic``. Constant values carry no ranking or
    co-variation, so they score 0 (scipy would return NaN, which must never reach a table)."""

    def correlate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if len(y_true) < 2:
            raise BenchError(f"{name} needs at least 2 scored values, got {len(y_true)}")
        if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
            return 0.0
        return float(statistic(y_true, y_pred).statistic)

    return correlate


spearman = correlation("Spearman", spearmanr)
pearson = correlation("Pearson", pearsonr)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction correct; ``y_pred`` holds class scores ``[N, C]`` or class indices ``[N]``."""
    return float(accuracy_score(y_true, classes_of(y_pred)))


def classes_of(y_pred: np.ndarray) -> np.ndarray:
    return y_pred.argmax(axis=-1) if y_pred.ndim == 2 else y_pred


@dataclass(frozen=True)
class Metric:
    """A named score for tasks of ``type``; ``n_classes`` pins the class count (Q3, Q8)."""

    name: str
    type: str
    compute: Callable[[np.ndarray, np.ndarray, tuple[str, ...]], dict[str, float]]
    higher_is_better: bool = True
    n_classes: int | None = None
    description: str = ""


def _single(name: str, fn: Callable[[np.ndarray, np.ndarray], float]):
    return lambda y_true, y_pred, classes: {name: fn(y_true, y_pred)}


def _recall(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    values = recall_score(y_true, classes_of(y_pred), labels=list(range(len(classes))), average=None,
                          zero_division=np.nan)
    return {f"recall_{name}": float(v) for name, v in zip(classes, values, strict=True) if np.isfinite(v)}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("spearman", "regression", _single("spearman", spearman), description="Spearman rank correlation"),
    Metric("pearson", "regression", _single("pearson", pearson), description="Pearson correlation"),
    Metric("mse", "regression", _single("mse", lambda t, p: float(mean_squared_error(t, p))),
           higher_is_better=False, description="mean squared error"),
    Metric("accuracy", "classification", _single("accuracy", accuracy), description="fraction correct"),
    Metric("mcc", "classification",
           _single("mcc", lambda t, p: float(matthews_corrcoef(t, classes_of(p)))),
           description="Matthews correlation (multi-class)"),
    Metric("q3", "classification", _single("q3", accuracy), n_classes=3,
           description="per-residue accuracy over 3 secondary-structure states"),
    Metric("q8", "classification", _single("q8", accuracy), n_classes=8,
           description="per-residue accuracy over 8 secondary-structure states"),
    Metric("recall", "classification", _recall,
           description="recall of each class (recall_<class>; classes absent from the labels are left out)"),
)}


def check(name: str, task: Task) -> None:
    """A definition-time check that ``name`` can score ``task``."""
    if name not in METRICS:
        raise BenchError(f"task {task.name}: unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    spec = METRICS[name]
    if spec.type != task.type:
        raise BenchError(f"task {task.name}: metric {name} scores {spec.type} tasks, not {task.type}")
    if spec.n_classes is not None and len(task.classes) != spec.n_classes:
        raise BenchError(f"task {task.name}: metric {name} needs {spec.n_classes} classes, the task has "
                         f"{len(task.classes)}")
    if name == task.metric and not spec.higher_is_better:
        raise BenchError(f"task {task.name}: the primary metric is maximized; {name} is better lower, make it "
                         "a secondary metric")


def pooled(task: Task, examples: Sequence[Example], predictions: Sequence[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Scored labels and predictions (residue tasks: all proteins' residues whose label is
    known). Non-finite predictions are an error, never a silent NaN score."""
    if len(examples) != len(predictions):
        raise BenchError(f"{len(predictions)} predictions for {len(examples)} examples")
    if task.level == "protein":
        y_true = np.array([e.label for e in examples])
        y_pred = np.stack([np.asarray(p) for p in predictions])
    else:
        known = [np.ones(len(e.sequence), bool) if e.mask is None else np.asarray(e.mask, bool) for e in examples]
        for e, p in zip(examples, predictions, strict=True):
            if len(p) != len(e.sequence):
                raise BenchError(f"{e.id}: {len(p)} per-residue predictions for {len(e.sequence)} residues")
        y_true = np.concatenate([np.asarray(e.label)[k] for e, k in zip(examples, known, strict=True)])
        y_pred = np.concatenate([np.asarray(p)[k] for p, k in zip(predictions, known, strict=True)])
    if len(y_true) == 0:
        raise BenchError(f"task {task.name}: nothing to score (no examples, or every label unknown)")
    if not np.isfinite(y_pred).all():
        raise BenchError(f"task {task.name}: the model predicted NaN or infinite values; lower --lr or check "
                         "the backbone's dtype")
    return y_true, y_pred


CORRELATIONS = ("spearman", "pearson")


def constant_labels(task: Task, split: str, examples: Sequence[Example]) -> str | None:
    """A warning when ``examples`` all carry one label: the task's correlations are undefined there.
    A run refuses such a split when its primary metric is one; :func:`evaluate` leaves undefined
    secondary ones out of the record (never a 0 that would pass for a result)."""
    correlations = [m for m in task.metrics if m in CORRELATIONS]
    if not correlations or not examples:
        return None
    labels = np.concatenate([np.atleast_1d(np.asarray(e.label, dtype=float))[
        slice(None) if e.mask is None else np.asarray(e.mask, bool)] for e in examples])
    if len(labels) == 0 or np.ptp(labels) != 0:
        return None
    return f"every {split} label is {labels[0]:g}: {', '.join(correlations)} undefined there, not stored"


def compute(task: Task, name: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return METRICS[name].compute(y_true, y_pred, task.classes)


def evaluate(task: Task, examples: Sequence[Example], predictions: Sequence[np.ndarray]) -> dict[str, float]:
    """The task's primary and secondary metrics over ``examples``."""
    y_true, y_pred = pooled(task, examples, predictions)
    values: dict[str, float] = {}
    for name in task.metrics:
        if name in CORRELATIONS and np.ptp(y_true) == 0:
            continue  # undefined on constant labels: left out (shown as missing), never stored as 0
        values.update(compute(task, name, y_true, y_pred))
    return values


def score(task: Task, examples: Sequence[Example], predictions: Sequence[np.ndarray]) -> float:
    """The task's primary metric alone (what the protocol maximizes and bootstraps)."""
    y_true, y_pred = pooled(task, examples, predictions)
    return compute(task, task.metric, y_true, y_pred)[task.metric]
