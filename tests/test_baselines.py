"""Every record carries its trivial baseline, hand-checked, and one-hot GB1 is flagged against it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.results import leaderboard as lb
from plm_bench.results.baselines import margin, trivial_predictions
from plm_bench.results.store import Store
from plm_bench.tasks.task import Example, Task

REGRESSION = Task("r", "protein", "regression", "spearman", load=lambda d: {})
CLASSES = Task("c", "protein", "classification", "accuracy", load=lambda d: {}, classes=("a", "b"))
RESIDUES = Task("res", "residue", "regression", "spearman", load=lambda d: {})


def test_regression_margin_is_the_mse_the_model_saves_over_the_train_mean():
    train = [Example(f"t{i}", "MK", float(v)) for i, v in enumerate((1, 2, 3))]  # mean 2
    test = [Example("a", "MK", 1.0), Example("b", "MK", 3.0)]
    assert [float(p) for p in trivial_predictions(REGRESSION, train, test)] == [2.0, 2.0]
    found = margin(REGRESSION, train, test, [np.float32(1.5), np.float32(2.5)], seed=0)
    # model: (0.5² + 0.5²) / 2 = 0.25; mean: (1² + 1²) / 2 = 1
    assert (found["trivial"], found["metric"]) == ("train mean", "mse")
    assert found["model"] == pytest.approx(0.25) and found["baseline"] == pytest.approx(1.0)
    assert found["margin"] == pytest.approx(0.75)
    assert found["margin_ci"]["low"] == pytest.approx(0.75)  # every resample saves 0.75
    assert found["clears"] and found["model_ci"]["high"] < found["baseline"]


def test_the_margin_is_taken_over_the_strongest_baseline():
    train = [Example(f"t{i}", "MK", float(v)) for i, v in enumerate((1, 2, 3))]  # mean 2: MSE 1 on test
    test = [Example("a", "MK", 1.0), Example("b", "MK", 3.0)]
    controls = {"untrained head": [np.float32(0.0), np.float32(0.0)],  # MSE (1 + 9) / 2 = 5
                "shuffled labels": [np.float32(1.5), np.float32(2.5)]}  # MSE 0.25
    found = margin(REGRESSION, train, test, [np.float32(1.0), np.float32(2.0)], seed=0, controls=controls)  # 0.5
    assert found["baselines"] == pytest.approx({"train mean": 1.0, "untrained head": 5.0, "shuffled labels": 0.25})
    assert found["trivial"] == "shuffled labels" and found["baseline"] == pytest.approx(0.25)
    assert found["margin"] == pytest.approx(-0.25) and not found["clears"]


def test_classification_margin_is_accuracy_over_the_majority_class():
    train = [Example("t1", "MK", 0), Example("t2", "MK", 0), Example("t3", "MK", 1)]  # majority: a
    test = [Example("a", "MK", 0), Example("b", "MK", 1), Example("c", "MK", 1)]
    model = [np.array([2.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 3.0])]  # all right
    found = margin(CLASSES, train, test, model, seed=0)
    assert (found["trivial"], found["metric"]) == ("majority class", "accuracy")
    assert found["model"] == pytest.approx(1.0) and found["baseline"] == pytest.approx(1 / 3)


def test_residue_baseline_pools_known_residues_only():
    train = [Example("t", "MKV", np.array([1.0, 3.0, 999.0]), mask=np.array([True, True, False]))]  # mean 2
    test = [Example("a", "MK", np.array([2.0, 4.0]))]
    found = margin(RESIDUES, train, test, [np.array([2.0, 4.0])], seed=0)
    assert found["baseline"] == pytest.approx((0 + 4) / 2) and found["model"] == pytest.approx(0.0)


def test_onehot_on_gb1_does_not_clear_the_train_mean_and_is_flagged(data_dir, tmp_path):
    """Mean-pooled one-hot is amino-acid composition; GB1 varies at 4 positions: its Spearman looks
    like a result, its squared error barely differs from predicting the mean (biotrainer: 1.670 vs 1.689)."""
    store = tmp_path / "s.sqlite"
    result = CliRunner().invoke(main, ["run", "--backbone", "onehot", "--task", "gb1", "--data-dir", str(data_dir),
                                       "--store", str(store), "--seed", "1"])
    assert result.exit_code == 0, result.output
    [record] = Store(store).records()
    assert record["baseline"]["baseline"] == pytest.approx(1.6897, abs=1e-3)  # the train mean's test MSE
    assert record["baseline"]["clears"] is False, record["baseline"]
    versus = record["baseline"]
    assert versus["model_ci"]["low"] < versus["baseline"] < versus["model_ci"]["high"]
    # The default 10 epochs end with validation Spearman still rising (biotrainer saw it in 3 of 3 seeds)
    assert record["early_stopping"]["still_improving"] is True
    assert record["checkpoints"]["best-of-N"]["step"] == len(record["history"])
    board = lb.leaderboard([record])
    cell = next(iter(board.rows.values()))["gb1"]
    assert cell.flags == (lb.BASELINE_FLAG, lb.IMPROVING_FLAG)
    assert any(line.startswith(f"{lb.IMPROVING_FLAG}: ") for line in board.caption)


def test_still_improving_only_when_every_epoch_ran_and_the_last_evaluation_was_best():
    from plm_bench.run.protocol import still_improving
    from plm_bench.run.training import Checkpoint, Outcome

    def outcome(valids: list[float], stopped: float | None = None, **extra) -> Outcome:
        history = [{"epoch": float(i), "step": i, "valid": v, **extra} for i, v in enumerate(valids, 1)]
        best = max(history, key=lambda h: h["valid"])
        checkpoint = Checkpoint(best["epoch"], best["step"], best["valid"], 0.0, 0.0, {})
        return Outcome(history, checkpoint, checkpoint, stopped, float(len(valids)), 1, [], 0.0, 0, 0)

    assert still_improving(outcome([0.1, 0.2, 0.3]))
    assert not still_improving(outcome([0.1, 0.3, 0.2]))  # peaked before the end
    assert not still_improving(outcome([0.1, 0.2, 0.3], stopped=3.0))  # patience ended it
    assert not still_improving(outcome([0.1, 0.2], strength=1.0))  # a probe's strengths are no trajectory


@pytest.mark.parametrize("level", ["protein", "residue"])
def test_untrained_and_shuffled_label_heads_are_baselines_the_model_beats(level, tmp_path, monkeypatch):
    """Labels that are a function of the sequence: the trained head beats the untrained one (scored by hand
    from the same seed's initial weights) and the one trained on permuted labels, which learns no signal."""
    from synthetic_tasks import TASKS, context, register_tasks, untrained_predictions

    from plm_bench.config import RunConfig
    from plm_bench.run.protocol import execute

    register_tasks(monkeypatch)
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    task = TASKS[level]
    run = RunConfig(backbone="onehot", task=task.name, epochs=40, lr=1e-2, batch_size=8,
                    shuffled_labels=True).resolved()
    record = execute(run, context(tmp_path))
    found = record["baseline"]
    constant = "train mean" if level == "protein" else "majority class"
    assert set(found["baselines"]) == {constant, "untrained head", "shuffled labels"}
    test = task.load(tmp_path)["test"]
    untrained = untrained_predictions(run, test, tmp_path)
    if level == "protein":
        by_hand = np.mean([(float(p) - e.label) ** 2 for p, e in zip(untrained, test, strict=True)])
    else:
        calls = np.concatenate([(p.argmax(-1) == e.label)[e.mask] for p, e in zip(untrained, test, strict=True)])
        by_hand = calls.mean()
    assert found["baselines"]["untrained head"] == pytest.approx(by_hand, rel=1e-5)
    strongest = (max if level == "residue" else min)(found["baselines"].values())
    assert found["baseline"] == strongest and found["clears"], found
    # permuted labels teach the head the label distribution at best: the majority class, the mean
    shuffled, prior, model = found["baselines"]["shuffled labels"], found["baselines"][constant], found["model"]
    if level == "residue":
        assert shuffled <= prior + 0.05 and prior < model, found["baselines"]
    else:
        assert shuffled >= 0.9 * prior and prior > 2 * model, found["baselines"]


def test_the_shuffled_label_head_never_resumes_from_the_runs_saved_state(tmp_path, monkeypatch):
    """Both trainings share the run's config hash; only the run's own may save and resume state."""
    from dataclasses import replace

    from synthetic_tasks import CHARGE, context, register_tasks

    from plm_bench.config import RunConfig
    from plm_bench.run.protocol import execute

    register_tasks(monkeypatch)
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    run = RunConfig(backbone="onehot", task=CHARGE.name, epochs=5, shuffled_labels=True).resolved()
    plain = execute(run, context(tmp_path))["baseline"]
    saving = execute(run, replace(context(tmp_path), resume_dir=tmp_path / "resume"))["baseline"]
    assert saving == plain
