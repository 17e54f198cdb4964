"""Frozen heads at the per-step floor and seeds trained together (harness/run/frozen_heads.py):
`bench run --seeds N` on a frozen condition stores N records equal to N single-seed runs; the fast
path computes what the general training loop computes; a killed group resumes to the records of an
uninterrupted one; a seed that stops early leaves the stack; thread policy (harness/run/threads.py)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.plugins.specs import LauncherSpec
from plm_bench.results import records
from plm_bench.results.store import Store, folder_for, resume_folder
from plm_bench.run import frozen_heads, threads
from plm_bench.run.driver import attempt, drive, seed_groups
from plm_bench.run.protocol import RunContext, execute, execute_together

STUDY = {"backbone": "onehot", "method": "frozen", "protocol": "study", "limit_eval": 12}
TIMINGS = ("cost", "environment", "finished_at", "artifact", "run_id", "id")


def stored(store: Path) -> dict[int, dict]:
    with sqlite3.connect(store) as db:
        return {seed: json.loads(record) for seed, record in db.execute("SELECT seed, record FROM runs")}


def assert_same_run(ours: dict, theirs: dict, tolerance: float = 1e-5) -> None:
    """Everything a run computes agrees (floats within ``tolerance``); timings and where it ran aside."""
    def same(a: object, b: object, where: str) -> None:
        if isinstance(a, dict):
            assert set(a) == set(b), where
            for key in a:
                same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        elif isinstance(a, float) and not isinstance(b, bool):
            assert math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance), f"{where}: {a} != {b}"
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"

    assert ours["status"] == theirs["status"] == "finished", (ours.get("error"), theirs.get("error"))
    same({k: v for k, v in ours.items() if k not in TIMINGS}, {k: v for k, v in theirs.items() if k not in TIMINGS},
         "record")


def test_bench_run_seeds_stores_the_records_of_single_seed_runs(data_dir, tmp_path):
    """The acceptance command, smaller: --seeds 3 trains the seeds together, each record is that seed's alone."""
    args = ["--backbone", "onehot", "--task", "disorder", "--method", "frozen", "--protocol", "study",
            "--limit-train", "24", "--limit-eval", "12", "--epochs", "2", "--data-dir", str(data_dir)]
    runner = CliRunner()
    together = runner.invoke(main, ["run", *args, "--seeds", "3", "--store", str(tmp_path / "together.sqlite")],
                             catch_exceptions=False)
    assert together.exit_code == 0, together.output
    for seed in (1, 2, 3):
        alone = runner.invoke(main, ["run", *args, "--seed", str(seed), "--store", str(tmp_path / "alone.sqlite")],
                              catch_exceptions=False)
        assert alone.exit_code == 0, alone.output
    grouped, single = stored(tmp_path / "together.sqlite"), stored(tmp_path / "alone.sqlite")
    assert sorted(grouped) == [1, 2, 3]
    for seed in (1, 2, 3):
        assert grouped[seed]["environment"]["trained_together"] == "3 seeds"
        assert "trained_together" not in single[seed]["environment"]
        assert grouped[seed]["environment"]["threads"].startswith("backbone ")
        assert_same_run(grouped[seed], single[seed])
    assert grouped[1]["metrics"] != grouped[2]["metrics"]  # seeds differ: each has its own init, order, dropout


@pytest.mark.parametrize(("task", "settings"), [
    ("disorder", {**STUDY, "limit_train": 16, "epochs": 2}),  # per-residue regression, batches of 8 residues
    ("secondary_structure", {**STUDY, "limit_train": 8, "epochs": 1}),  # per-residue classification
    ("gb1", {"backbone": "onehot", "method": "frozen", "limit_train": 120, "limit_eval": 40, "epochs": 3,
             "grad_clip": 0.5}),  # per-protein, harness protocol (AdamW, early-stop), clipped
])
def test_the_fast_path_computes_what_the_general_loop_computes(data_dir, monkeypatch, task, settings):
    config = RunConfig(task=task, **settings).resolved()
    context = RunContext(data_dir=data_dir, device="cpu")
    ours = execute(config, context)
    monkeypatch.setattr(frozen_heads, "fits", lambda *args: False)
    theirs = execute(config, context)
    assert_same_run(ours, theirs)
    assert ours["history"][-1]["valid_loss"] < ours["history"][0]["valid_loss"] or task != "disorder"


def test_a_seed_that_stops_early_leaves_the_others_training(data_dir):
    settings = {"backbone": "onehot", "method": "frozen", "task": "gb1", "limit_train": 120, "limit_eval": 40,
                "epochs": 8, "patience": 1, "min_delta": 0.05, "checkpoint": "early-stop"}
    configs = [RunConfig(**settings, seed=seed).resolved() for seed in (1, 2, 3)]
    context = RunContext(data_dir=data_dir, device="cpu")
    together = execute_together(configs, context)
    alone = [execute(config, context) for config in configs]
    stops = [record["early_stopping"]["stopped_at_epoch"] for record in alone]
    assert any(stop is not None and stop < 8 for stop in stops)  # what this test is about happens
    for ours, theirs in zip(together, alone, strict=True):
        assert_same_run(ours, theirs)


class Killed(BaseException):
    """A kill at a chosen validation (no handler of a run catches it, as none sees a SIGKILL)."""


class KillAt:
    """Progress whose N-th validation event (over all seeds of the group) kills the run."""

    def __init__(self, kill_at: int | None) -> None:
        from plm_bench.run.progress import Progress

        class Recorder(Progress):
            def validation(inner, *args: object, **kwargs: object) -> None:
                self.count += 1
                if self.count == kill_at:
                    raise Killed
                super().validation(*args, **kwargs)

        self.count, self.progress = 0, Recorder()


def test_a_killed_group_resumes_to_the_records_of_an_uninterrupted_one(data_dir, tmp_path):
    """Killed at seed 2's second validation: seed 1 saved two validations, seeds 2 and 3 one; the
    rerun resumes each from its own state (two stacks) and stores what an uninterrupted group stores."""
    configs = [RunConfig(task="disorder", **STUDY, limit_train=16, epochs=3, seed=seed).resolved()
               for seed in (1, 2, 3)]
    uninterrupted = execute_together(configs, RunContext(data_dir=data_dir, device="cpu"))
    store = tmp_path / "runs.sqlite"

    def context(progress) -> RunContext:
        return RunContext(data_dir=data_dir, device="cpu", progress=progress, artifact_dir=folder_for(store),
                          resume_dir=resume_folder(store))

    with pytest.raises(Killed):
        attempt(configs[0], context(KillAt(5).progress), together=configs[1:])
    saved = sorted(p.name for p in resume_folder(store).iterdir())
    assert len(saved) == 3
    resumed = attempt(configs[0], context(KillAt(None).progress), together=configs[1:])
    records_ = [resumed, *resumed.pop("trained_together_records")]
    assert [r["resumed_from"] for r in records_] == [{"epoch": 2.0, "step": 2}, {"epoch": 1.0, "step": 1},
                                                     {"epoch": 1.0, "step": 1}]
    for ours, theirs in zip(records_, uninterrupted, strict=True):
        assert_same_run({k: v for k, v in ours.items() if k != "resumed_from"}, theirs)


def test_seed_groups_join_only_frozen_runs_on_shared_inputs():
    frozen = [RunConfig(backbone="onehot", task="gb1", method="frozen", seed=s).resolved() for s in (1, 2, 3)]
    other_lr = RunConfig(backbone="onehot", task="gb1", method="frozen", seed=4, lr=1e-2).resolved()
    random_init = [RunConfig(backbone="onehot", task="gb1", method="frozen", init="random", seed=s).resolved()
                   for s in (1, 2)]
    full = [RunConfig(backbone="esm2-8m", task="gb1", method="full", seed=s).resolved() for s in (1, 2)]
    assert seed_groups([*frozen, other_lr, *random_init, *full]) == {frozen[0].hash: tuple(frozen[1:])}


def test_a_group_whose_worker_died_fails_every_seed(tmp_path):
    """The launcher hands back only the first seed's failed record: the others fail alike, all are stored."""
    configs = [RunConfig(backbone="onehot", task="gb1", method="frozen", seed=s).resolved() for s in (1, 2)]

    def dying(configs, execute):
        for config in configs:
            yield records.failed(config, "worker process exited with status -9: Killed", {})

    def execute_(config, together=()):
        raise AssertionError("the launcher never calls it")

    store = Store(tmp_path / "runs.sqlite")
    stored_ = drive(configs, LauncherSpec("dying", dying, "test"), execute_, store)
    assert [r["config"]["seed"] for r in stored_] == [1, 2]
    assert all(r["status"] == "failed" for r in stored_)
    assert "trained together with seed 1" in stored_[1]["error"] and "status -9" in stored_[1]["error"]


def test_threads_follow_the_work_and_an_explicit_setting_overrides(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.for_head() == 1
    assert threads.for_backbone() == threads.owned_cores()
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.for_head() == threads.for_backbone() == 3
    assert "PLM_BENCH_THREADS" in threads.described()["threads"]
    before = torch.get_num_threads()
    with threads.using(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(Exception, match="PLM_BENCH_THREADS='many'"):
        threads.for_head()


def test_local_workers_split_the_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert threads.split_cores(2) == [{0, 1, 2}, {3, 4}]
    assert threads.split_cores(5) == [{0}, {1}, {2}, {3}, {4}]
    assert threads.split_cores(7)[5:] == [{0}, {1}]  # more workers than cores: shared round-robin


def report_cores(config: RunConfig) -> dict:
    """An ``execute`` that reports the cores its worker process keeps to and the threads it would use."""
    return {"config_hash": config.hash, "cores": sorted(os.sched_getaffinity(0)), "threads": threads.for_backbone()}


def test_local_workers_each_keep_to_their_own_cores(monkeypatch):
    from plm_bench_plugins import launchers

    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                    os.environ.get("PYTHONPATH")])))  # unpickles this
    monkeypatch.setattr(launchers, "visible_gpus", lambda: [])
    configs = [RunConfig(backbone="onehot", task="gb1", seed=s) for s in (1, 2)]
    reports = list(launchers.launch_locally(configs, report_cores, workers=2))
    assert all("cores" in r for r in reports), reports
    assert sorted(r["cores"] for r in reports) == sorted(sorted(cores) for cores in threads.split_cores(2))
    assert all(r["threads"] == len(r["cores"]) for r in reports)
