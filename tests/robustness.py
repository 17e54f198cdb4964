"""Helpers of the robustness tests (tests/test_robustness_*.py): a small learnable CSV task of
one's own, the CLI in-process, and a look at the store that bypasses the code under test."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.tasks.sources import ALLOW_UNVERIFIED
from plm_bench.tasks.task import TASK_FILES

TASK_TOML = """level = "protein"
type = "regression"
metric = "spearman"
format = "csv"
file = "data.csv"
split_column = "split"
id_column = "id"
"""


def task_csv(n: int = 40, seed: int = 0) -> str:
    """Label = number of alanines; every fourth record valid or test."""
    rng, rows = np.random.default_rng(seed), []
    for i in range(n):
        s = "".join(rng.choice(list("ACDEFGHIKL"), 12))
        rows.append(f"p{i},{s},{s.count('A')},{('train', 'train', 'valid', 'test')[i % 4]}")
    return "id,sequence,label,split\n" + "\n".join(rows) + "\n"


def write_task(folder: Path, toml: str = TASK_TOML, data: str | bytes | None = None, name: str = "mine.toml",
               data_name: str = "data.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = task_csv() if data is None else data
    (folder / data_name).write_bytes(data.encode() if isinstance(data, str) else data)
    path = folder / name
    path.write_bytes(toml.encode() if isinstance(toml, str) else toml)
    return path


def bench(*args: object) -> Result:
    """``bench ARGS`` in this process; the task registry is reset afterwards (custom task files)."""
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        plugins.catalog.cache_clear()


def quick_run(task: Path, store: Path, *extra: object) -> Result:
    return bench("run", "--backbone", "onehot", "--task", task, "--epochs", "1", "--store", store, "--device", "cpu",
                 *extra)


def row_count(store: Path, status: str | None = None) -> int:
    """Rows in the store (of ``status``) as SQLite sees them (0 when there is no store)."""
    if not store.exists():
        return 0
    with sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True) as db:
        if status:
            return db.execute("SELECT count(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def failed_errors(store: Path) -> list[str]:
    """The errors of the store's failed rows (the driver stores a run that failed, user errors too)."""
    if not store.exists():
        return []
    with sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True) as db:
        return [json.loads(text)["error"] for (text,) in db.execute("SELECT record FROM runs WHERE status = 'failed'")]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch) -> None:
    """Commands under test set these for their workers; each test starts without them and
    leaves none behind (import this fixture into a test module to use it)."""
    monkeypatch.setenv(TASK_FILES, "")
    monkeypatch.setenv(ALLOW_UNVERIFIED, "0")


def slow_run(config) -> dict:
    """A local-launcher run that notes its process id in ``$ROBUST_PIDS`` and then takes a minute."""
    import os
    import time

    (Path(os.environ["ROBUST_PIDS"]) / str(config.seed)).write_text(str(os.getpid()))
    time.sleep(60)
    return {}


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
