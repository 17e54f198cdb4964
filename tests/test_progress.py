"""The progress layer: a non-tty `bench run` prints a line per validation, the JSON-lines events
match the stored record, workers' events reach the driver, and `bench status` tells finished,
failed, running and interrupted runs apart."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import socket
import subprocess
import sys
from datetime import datetime

import pytest
from click.testing import CliRunner
from rich.console import Console

from plm_bench.cli import common, main
from plm_bench.config import RunConfig
from plm_bench.results.store import Store
from plm_bench.run.progress import Bars, EventLog, Follower, Lines, Progress, display, events_folder

QUICK = ["--limit-train", "64", "--limit-eval", "32"]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # every plain line starts with the local time


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env={"COLUMNS": "300"})  # a row per line


@pytest.fixture(scope="module")
def piped_run(data_dir, tmp_path_factory) -> dict:
    """`bench run` as under nohup or SLURM: stdout and stderr are pipes, not a terminal.
    3 epochs × 2 validations; patience 2 with best-of-N, so patience may run out and training goes on."""
    folder = tmp_path_factory.mktemp("piped")
    store, log = folder / "results.sqlite", folder / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", "from plm_bench.cli import main; main()", "run", "--backbone", "onehot",
         "--task", "gb1", "--data-dir", str(data_dir), "--store", str(store), "--epochs", "3",
         "--val-per-epoch", "2", "--patience", "2", "--checkpoint", "best-of-N", "--log-json", str(log), *QUICK],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [record] = Store(store).records()
    return {"stderr": result.stderr, "store": store, "log": log, "record": record}


def test_a_run_off_a_terminal_prints_a_timestamped_line_per_validation(piped_run):
    lines = piped_run["stderr"].splitlines()
    history = piped_run["record"]["history"]
    assert len(history) == 6
    validations = [line for line in lines if " valid spearman " in line]
    assert len(validations) == len(history)
    for line, entry in zip(validations, history, strict=True):
        assert re.match(rf"{STAMP} onehot gb1 frozen mlp-protein seed 1: epoch {entry['epoch']:.2f}/3 "
                        rf"valid spearman {entry['valid']:.4f} \(best -?\d\.\d{{4}}\), "
                        rf"valid loss {entry['valid_loss']:.4g}, "
                        rf"train loss .*, ETA \d+s$", line)
    assert re.match(rf"{STAMP} onehot gb1 frozen mlp-protein seed 1: start: 3 epochs", lines[0])
    test = piped_run["record"]["metrics"]["test"]["spearman"]
    assert re.match(rf"{STAMP} .*: finished in \d+s: test spearman {test:.4f} \(run 1\) \[1/1 runs\]$", lines[-1])
    assert all(re.match(STAMP, line) for line in lines)  # nothing but event lines on stderr (no bar)


def test_log_json_events_parse_and_match_the_stored_record(piped_run):
    record = piped_run["record"]
    events = [json.loads(line) for line in piped_run["log"].read_text().splitlines()]
    for event in events:
        assert event["config_hash"] == record["config_hash"] and event["metric"] == "spearman"
        assert {"time", "event", "epoch", "backbone", "seed", "host", "pid"} <= set(event)
        datetime.fromisoformat(event["time"])
    validations = [e for e in events if e["event"] == "validation"]
    assert [(e["epoch"], e["step"], e["value"], e["valid_loss"]) for e in validations] == [
        (h["epoch"], h["step"], h["valid"], h["valid_loss"]) for h in record["history"]]
    assert [e["best"] for e in validations] == [max(h["valid"] for h in record["history"][:i + 1])
                                                for i in range(len(record["history"]))]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "training" in kinds
    stopped = record["early_stopping"]["stopped_at_epoch"]
    assert [e["epoch"] for e in events if e["event"] == "early_stop"] == ([stopped] if stopped else [])
    end = events[-1]
    assert (end["status"], end["run_id"], end["value"]) == ("finished", 1, record["metrics"]["test"]["spearman"])
    # the same events in the run's own file beside the store (what `bench status` reads)
    beside = events_folder(piped_run["store"]) / f"{record['config_hash']}.jsonl"
    assert beside.read_text() == piped_run["log"].read_text()


def test_workers_events_reach_the_drivers_output(data_dir, tmp_path, monkeypatch):
    """A local worker (--workers 2: a process per run) writes its events; the driver shows them."""
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\n'
                    "[settings]\nepochs = 2\nlimit_train = 48\nlimit_eval = 24\n")
    store, log = tmp_path / "results.sqlite", tmp_path / "events.jsonl"
    result = invoke("grid", str(grid), "--workers", "2", "--store", str(store), "--data-dir", str(data_dir),
                    "--log-json", str(log))
    assert result.exit_code == 0, result.output
    shown = [line for line in result.output.splitlines() if re.match(rf"{STAMP} .* seed 1: epoch [12]\.00/2 ", line)]
    assert len(shown) == 2, result.output
    events = [json.loads(line) for line in log.read_text().splitlines()]
    [worker] = {e["pid"] for e in events if e["event"] != "end"}
    assert worker != os.getpid()  # written by the worker, shown by the driver
    assert len(events) == len({json.dumps(e, sort_keys=True) for e in events})  # each event once


def test_status_shows_finished_failed_running_and_interrupted_runs(piped_run, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(common.console, "width", 300)  # a row per line, whatever width earlier tests left
    store = piped_run["store"]
    missing = tmp_path / "no-data"
    missing.mkdir()
    failing = invoke("run", "--backbone", "onehot", "--task", "gb1", "--data-dir", str(missing), "--seed", "2",
                     "--store", str(store), *QUICK)
    assert failing.exit_code == 2  # missing data: refused before anything is stored (issue 24) ...
    from plm_bench.results import records

    Store(store).add(records.failed(RunConfig(backbone="onehot", task="gb1", seed=2).resolved(), failing.output.strip()
                                    .removeprefix("error: "), {}, "BenchError"))  # ... as a worker's run stores it
    progress = Progress(EventLog(events_folder(store)))  # a run in this (live) process, mid-training
    progress.start(RunConfig(backbone="onehot", task="gb1", seed=3, epochs=4).resolved())
    progress.training(64)
    progress.validation(1.0, 1, 0.25, 0.25, 0.5, 0.6)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = Progress(EventLog(events_folder(store)))
    gone.start(RunConfig(backbone="onehot", task="gb1", seed=4).resolved())
    path = EventLog(events_folder(store)).path(gone.run["config_hash"])
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {int(dead.stdout)}'))

    result = invoke("status", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert f"{store}: 1 finished, 1 failed, 1 running, 1 interrupted" in result.output
    def row(seed: int) -> str:
        [line] = [line for line in result.output.splitlines() if f"onehot gb1 frozen mlp-protein seed {seed} " in line]
        return line

    assert re.search(r"│ 1 +│ \w+ +│ .* seed 1 +│ .* │ spearman -?\d\.\d{4} ", row(1))
    assert "splits.zip is missing" in row(2)
    assert re.search(r"│ running +│ epoch 1\.00/4 valid spearman 0\.2500 .* │ \d+s +│$", row(3))
    assert f"interrupted (no process {int(dead.stdout)} on {socket.gethostname()})" in row(4)


def test_status_without_a_store_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["status", "--store", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 2 and "no results store at" in result.output


def test_status_names_a_corrupt_event_file_in_one_line(tmp_path):
    store = tmp_path / "results.sqlite"
    Store(store).close()
    bad = events_folder(store) / "abc.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"event": "start"}\nnot json\n')
    result = CliRunner().invoke(main, ["status", "--store", str(store)])
    assert result.exit_code == 2 and f"{bad}: line 2 is not a JSON event" in result.output


def test_follower_shows_other_processes_complete_lines_once(tmp_path):
    log = EventLog(tmp_path)
    theirs = {"config_hash": "abc", "event": "start", "host": "elsewhere", "pid": 1}
    ours = {**theirs, "event": "training", "host": socket.gethostname(), "pid": os.getpid()}
    log.write({**theirs, "event": "old"})  # an earlier attempt, before following began
    shown: list[dict] = []
    follower = Follower(log, ["abc"], shown.append)
    log.write(theirs)
    log.write(ours)
    with open(log.path("abc"), "a") as file:
        file.write('{"config_hash": "abc", "ev')  # a line a worker is still writing
    follower.poll()
    follower.poll()
    assert shown == [theirs]
    with open(log.path("abc"), "a") as file:
        file.write('ent": "validation", "host": "elsewhere", "pid": 1}\n')
    follower.poll()
    assert [e["event"] for e in shown] == ["start", "validation"]


def test_eta_is_the_remaining_epochs_at_the_pace_so_far(monkeypatch):
    clock = iter([100.0, 130.0])
    monkeypatch.setattr("plm_bench.run.progress.time.monotonic", lambda: next(clock))
    seen: list[dict] = []
    progress = Progress()
    progress.show = seen.append
    progress.start(RunConfig(backbone="onehot", task="gb1", epochs=10).resolved())
    progress.training(8)  # t = 100
    progress.validation(2.5, 5, 0.1, 0.1, 1.0, 1.1)  # t = 130: 30 s for 2.5 epochs, 7.5 to go
    assert seen[-1]["eta_seconds"] == pytest.approx(90.0)


def test_workers_get_the_event_log_only_and_terminals_get_bars(tmp_path):
    progress = Progress(EventLog(tmp_path), Lines(Console(file=io.StringIO())))
    shipped = pickle.loads(pickle.dumps(progress))
    assert shipped.log.folder == tmp_path and shipped.view is None
    assert isinstance(display(Console(file=io.StringIO(), force_terminal=True)), Bars)
    assert isinstance(display(Console(file=io.StringIO())), Lines)
