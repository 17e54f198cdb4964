"""Small learnable tasks for the method, head, cache and predict tests, and the helpers they share.

Labels are simple functions of the sequence, so even a tiny random backbone carries what a
head needs, and a working method must lower the validation loss within a few epochs.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.models.backbone import residue_mask
from plm_bench.run import protocol
from plm_bench.run.predict import predict_examples
from plm_bench.run.protocol import RunContext, build, execute, frozen_features
from plm_bench.run.training import labels_for, loss_fn, predict
from plm_bench.tasks.task import Example, Task

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SIZES = {"train": 48, "valid": 16, "test": 16}


def sequences(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(AMINO_ACIDS) for _ in range(rng.randint(8, 24))) for _ in range(n)]


def charge(sequence: str) -> float:
    """Net charge per residue: a protein-level value a mean-pooled head can read."""
    return (sum(sequence.count(a) for a in "KR") - sum(sequence.count(a) for a in "DE")) / len(sequence)


def residue_class(residue: str) -> int:
    return 1 if residue in "KR" else 2 if residue in "DE" else 0


def load_charge(data_dir: Path, **_: object) -> dict[str, list[Example]]:
    rng = random.Random(7)
    return {split: [Example(f"{split}-{i}", s, charge(s)) for i, s in enumerate(sequences(rng, n))]
            for split, n in SIZES.items()}


def load_residue_classes(data_dir: Path, **_: object) -> dict[str, list[Example]]:
    """Per-residue classes (other, basic, acidic); about one residue in ten is unknown (masked)."""
    rng = random.Random(8)
    splits = {}
    for split, n in SIZES.items():
        splits[split] = [Example(f"{split}-{i}", s, np.array([residue_class(a) for a in s]),
                                 mask=np.array([rng.random() > 0.1 for _ in s]))
                         for i, s in enumerate(sequences(rng, n))]
    return splits


CHARGE = Task("toy-charge", "protein", "regression", "spearman", load_charge,
              description="net charge per residue")
RESIDUE_CLASSES = Task("toy-residue", "residue", "classification", "accuracy", load_residue_classes,
                       classes=("other", "basic", "acidic"), description="basic/acidic residues")
TASKS = {"protein": CHARGE, "residue": RESIDUE_CLASSES}


def load_fixed(data_dir: Path, **_: object) -> dict[str, list[Example]]:
    """Equal-length variants of one sequence, labelled by which residues sit at two positions."""
    rng = random.Random(9)
    wild = "".join(rng.choice(AMINO_ACIDS) for _ in range(12))

    def variant(i: int, split: str) -> Example:
        a, b = rng.choice(AMINO_ACIDS), rng.choice(AMINO_ACIDS)
        sequence = wild[:3] + a + wild[4:8] + b + wild[9:]
        return Example(f"{split}-{i}", sequence, float(a in "KR") + 0.5 * float(b in "DE") + 0.1 * rng.random())

    return {split: [variant(i, split) for i in range(n)] for split, n in SIZES.items()}


FIXED = Task("toy-fixed", "protein", "regression", "spearman", load_fixed,
             description="equal-length variants scored by two positions")


def register_tasks(monkeypatch) -> None:
    """Make the synthetic tasks known to ``plugins.get`` for one test."""
    for task in (*TASKS.values(), FIXED):
        monkeypatch.setitem(plugins.catalog().items["task"], task.name, task)


def config(task: Task, backbone_path: Path, backbone: str = "esm2-8m", **fields: object) -> RunConfig:
    """A resolved quick config on a tiny checkpoint (a learning rate fit for a few epochs)."""
    defaults: dict = {"epochs": 4, "lr": 3e-3, "batch_size": 8}
    return RunConfig(backbone=backbone, task=task.name, backbone_path=str(backbone_path),
                     **{**defaults, **fields}).resolved()


def context(tmp_path: Path) -> RunContext:
    return RunContext(data_dir=tmp_path, device="cpu", artifact_dir=tmp_path / "runs.artifacts")


def untrained_predictions(run: RunConfig, examples: list[Example], tmp_path: Path) -> list[np.ndarray]:
    """What the run's model predicts before training (same seed, so the same initial weights)."""
    task = plugins.get("task", run.task)
    backbone, model = build(run, task, torch.device("cpu"))
    features = frozen_features(backbone, {"x": examples}, run, context(tmp_path))["x"] if model.backbone is None \
        else None
    return predict(model, examples, features, run.batch_size)


def loss(task: Task, examples: list[Example], predictions: list[np.ndarray]) -> float:
    """The protocol's training loss over all examples at once (unknown residues excluded)."""
    outputs = [torch.as_tensor(np.asarray(p, dtype=np.float32)) for p in predictions]
    mask = residue_mask([len(e.sequence) for e in examples])
    output = torch.stack(outputs) if task.level == "protein" else torch.nn.utils.rnn.pad_sequence(
        outputs, batch_first=True)
    labels, known = labels_for(task, examples, mask)
    return float(loss_fn(task, output, labels, known))


def keep_model(monkeypatch) -> dict:
    """Hold on to the model a run builds, to inspect it after training."""
    built: dict = {}
    original = protocol.build

    def build(*args, **kwargs):
        built["backbone"], built["model"] = original(*args, **kwargs)
        return built["backbone"], built["model"]

    monkeypatch.setattr(protocol, "build", build)
    return built


def trains(run: RunConfig, tmp_path) -> dict:
    """Run ``run``; assert it lowered the validation loss; return its record."""
    task = plugins.get("task", run.task)
    valid = task.load(tmp_path)["valid"]
    before = loss(task, valid, untrained_predictions(run, valid, tmp_path))
    record = execute(run, context(tmp_path))
    _, trained = predict_examples(record, tmp_path / "runs.sqlite", valid, "cpu")
    after = loss(task, valid, trained)
    assert after < 0.9 * before, f"{run.method}/{run.head}: validation loss {before:.4f} -> {after:.4f}"
    return record
