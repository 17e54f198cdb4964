"""The baselines scored beside every result: does the model beat predicting the training mean
(regression) or the training majority class (classification), the same model before training
(the untrained head: what the features give by chance), and, where asked for
(``--shuffled-labels``), the head trained on permuted training labels (what training learns
without the label signal)? The margin is taken over the strongest of them.

A result that does not is no result, however good its correlation looks: on GB1, mean-pooled one-hot
ranks variants (Spearman 0.36) while its squared error barely beats the mean's. The margin is
therefore taken on the metric where a constant predictor is defined (mean squared error for
regression, which a constant's correlation of 0 hides; the primary metric for classification),
and a result clears its baseline when the baseline's value lies outside the result's own 95%
bootstrap interval on that metric, on the model's better side (a difference must exceed the
uncertainty, as the Figure-1 rule of Schmirler et al. asks it to exceed both CIs). The paired
margin over the same resamples is recorded too: it can be certain and still negligible (GB1
one-hot saves 0.024 of an MSE of 1.69, CI [0.021, 0.027], while the baseline sits inside the
result's own interval).
"""

from __future__ import annotations

import numpy as np

from plm_bench.tasks.task import Example, Task


def trivial_predictions(task: Task, train: list[Example], test: list[Example]) -> list[np.ndarray]:
    """The training split's mean (or majority class, as one-hot scores) for every test protein or residue."""
    labels = np.concatenate([np.atleast_1d(np.asarray(e.label, dtype=np.float64))[known(e)] for e in train])
    if task.type == "classification":
        constant = np.eye(len(task.classes))[np.bincount(labels.astype(int), minlength=len(task.classes)).argmax()]
    else:
        constant = np.array(labels.mean())
    if task.level == "protein":
        return [constant.astype(np.float32) for _ in test]
    return [np.broadcast_to(constant, (len(e.sequence), *constant.shape)).astype(np.float32) for e in test]


def known(e: Example) -> np.ndarray:
    if e.mask is not None:
        return np.asarray(e.mask, bool)
    return np.ones(np.atleast_1d(np.asarray(e.label)).shape[0], bool)


def per_protein(task: Task, test: list[Example], predictions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each test protein's summed loss term (squared error, or correct calls) and its scored count."""
    sums, counts = [], []
    for e, p in zip(test, predictions, strict=True):
        mask = known(e)
        y = np.atleast_1d(np.asarray(e.label, dtype=np.float64))[mask]
        rows = np.asarray(p, dtype=np.float64).reshape(1 if task.level == "protein" else len(e.sequence), -1)[mask]
        if task.type == "classification":
            sums.append(float((rows.argmax(-1) == y).sum()))
        else:
            sums.append(float(((rows[:, 0] - y) ** 2).sum()))
        counts.append(float(len(y)))
    return np.array(sums), np.array(counts)


def margin(task: Task, train: list[Example], test: list[Example], predictions: list[np.ndarray], seed: int,
           controls: dict[str, list[np.ndarray]] | None = None, resamples: int = 1000) -> dict:
    """The record's ``baseline`` section: every baseline's value of the compared metric
    (``baselines``: the trivial constant, and the ``controls`` given: test predictions of the
    untrained head, of the head trained on shuffled labels), the model's value with its 95%
    interval, and against the strongest baseline (``trivial`` names it) the margin (positive: the
    model is better) with its paired 95% interval, and whether the model clears it."""
    classification = task.type == "classification"
    named = {"majority class" if classification else "train mean": trivial_predictions(task, train, test),
             **(controls or {})}
    model_sums, counts = per_protein(task, test, predictions)
    sums = {name: per_protein(task, test, values)[0] for name, values in named.items()}
    values = {name: float(total.sum() / counts.sum()) for name, total in sums.items()}
    strongest = (max if classification else min)(values, key=values.__getitem__)
    n = len(test)
    rng = np.random.default_rng(seed)
    draws = np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(resamples)]).astype(float)
    scored = draws @ counts
    model, baseline = draws @ model_sums / scored, draws @ sums[strongest] / scored
    better = (model - baseline) if classification else (baseline - model)
    low, high = np.percentile(better, [2.5, 97.5])
    model_low, model_high = np.percentile(model, [2.5, 97.5])
    model_value, base_value = model_sums.sum() / counts.sum(), values[strongest]
    clears = base_value < model_low if classification else base_value > model_high
    return {"trivial": strongest, "metric": "accuracy" if classification else "mse",
            "model": float(model_value), "model_ci": {"low": float(model_low), "high": float(model_high)},
            "baseline": float(base_value), "baselines": values,
            "margin": float(model_value - base_value if classification else base_value - model_value),
            "margin_ci": {"low": float(low), "high": float(high)}, "clears": bool(clears)}
