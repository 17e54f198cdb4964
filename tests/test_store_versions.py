"""Stores outlive plm-bench's versions: a 0.1.0 store is read as it is, upgraded by a writer (with a
backup, in one transaction), and rows changed outside plm-bench are named, not shown."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.results.store import STORE_VERSION, Store, digest

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1.sqlite"  # written by plm-bench 0.1.0


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "lab.sqlite"
    shutil.copy(FIXTURE, path)
    return path


def version(path: Path) -> int:
    return sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]


def test_the_0_1_0_store_opens_lists_and_renders_a_leaderboard_read_only_without_changing(old_store):
    before = old_store.read_bytes()
    runs = invoke("runs", "--store", str(old_store))
    assert runs.exit_code == 0, runs.output
    assert "4 runs" in runs.output
    board = invoke("leaderboard", "--store", str(old_store), "--smoke", "--format", "md")
    assert board.exit_code == 0, board.output
    assert "gb1" in board.output and "(n=2)" in board.output
    assert old_store.read_bytes() == before and version(old_store) == 0


def test_a_writer_upgrades_the_0_1_0_store_in_place_after_a_backup(old_store, capsys):
    records = Store(old_store, read_only=True).records()
    store = Store(old_store)
    assert version(old_store) == STORE_VERSION
    assert "upgraded from store version 0" in capsys.readouterr().err
    backup = old_store.with_name("lab.v0-backup.sqlite")
    assert version(backup) == 0 and len(Store(backup, read_only=True).records()) == 4
    assert store.records() == records  # every record as it was
    texts = store.db.execute("SELECT record, digest FROM runs").fetchall()
    assert all(d == digest(t) for t, d in texts)
    Store(old_store)  # a second writer finds it done: no second upgrade
    assert "upgraded" not in capsys.readouterr().err


def test_a_record_changed_outside_plm_bench_is_named_and_not_shown(old_store, capsys):
    Store(old_store)
    db = sqlite3.connect(old_store)
    text = db.execute("SELECT record FROM runs WHERE id = 1").fetchone()[0]
    db.execute("UPDATE runs SET record = ? WHERE id = 1", (text.replace('"seed": 1', '"seed": 7'),))
    db.commit()
    shown = Store(old_store, read_only=True).records()
    assert [r["run_id"] for r in shown] == [2, 3, 4]
    assert "run 1 is not a valid record (it differs from what plm-bench stored" in capsys.readouterr().err


def test_a_store_from_a_newer_plm_bench_is_refused_in_one_line(old_store):
    db = sqlite3.connect(old_store)
    db.execute(f"PRAGMA user_version = {STORE_VERSION + 1}")
    db.commit()
    for read_only in (True, False):
        with pytest.raises(BenchError, match="written by a newer plm-bench .* upgrade plm-bench"):
            Store(old_store, read_only=read_only)


def test_a_new_store_starts_at_the_current_version(tmp_path):
    Store(tmp_path / "new.sqlite")
    assert version(tmp_path / "new.sqlite") == STORE_VERSION
