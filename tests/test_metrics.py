"""Metrics against hand-computed values, masking included, and the protein-resampling CI."""

from __future__ import annotations

import numpy as np
import pytest

from plm_bench.errors import BenchError
from plm_bench.results.intervals import bootstrap_ci
from plm_bench.tasks import metrics
from plm_bench.tasks.task import Example, Task


def task(level: str, type: str, metric: str, secondary: tuple[str, ...] = (), classes: tuple[str, ...] = ()) -> Task:
    return Task(name="t", level=level, type=type, metric=metric, secondary_metrics=secondary, classes=classes,
                load=lambda data_dir: {})


def residue(labels: list, mask: list[bool]) -> Example:
    return Example(id=str(len(labels)), sequence="A" * len(labels), label=np.array(labels), mask=np.array(mask))


def test_protein_spearman_matches_the_rank_formula():
    # ranks differ by d = (0, -1, 1, 0): rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    examples = [Example(str(i), "A", float(y)) for i, y in enumerate([1, 2, 3, 4])]
    predictions = [np.array(p) for p in (1.0, 3.0, 2.0, 4.0)]
    assert metrics.score(task("protein", "regression", "spearman"), examples, predictions) == pytest.approx(0.8)


def test_residue_spearman_pools_scored_residues_and_skips_masked_ones():
    # pooled known residues: y = 1 2 3 4, p = 1 3 2 4 -> 0.8. With the masked (999, -100) pair
    # counted it would be 1 - 6 * 22 / (5 * 24) = -0.1.
    examples = [residue([1, 2, 999], [True, True, False]), residue([3, 4], [True, True])]
    predictions = [np.array([1.0, 3.0, -100.0]), np.array([2.0, 4.0])]
    t = task("residue", "regression", "spearman", ("pearson", "mse"))
    values = metrics.evaluate(t, examples, predictions)
    assert values["spearman"] == pytest.approx(0.8)
    # pearson of (1 2 3 4) vs (1 3 2 4): cov 4 / sqrt(5 * 5) = 0.8; mse (0 + 1 + 1 + 0) / 4
    assert values["pearson"] == pytest.approx(0.8)
    assert values["mse"] == pytest.approx(0.5)
    unmasked = [residue([1, 2, 999], [True] * 3), examples[1]]
    assert metrics.score(t, unmasked, predictions) == pytest.approx(-0.1)


def test_pearson_and_mse_by_hand():
    t = task("protein", "regression", "spearman", ("pearson", "mse"))
    examples = [Example(str(i), "A", float(y)) for i, y in enumerate([1, 2, 3])]
    values = metrics.evaluate(t, examples, [np.array(p) for p in (1.0, 2.0, 4.0)])
    assert values["pearson"] == pytest.approx(9 / np.sqrt(84))  # sum dy*dp = 3, sqrt(2 * 42/9)
    assert values["mse"] == pytest.approx(1 / 3)  # errors 0, 0, 1


def test_q3_with_per_class_recall_ignores_masked_residues():
    classes = ("C", "E", "H")
    scores = np.eye(3)
    examples = [residue([0, 1, 2, 2], [True, True, True, False]), residue([1, 1, 0], [True, True, True])]
    predictions = [scores[[0, 2, 2, 0]], scores[[1, 0, 0]]]  # predicted C H H C | E C C
    values = metrics.evaluate(task("residue", "classification", "q3", ("recall",), classes), examples, predictions)
    # scored: true C E H E E C vs predicted C H H E C C -> 4 of 6 right (4 of 7 with the masked H)
    assert values["q3"] == pytest.approx(4 / 6)
    assert values["recall_C"] == pytest.approx(1.0)
    assert values["recall_E"] == pytest.approx(1 / 3)
    assert values["recall_H"] == pytest.approx(1.0)


def test_q8_needs_eight_classes_and_counts_like_accuracy():
    classes = tuple("GHIEBTSC")
    examples = [residue([0, 1, 2, 3, 4, 5, 6, 7], [True] * 8)]
    predictions = [np.eye(8)[[0, 1, 2, 3, 4, 5, 7, 6]]]  # the last two swapped
    assert metrics.score(task("residue", "classification", "q8", classes=classes), examples, predictions) == 0.75
    with pytest.raises(BenchError, match="q8 needs 8 classes"):
        task("residue", "classification", "q8", classes=("C", "E", "H"))


def test_accuracy_and_mcc_from_class_scores():
    t = task("protein", "classification", "accuracy", ("mcc",), ("no", "yes"))
    examples = [Example(str(i), "A", y) for i, y in enumerate([0, 0, 1, 1])]
    predictions = [np.array(p) for p in ([0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6])]  # 0 1 1 1
    values = metrics.evaluate(t, examples, predictions)
    assert values["accuracy"] == 0.75
    assert values["mcc"] == pytest.approx(2 / np.sqrt(12))  # (TP*TN - FP*FN) / sqrt(3 * 2 * 2 * 1)


def test_constant_predictions_score_zero_and_nan_predictions_are_an_error():
    t = task("protein", "regression", "spearman")
    examples = [Example(str(i), "A", float(i)) for i in range(3)]
    assert metrics.score(t, examples, [np.array(1.0)] * 3) == 0.0
    with pytest.raises(BenchError, match="NaN"):
        metrics.score(t, examples, [np.array(1.0), np.array(np.nan), np.array(2.0)])


def test_metric_names_are_checked_when_a_task_is_defined():
    with pytest.raises(BenchError, match="unknown metric 'auroc'"):
        task("protein", "regression", "auroc")
    with pytest.raises(BenchError, match="scores classification tasks"):
        task("protein", "regression", "accuracy")
    with pytest.raises(BenchError, match="better lower"):
        task("protein", "regression", "mse")


def test_bootstrap_resamples_whole_proteins():
    """Protein A: 100 residues all right; protein B: 1 residue wrong. Resampling proteins gives
    accuracies 1 (AA), 100/101 (AB) or 0 (BB, a quarter of resamples): the 95% interval is
    [0, 1]. Resampling residues instead would give roughly [0.97, 1]."""
    t = task("residue", "classification", "accuracy", classes=("a", "b"))
    examples = [residue([0] * 100, [True] * 100), residue([1], [True])]
    predictions = [np.eye(2)[[0] * 100], np.eye(2)[[0]]]
    low, high = bootstrap_ci(t, examples, predictions, seed=0)
    assert (low, high) == (0.0, 1.0)
