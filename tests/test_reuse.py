"""The per-seed fixed costs cut: a file is hashed once per run while unchanged (never trusted
from a stamp across runs: tests/test_robustness_inputs.py), a second seed does not parse the
task's files again, and the bootstrap CI scores all its
resamples at once, equal to scoring them one by one."""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest
from robustness import TASK_TOML

from plm_bench.results import intervals
from plm_bench.results.intervals import bootstrap_ci
from plm_bench.tasks import sources
from plm_bench.tasks.loading import custom_task as task_from_file
from plm_bench.tasks.metrics import score
from plm_bench.tasks.sources import Source, status
from plm_bench.tasks.task import Example, Task

CSV = "id,sequence,label,split\n" + "".join(f"p{i},{'ACDEFGHIKL'[i % 10] * 12},{i},{s}\n"
                                            for i, s in enumerate(["train"] * 6 + ["valid"] * 3 + ["test"] * 3))
TOML = TASK_TOML


def age(path, seconds: float) -> None:
    """Set the file's mtime ``seconds`` in the past (older than the racy window)."""
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(when, when))


def counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def test_a_verified_file_is_hashed_once_until_its_size_or_mtime_changes(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(b"residues" * 1000)
    age(path, 60)
    source = Source(file="data.bin", sha256=hashlib.sha256(b"residues" * 1000).hexdigest())
    hashed = counting(monkeypatch, sources, "sha256_of")
    assert [status(path, source) for _ in range(3)] == ["present"] * 3
    assert len(hashed) == 1  # remembered for the rest of the run
    path.write_bytes(b"residuez" * 1000)  # same size, new content
    age(path, 30)
    assert status(path, source) == "corrupt" and len(hashed) == 2
    path.write_bytes(b"residues" * 1000)  # just written: within the racy window, never stamped
    assert [status(path, source) for _ in range(2)] == ["present"] * 2 and len(hashed) == 4


def test_a_task_is_parsed_once_per_process_while_its_files_are_unchanged(tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text(CSV)
    (tmp_path / "my_task.toml").write_text(TOML)
    for written in ("data.csv", "my_task.toml"):  # files of the task's folder, all older than the racy window
        age(tmp_path / written, 60)
    task = task_from_file(tmp_path / "my_task.toml")
    from plm_bench.tasks import task as task_module

    read = counting(monkeypatch, task_module, "read_bytes")
    first, second = task.load(tmp_path), task.load(tmp_path)
    assert len(read) == 1
    assert {k: [e.id for e in v] for k, v in first.items()} == {k: [e.id for e in v] for k, v in second.items()}
    assert first["train"] is not second["train"]  # callers may slice or reorder their lists freely
    (tmp_path / "data.csv").write_text(CSV.replace("p0,", "q0,"))
    age(tmp_path / "data.csv", 30)
    assert task.load(tmp_path)["train"][0].id == "q0" and len(read) == 2


def residue_example(i: int, rng, classes: int = 0) -> Example:
    n = int(rng.integers(2, 9))
    label = rng.integers(0, classes, n) if classes else np.round(rng.normal(size=n), 1)  # rounded: ties
    return Example(f"r{i}", "A" * n, label, mask=rng.random(n) > 0.2)


def protein_task(metric: str, kind: str = "regression", classes: tuple[str, ...] = ()) -> Task:
    return Task(name="t", level="protein", type=kind, metric=metric, classes=classes, load=lambda *_: {})


@pytest.mark.parametrize("case", ["protein spearman", "protein pearson", "protein accuracy", "residue spearman",
                                  "residue pearson", "residue q3"])
def test_vectorized_bootstrap_equals_scoring_each_resample(case):
    """The weighted scores are the metric of each resample's pooled multiset, as scipy and
    scikit-learn compute it one resample at a time (ties, unknown labels and constant resamples
    included)."""
    rng = np.random.default_rng(7)
    level, metric = case.split()
    if level == "protein":
        kind = "classification" if metric == "accuracy" else "regression"
        task = protein_task(metric, kind, ("a", "b", "c") if kind == "classification" else ())
        examples = [Example(f"p{i}", "A", int(rng.integers(0, 3)) if kind == "classification"
                            else float(np.round(rng.normal(), 1))) for i in range(9)]
        predictions = [rng.random(3) if kind == "classification" else np.float32(np.round(rng.normal(), 1))
                       for _ in examples]
    else:
        classes = 3 if metric == "q3" else 0
        task = Task(name="r", level="residue", type="classification" if classes else "regression", metric=metric,
                    classes=("H", "E", "C") if classes else (), load=lambda *_: {})
        examples = [residue_example(i, rng, classes) for i in range(7)]
        predictions = [rng.random((len(e.sequence), 3)) if classes else np.round(rng.normal(size=len(e.sequence)), 1)
                       for e in examples]
    picks = np.stack([np.random.default_rng(s).integers(0, len(examples), len(examples)) for s in range(60)])
    picks[0] = 0  # one protein drawn n times: constant labels and predictions score 0 for correlations
    expected = [score(task, [examples[i] for i in row], [predictions[i] for i in row]) for row in picks]
    np.testing.assert_allclose(intervals.weighted_scores(task, examples, predictions, picks), expected,
                               rtol=1e-9, atol=1e-12)


def test_bootstrap_ci_takes_the_percentiles_of_the_weighted_scores(monkeypatch):
    """The CI is the same with the vectorized scores as with the per-resample loop."""
    rng = np.random.default_rng(3)
    task = protein_task("spearman")
    examples = [Example(f"p{i}", "A", float(rng.normal())) for i in range(30)]
    predictions = [np.float32(e.label + rng.normal()) for e in examples]
    fast = bootstrap_ci(task, examples, predictions, seed=4, resamples=200)
    monkeypatch.setattr(intervals, "WEIGHTED", ())  # every resample scored on its own
    assert bootstrap_ci(task, examples, predictions, seed=4, resamples=200) == pytest.approx(fast, rel=1e-9)
