"""Resuming an interrupted run from the training state it saved after each validation: the rerun's
record equals an uninterrupted run's (timings and ``resumed_from`` aside) at the end of an epoch,
mid-epoch, after an early stop and in fine-tuning with a linear schedule; an unusable state file is
reported by name, deleted, and the run starts over; the store deletes the state once it holds the
finished record; a SLURM task that is preempted is requeued onto the same config and resumes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from plm_bench.config import RunConfig
from plm_bench.results import records
from plm_bench.results.store import Store, folder_for, resume_file, resume_folder
from plm_bench.run import resume
from plm_bench.run.driver import attempt
from plm_bench.run.progress import Progress, describe
from plm_bench.run.protocol import RunContext, execute
from plm_bench_plugins.slurm_launcher import Requeueable, launch_on_slurm

TESTS = Path(__file__).resolve().parent
QUICK = {"backbone": "onehot", "task": "gb1", "epochs": 4, "limit_train": 200, "limit_eval": 100}
NOT_COMPUTED = ("finished_at", "environment", "provenance", "resumed_from", "cost", "run_id")  # timings, where, code


class Killed(BaseException):
    """A kill at a chosen point: no exception handler of a run catches it, as none sees a SIGKILL."""


class Recorder(Progress):
    """Keeps the events of the run it follows; kills it when validation ``kill_at`` comes (before
    that validation's state is saved: the work since the previous one is lost, as in a real kill)
    or, with ``kill_testing``, once training is over."""

    def __init__(self, kill_at: int | None = None, kill_testing: bool = False) -> None:
        super().__init__()
        self.kill_at, self.kill_testing = kill_at, kill_testing
        self.events: list[dict] = []

    def emit(self, run: dict, event: str, **fields: object) -> None:
        self.events.append({"event": event, **run, "epoch": None, **fields})

    def validation(self, *args: object, **kwargs: object) -> None:
        if len(self.of("validation")) + 1 == self.kill_at:
            raise Killed
        super().validation(*args, **kwargs)

    def testing(self, examples: int) -> None:
        if self.kill_testing:
            raise Killed
        super().testing(examples)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


def computed(record: dict, artifacts: Path) -> dict:
    """What a run computes: its record but timings, timestamps, environment and ``resumed_from``
    (of ``cost`` the micro-batch, OOM backoffs and dtypes stay), with the bytes of the trained
    weights it saved in ``artifacts`` in place of the file's name and sha256 (safetensors writes
    the file's metadata in no fixed order, so equal weights need not make equal files)."""
    kept = {k: v for k, v in record.items() if k not in NOT_COMPUTED}
    kept["cost"] = {k: record["cost"][k] for k in ("micro_batch", "oom_backoffs", "dtype", "backbone_dtype")}
    tensors = load_file(artifacts / kept.pop("artifact")["file"])
    kept["weights"] = {name: (t.dtype, t.shape, t.numpy().tobytes()) for name, t in tensors.items()}
    return kept


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Callable[[RunConfig], dict]:
    """The record of a config run without interruption and without any state saved (each
    computed once for the module); its weights saved too, so records compare them by sha256."""
    folder, done = tmp_path_factory.mktemp("uninterrupted"), {}

    def record(config: RunConfig) -> dict:
        if config.hash not in done:
            done[config.hash] = execute(config, RunContext(data_dir=data_dir, device="cpu", artifact_dir=folder))
        return done[config.hash]

    record.folder = folder
    return record


def attempt_run(config: RunConfig, data_dir: Path, store: Path, progress: Progress | None = None) -> dict:
    """One attempt of ``config`` as `bench run` makes it (weights and state saved beside ``store``)."""
    context = RunContext(data_dir=data_dir, device="cpu", progress=progress or Recorder(),
                         artifact_dir=folder_for(store), resume_dir=resume_folder(store))
    return attempt(config, context)


def killed(config: RunConfig, data_dir: Path, store: Path, **kill: object) -> Path:
    """Run ``config`` until the kill; return the state file it left."""
    with pytest.raises(Killed):
        attempt_run(config, data_dir, store, Recorder(**kill))
    state = resume_file(resume_folder(store), config.hash)
    assert state.is_file()
    return state


CASES = {  # (settings, kill at validation N)
    "end-of-epoch": ({**QUICK}, 3),  # resumes from validation 2, epoch 2.00
    "mid-epoch": ({**QUICK, "val_per_epoch": 2}, 4),  # from validation 3, half-way through epoch 2
    # after patience ran out, training on for best-of-N: the early-stop checkpoint is no longer the best
    "after-early-stop": ({**QUICK, "epochs": 6, "patience": 1, "min_delta": 0.03, "checkpoint": "best-of-N"}, 6),
    # fine-tuning: adapter and head weights, AdamW moments, the linear schedule's step, dropout's RNG
    "lora-linear": ({"backbone": "esm2-8m", "task": "gb1", "method": "lora", "schedule": "linear", "epochs": 2,
                     "val_per_epoch": 2, "limit_train": 48, "limit_eval": 24}, 3),
    "full-linear": ({"backbone": "esm2-8m", "task": "gb1", "method": "full", "schedule": "linear", "epochs": 2,
                     "val_per_epoch": 2, "limit_train": 48, "limit_eval": 24}, 3),
    # fp16 loss scaling: the scale and skipped steps so far go on where they were
    "full-fp16-mixed": ({"backbone": "esm2-8m", "task": "gb1", "method": "full", "precision": "fp16-mixed",
                         "epochs": 2, "val_per_epoch": 2, "limit_train": 48, "limit_eval": 24}, 3),
}


@pytest.mark.parametrize("case", CASES)
def test_an_interrupted_run_resumes_to_the_record_of_an_uninterrupted_one(reference, case, data_dir, tmp_path, request):
    settings, kill_at = CASES[case]
    if settings["backbone"] == "esm2-8m":
        settings = {**settings, "backbone_path": str(request.getfixturevalue("tiny_esm"))}
    config = RunConfig(**settings).resolved()
    uninterrupted = reference(config)
    if case == "after-early-stop":  # what this case is about must happen
        stopped = uninterrupted["early_stopping"]["stopped_at_epoch"]
        assert stopped is not None and stopped < uninterrupted["history"][kill_at - 2]["epoch"]
        assert uninterrupted["checkpoints"]["early-stop"] != uninterrupted["checkpoints"]["best-of-N"]
    store = tmp_path / "runs.sqlite"
    killed(config, data_dir, store, kill_at=kill_at)

    progress = Recorder()
    record = attempt_run(config, data_dir, store, progress)

    assert record["status"] == "finished", record.get("error")
    resumed_at = uninterrupted["history"][kill_at - 2]  # the last validation saved before the kill
    assert record["resumed_from"] == {"epoch": resumed_at["epoch"], "step": kill_at - 1}
    [event] = progress.of("resuming")
    assert describe(event).endswith(f"resuming from epoch {resumed_at['epoch']:.2f}/{config.epochs}, validation "
                                    f"{kill_at - 1} (the training state an interrupted attempt saved)")
    # it went on from there: only the validations after it ran again
    assert [e["step"] for e in progress.of("validation")] == list(range(kill_at, len(uninterrupted["history"]) + 1))
    # metrics, history, checkpoints, test CI, parameters, the trained weights, ...
    assert computed(record, folder_for(store)) == computed(uninterrupted, reference.folder)
    assert "resumed_from" not in uninterrupted and set(record) - set(uninterrupted) == {"resumed_from"}


def test_a_run_killed_while_testing_goes_on_without_training_again(reference, data_dir, tmp_path):
    """Early stop halted training, then the run died: the rerun resumes at the end of training."""
    settings = {**QUICK, "epochs": 8, "patience": 1, "min_delta": 0.03, "checkpoint": "early-stop"}
    config = RunConfig(**settings).resolved()
    uninterrupted = reference(config)
    assert uninterrupted["early_stopping"]["stopped_at_epoch"] < config.epochs  # it did stop early
    store = tmp_path / "runs.sqlite"
    killed(config, data_dir, store, kill_testing=True)
    progress = Recorder()
    record = attempt_run(config, data_dir, store, progress)
    assert progress.of("validation") == [] and len(progress.of("resuming")) == 1
    assert record["resumed_from"]["step"] == len(uninterrupted["history"])
    assert computed(record, folder_for(store)) == computed(uninterrupted, reference.folder)


def test_a_metric_that_gives_numpy_floats_still_resumes(reference, data_dir, tmp_path, monkeypatch):
    """A plugin's metric may return ``np.float64``; the state keeps scores as JSON, which
    ``torch.load(weights_only=True)`` reads (a pickled numpy scalar it would refuse)."""
    from plm_bench.run import protocol

    score = protocol.score
    monkeypatch.setattr(protocol, "score", lambda *args: np.float64(score(*args)))
    config = RunConfig(**QUICK).resolved()
    store = tmp_path / "runs.sqlite"
    killed(config, data_dir, store, kill_at=3)
    progress = Recorder()
    record = attempt_run(config, data_dir, store, progress)
    assert progress.of("resume_discarded") == [] and record["resumed_from"]["step"] == 2
    assert computed(record, folder_for(store)) == computed(reference(config), reference.folder)


def test_the_store_deletes_the_state_once_it_holds_the_finished_record(data_dir, tmp_path):
    """A failed record keeps it (its retry resumes); the finished one ends it."""
    config = RunConfig(**QUICK).resolved()
    store = tmp_path / "runs.sqlite"
    state = killed(config, data_dir, store, kill_at=2)
    results = Store(store)
    results.add(records.failed(config, "the node died", {}))
    assert state.is_file()
    record = attempt_run(config, data_dir, store)
    assert record["resumed_from"] == {"epoch": 1.0, "step": 1}
    assert state.is_file()  # the record is built, not yet stored: a kill now must not lose the run
    results.add(record)
    assert not state.exists() and list(resume_folder(store).iterdir()) == []


def truncated(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path, other: Path) -> None:
    path.write_bytes(b"not a training state\n")


def another_runs(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


@pytest.mark.parametrize(("damage", "problem"), [
    (truncated, r"not a readable training state \(\w+Error: .*\)"),
    (garbage, r"not a readable training state \(\w+Error: .*\)"),
    (another_runs, r"it belongs to config [0-9a-f]{16}, not [0-9a-f]{16}"),
])
def test_an_unusable_state_file_is_named_deleted_and_the_run_starts_over(reference, damage, problem, data_dir,
                                                                         tmp_path):
    config = RunConfig(**QUICK).resolved()
    store = tmp_path / "runs.sqlite"
    state = killed(config, data_dir, store, kill_at=3)
    other = killed(replace(config, seed=2), data_dir, tmp_path / "other.sqlite", kill_at=2)
    damage(state, other)
    progress = Recorder()
    record = attempt_run(config, data_dir, store, progress)
    assert record["status"] == "finished", record.get("error")
    [event] = progress.of("resume_discarded")
    assert event["file"] == str(state)
    line = describe(event)
    assert line.startswith(f"onehot gb1 frozen mlp-protein seed 1: discarded the saved training state {state} (")
    assert line.endswith("); starting over") and "\n" not in line
    assert re.fullmatch(problem, event["problem"])
    assert progress.of("resuming") == [] and "resumed_from" not in record
    # started over: the same run
    assert computed(record, folder_for(store)) == computed(reference(config), reference.folder)


def test_a_state_that_does_not_fit_the_rebuilt_model_is_discarded(reference, data_dir, tmp_path):
    """The plugins changed between the attempts (here: a head weight renamed in the file)."""
    config = RunConfig(**QUICK).resolved()
    store = tmp_path / "runs.sqlite"
    state = killed(config, data_dir, store, kill_at=2)
    saved = torch.load(state, weights_only=True)
    name = next(iter(saved["weights"]))
    saved["weights"]["renamed." + name] = saved["weights"].pop(name)
    torch.save(saved, state)
    progress = Recorder()
    record = attempt_run(config, data_dir, store, progress)
    assert progress.of("resume_discarded")[0]["problem"] == (
        "its weights do not fit the rebuilt model (the plugins changed since it was saved)")
    assert computed(record, folder_for(store)) == computed(reference(config), reference.folder)


def test_a_sigkilled_bench_run_resumes_on_the_same_command(reference, data_dir, tmp_path):
    """A real kill (SIGKILL on a progress line, mid-training), then the same `bench run`."""
    store = tmp_path / "runs.sqlite"
    command = [sys.executable, "-c", "from plm_bench.cli import main; main()", "run", "--backbone", "onehot",
               "--task", "gb1", "--data-dir", str(data_dir), "--epochs", "12", "--limit-train", "200",
               "--limit-eval", "100", "--seed", "1", "--store", str(store)]
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in victim.stdout:
        if "epoch 2.00/12" in line:
            break
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    config = RunConfig(**{**QUICK, "epochs": 12}).resolved()
    state = resume_file(resume_folder(store), config.hash)
    with sqlite3.connect(store) as db:  # the kill left the store consistent, with no partial record
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert state.is_file() and Store(store).records() == [] and Store(store).records("failed") == []

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "onehot gb1 frozen mlp-protein seed 1: resuming from epoch " in rerun.stderr
    [record] = Store(store).records()
    assert record["config_hash"] == config.hash and record["resumed_from"]["step"] >= 1
    assert computed(record, folder_for(store)) == computed(reference(config), reference.folder)
    assert not state.exists()


def test_the_slurm_wrapper_resubmits_the_same_config(data_dir):
    config = RunConfig(**QUICK).resolved()
    wrapped = Requeueable(echo)
    resubmission = wrapped.checkpoint(config)
    assert resubmission.function is wrapped and resubmission.args == (config,) and resubmission.kwargs == {}
    assert resubmission.result() == {"config_hash": config.hash}  # it calls execute on that config again


def echo(config: RunConfig) -> dict:
    return {"config_hash": config.hash}


def preempted_once(config: RunConfig, context: RunContext, marker: Path) -> dict:
    """``attempt`` in a submitit task whose first attempt is preempted right after its second save:
    SIGUSR2, what SLURM sends before preempting or timing out a task, and what submitit handles
    by calling the task's ``checkpoint`` and requeueing it."""
    if not marker.exists():
        marker.touch()
        save, saved = resume.save, []

        def save_then_preempt(*args: object, **kwargs: object) -> Path:
            saved.append(save(*args, **kwargs))
            if len(saved) == 2:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(30)  # submitit's handler exits the task from here
            return saved[-1]

        resume.save = save_then_preempt
    return attempt(config, context)


def test_a_preempted_slurm_task_is_requeued_and_resumes(reference, data_dir, tmp_path, monkeypatch):
    """submitit's local executor: the same requeue path as on SLURM, in local processes."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    config = RunConfig(**QUICK).resolved()
    store = tmp_path / "runs.sqlite"
    context = RunContext(data_dir=data_dir, device="cpu", artifact_dir=folder_for(store),
                         resume_dir=resume_folder(store))
    execute = partial(preempted_once, context=context, marker=tmp_path / "preempted")
    [record] = launch_on_slurm([config], execute, cluster="local", gpus_per_run=0, time=10, poll_seconds=0.5,
                               folder=str(tmp_path / "submitit" / "%j"))
    assert (tmp_path / "preempted").exists(), "the first attempt never ran"
    assert record["status"] == "finished", record.get("error")
    assert record["resumed_from"] == {"epoch": 2.0, "step": 2}
    assert computed(record, folder_for(store)) == computed(reference(config), reference.folder)
    logs = "".join(p.read_text() for p in (tmp_path / "submitit").rglob("*.out"))
    assert "Requeued job" in logs
