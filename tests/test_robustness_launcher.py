"""Issue 14, item 4: ``bench grid --workers 2`` with its driver SIGKILLed. Workers went on for
minutes, and results they had finished were lost in a leftover temporary folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from robustness import (
    clean_environment,  # noqa: F401  (the autouse fixture)
    running,
)

from plm_bench.results.store import Store, pending_folder

TESTS = Path(__file__).resolve().parent

DRIVER = """
from plm_bench.run.protocol import RunConfig
from plm_bench_plugins.launchers import launch_locally
from robustness import slow_run

for record in launch_locally([RunConfig(backbone="onehot", task="gb1", seed=s) for s in (1, 2)], slow_run, workers=2):
    pass
"""

KILL_ON_FIRST_RECORD = """
import os, signal, sys
from plm_bench.results import store
store.Store.add = lambda self, record: os.kill(os.getpid(), signal.SIGKILL)  # dies with a record in hand
from plm_bench.cli import main
main(sys.argv[1:])
"""


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **extra}


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_workers_die_with_their_driver(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=environment(ROBUST_PIDS=str(tmp_path)))
    try:
        assert wait_for(lambda: all((tmp_path / s).is_file() for s in ("1", "2")), 60), "workers did not start"
        workers = [int((tmp_path / s).read_text()) for s in ("1", "2")]
        assert all(running(pid) for pid in workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not any(running(pid) for pid in workers), 5), "workers outlived their driver"
    finally:
        driver.kill()
        driver.wait()
        for name in ("1", "2"):
            if (tmp_path / name).is_file() and running(pid := int((tmp_path / name).read_text())):
                os.kill(pid, signal.SIGKILL)


def test_a_record_the_driver_received_but_never_stored_reaches_the_store_on_the_next_run(tmp_path, data_dir):
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\nseeds = [1]\n'  # 2 workers: a worker process
                    "[settings]\nepochs = 1\nlimit_train = 48\nlimit_eval = 24\n")
    store = tmp_path / "s.sqlite"
    killed = subprocess.run([sys.executable, "-c", KILL_ON_FIRST_RECORD, "grid", str(grid), "--workers", "2",
                             "--device", "cpu", "--store", str(store), "--data-dir", str(data_dir)],
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    journaled = sorted(p.stem for p in pending_folder(store).glob("*.json"))
    assert journaled, "the finished run left no journal"
    recovered = Store(store).records()
    assert sorted(r["config_hash"] for r in recovered) == journaled
    assert all(r["status"] == "finished" and r["config"]["task"] == "gb1" for r in recovered)
    assert not list(pending_folder(store).glob("*.json"))


def test_a_worker_that_cannot_journal_still_hands_its_record_back(tmp_path, monkeypatch):
    from plm_bench.config import RunConfig
    from plm_bench.run import driver, protocol
    from plm_bench.run.protocol import RunContext

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the journal folder would be")
    monkeypatch.setattr(protocol, "execute", lambda config, context: {"config_hash": config.hash, "status": "x"})
    config = RunConfig(backbone="onehot", task="gb1")
    record = driver.attempt(config, RunContext(data_dir=tmp_path, device="cpu", pending_dir=blocked / "pending"))
    assert record == {"config_hash": config.hash, "status": "x"}
