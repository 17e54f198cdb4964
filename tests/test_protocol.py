"""The run protocol: determinism, early stopping vs best-of-N, bootstrap CI, OOM backoff,
and a store that survives a killed run."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.results.intervals import bootstrap_ci
from plm_bench.run import frozen_heads, training
from plm_bench.run.protocol import RunContext, execute
from plm_bench.tasks.task import Example, Task

HYDROPHOBIC = set("AILMFVW")


def hydrophobic_splits(data_dir) -> dict:
    """Random sequences labelled with their hydrophobic fraction: learnable from one-hot."""
    rng = random.Random(7)

    def example(i: int) -> Example:
        sequence = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(15, 40)))
        return Example(f"p{i}", sequence, sum(aa in HYDROPHOBIC for aa in sequence) / len(sequence))

    examples = [example(i) for i in range(320)]
    return {"train": examples[:200], "valid": examples[200:260], "test": examples[260:]}


@pytest.fixture
def toy_task(monkeypatch) -> str:
    task = Task(name="toy-hydrophobic", level="protein", type="regression", metric="spearman",
                load=hydrophobic_splits)
    monkeypatch.setitem(plugins.catalog().items["task"], task.name, task)
    return task.name


def run(task: str, tmp_path, **overrides) -> dict:
    config = replace(RunConfig(backbone="onehot", task=task, epochs=3, batch_size=8), **overrides).resolved()
    return execute(config, RunContext(data_dir=tmp_path, device="cpu"))


def test_same_seed_same_metrics_different_seed_different(toy_task, tmp_path):
    first, again = run(toy_task, tmp_path, seed=3), run(toy_task, tmp_path, seed=3)
    assert first["metrics"] == again["metrics"]
    assert first["history"] == again["history"]
    assert run(toy_task, tmp_path, seed=4)["metrics"] != first["metrics"]


def test_record_carries_cost_checkpoints_and_ci(toy_task, tmp_path):
    record = run(toy_task, tmp_path, val_per_epoch=2, lr=0.01)
    assert [h["epoch"] for h in record["history"]] == [0.48, 1.0, 1.48, 2.0, 2.48, 3.0]  # 25 batches
    cost = record["cost"]
    assert cost["train_residues_per_second"] > cost["train_samples_per_second"] > 0
    assert cost["peak_memory"]["kind"] == "process_rss" and cost["peak_memory"]["rss_bytes"] > 2**20
    assert 0 < cost["time_to_best_seconds"] <= cost["train_seconds"] < cost["total_seconds"]
    low, high = record["test_ci"]["low"], record["test_ci"]["high"]
    assert low < record["metrics"]["test"]["spearman"] < high
    assert record["checkpoints"]["best-of-N"]["valid"] == max(h["valid"] for h in record["history"])
    assert record["metrics"]["test"]["spearman"] > 0.5  # the toy task is learnable


def plateau_run(tmp_path, toy_task, checkpoint: str, scores: list[float], losses: list[float] | None = None,
                **settings) -> training.Outcome:
    """Training whose validations return the scripted ``scores`` (and ``losses``)."""
    settings = {"patience": 2, "min_delta": 0.01, **settings}
    config = RunConfig(backbone="onehot", task=toy_task, epochs=len(scores), checkpoint=checkpoint, batch_size=200,
                       **settings).resolved()
    splits = hydrophobic_splits(None)
    model = training.Model(None, plugins.get("head", "mlp-protein").build(21, 1, "protein"))
    features = {"train": [torch.rand(len(e.sequence), 21) for e in splits["train"]]}
    validate = iter(zip(scores, losses or [1.0] * len(scores), strict=True)).__next__
    return training.train(model, plugins.get("task", toy_task), splits, features, config,
                          RunContext(data_dir=tmp_path, device="cpu"), validate)


def test_early_stopping_fires_on_a_plateau_and_records_epochs_saved(tmp_path, toy_task):
    scores = [0.1, 0.5, 0.505, 0.49, 0.7, 0.2]  # 0.505 is no improvement under min_delta 0.01
    outcome = plateau_run(tmp_path, toy_task, "early-stop", scores)
    assert outcome.stopped_at_epoch == 4 and outcome.epochs_run == 4
    assert outcome.early_stop.epoch == 3 and outcome.early_stop.valid == 0.505  # best seen before stopping
    full = plateau_run(tmp_path, toy_task, "best-of-N", scores)
    assert full.stopped_at_epoch == 4 and full.epochs_run == 6
    assert full.early_stop.valid == 0.505 and full.best.valid == 0.7 and full.best.epoch == 5


def test_the_study_checkpoint_rule_picks_the_lowest_validation_loss(tmp_path, toy_task):
    scores = [0.1, 0.5, 0.3, 0.9, 0.2, 0.4]
    losses = [0.9, 0.6, 0.35, 0.5, 0.34, 0.8]  # the best metric (0.9, epoch 4) is not the lowest loss
    outcome = plateau_run(tmp_path, toy_task, "best-of-N", scores, losses, select_by="valid-loss", min_delta=0.0)
    assert (outcome.best.epoch, outcome.best.valid_loss, outcome.best.valid) == (5, 0.34, 0.2)
    # patience counts validations without a lower loss: 0.5 after 0.35 is one, 0.8 after 0.34 another
    assert outcome.stopped_at_epoch is None
    by_metric = plateau_run(tmp_path, toy_task, "best-of-N", scores, losses, min_delta=0.0)
    assert (by_metric.best.epoch, by_metric.best.valid) == (4, 0.9)
    study = RunConfig(backbone="onehot", task="gb1", protocol="study").resolved()
    assert (study.select_by, study.checkpoint) == ("valid-loss", "best-of-N")


def test_early_stop_record_reports_the_gap(toy_task, tmp_path):
    record = run(toy_task, tmp_path, epochs=6, patience=1, min_delta=0.5, checkpoint="best-of-N")
    stopping = record["early_stopping"]
    assert stopping["stopped_at_epoch"] == 2 and stopping["epochs_run"] == 6
    assert set(record["checkpoints"]) == {"early-stop", "best-of-N"}
    assert record["metrics"]["test"]["spearman"] == record["checkpoints"]["best-of-N"]["test"]
    stopped = run(toy_task, tmp_path, epochs=6, patience=1, min_delta=0.5)
    assert stopped["early_stopping"]["epochs_saved"] == 4
    assert set(stopped["checkpoints"]) == {"early-stop"}


def test_bootstrap_ci_equals_hand_computation(toy_task):
    task = plugins.get("task", toy_task)
    examples = hydrophobic_splits(None)["test"][:6]
    predictions = [np.float32(e.label + 0.1 * ((-1) ** i)) for i, e in enumerate(examples)]
    low, high = bootstrap_ci(task, examples, predictions, seed=11, resamples=5, level=0.5)
    rng = np.random.default_rng(11)
    by_hand = []
    for _ in range(5):
        picks = rng.integers(0, 6, size=6)
        y, p = [examples[i].label for i in picks], [predictions[i] for i in picks]
        by_hand.append(0.0 if len(set(p)) == 1 or len(set(y)) == 1 else spearmanr(y, p).statistic)
    assert (low, high) == pytest.approx((np.percentile(by_hand, 25), np.percentile(by_hand, 75)))


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_result(toy_task, tmp_path, monkeypatch):
    reference = run(toy_task, tmp_path, seed=5)
    forward = training.Model.forward

    def tight_memory(self, batch, features):
        """A GPU on which training fits two sequences at a time."""
        if self.training and len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(self, batch, features)

    monkeypatch.setattr(training.Model, "forward", tight_memory)
    monkeypatch.setattr(frozen_heads, "fits", lambda *args: False)  # the general loop's backoff (frozen heads: no OOM)
    backed_off = run(toy_task, tmp_path, seed=5)
    assert backed_off["cost"]["micro_batch"] == 2
    assert [b["micro_batch"] for b in backed_off["cost"]["oom_backoffs"]] == [4, 2]
    # same effective batch: the same training up to float rounding
    assert backed_off["metrics"]["test"]["spearman"] == pytest.approx(reference["metrics"]["test"]["spearman"],
                                                                      abs=1e-3)


def test_out_of_memory_at_micro_batch_one_names_the_length(toy_task, tmp_path, monkeypatch):
    def no_memory(self, batch, features):
        """A GPU on which no training step fits (prediction, e.g. the untrained-head baseline, still does)."""
        if self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(self, batch, features)

    forward = training.Model.forward

    monkeypatch.setattr(training.Model, "forward", no_memory)
    monkeypatch.setattr(frozen_heads, "fits", lambda *args: False)
    with pytest.raises(BenchError, match=r"micro-batch 1 \(longest sequence \d+ residues\)"):
        run(toy_task, tmp_path)


def test_train_fraction_subsets_are_nested_deterministic_and_not_smoke():
    from plm_bench.run.protocol import nested_subset
    from plm_bench.tasks.task import Example

    examples = [Example(f"e{i}", "MKV", float(i)) for i in range(101)]
    sizes = {f: nested_subset(examples, f, seed=0) for f in (0.1, 0.25, 0.5, 1.0)}
    assert [len(v) for v in sizes.values()] == [11, 26, 51, 101]
    ids = {f: {e.id for e in v} for f, v in sizes.items()}
    assert ids[0.1] <= ids[0.25] <= ids[0.5] <= ids[1.0]
    assert nested_subset(examples, 0.25, seed=0) == sizes[0.25]  # deterministic
    assert {e.id for e in nested_subset(examples, 0.25, seed=1)} != ids[0.25]  # the seed draws another curve
    assert [int(e.id[1:]) for e in sizes[0.5]] == sorted(int(e.id[1:]) for e in sizes[0.5])  # file order
    assert not RunConfig(backbone="onehot", task="gb1", train_fraction=0.1).is_smoke
