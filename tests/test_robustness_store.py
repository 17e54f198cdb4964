"""Issue 14, items 5 and 6 and the store half of 10: a failed final write keeps the result, a
read-only store can be read, a bad row is skipped with one warning, read commands never
create a store."""

from __future__ import annotations

import copy
import gc
import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
from robustness import (
    bench,
    clean_environment,  # noqa: F401  (the autouse fixture)
    row_count,
)
from test_store import RECORD

from plm_bench.errors import BenchError
from plm_bench.results.store import Store, pending_folder


def disk_full(*args, **kwargs):
    raise sqlite3.OperationalError("database or disk is full")


def test_a_failed_final_write_keeps_the_record_beside_the_store_and_the_next_writer_adds_it(store_path,
                                                                                            monkeypatch):
    store = Store(store_path)
    monkeypatch.setattr(Store, "_insert", disk_full)
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(BenchError) as failure:
        store.add(copy.deepcopy(RECORD))
    kept = pending_folder(store_path) / f"{RECORD['config_hash']}.json"
    assert f"its record is kept in {kept}" in str(failure.value) and "database or disk is full" in str(failure.value)
    assert json.loads(kept.read_text()) == RECORD
    monkeypatch.undo()
    assert Store(store_path).finished(RECORD["config_hash"])["metrics"] == RECORD["metrics"]  # recovered on open
    assert not kept.exists()


def test_the_write_is_retried_before_giving_up(store_path, monkeypatch):
    store, calls = Store(store_path), []
    real = Store._insert

    def flaky(self, record, text):
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return real(self, record, text)

    monkeypatch.setattr(Store, "_insert", flaky)
    monkeypatch.setattr("time.sleep", lambda s: None)
    store.add(copy.deepcopy(RECORD))
    assert len(calls) == 3 and row_count(store_path) == 1
    assert not pending_folder(store_path).exists()


def test_a_journaled_record_older_than_the_stored_one_is_dropped(store_path):
    newer = {**copy.deepcopy(RECORD), "finished_at": "2026-12-01T00:00:00+00:00"}
    Store(store_path).add(newer)
    stale = pending_folder(store_path) / f"{RECORD['config_hash']}.json"
    stale.parent.mkdir()
    stale.write_text(json.dumps(RECORD))
    store = Store(store_path)
    assert store.finished(RECORD["config_hash"])["finished_at"] == newer["finished_at"]
    assert not stale.exists() and row_count(store_path) == 1


def test_a_bad_row_is_reported_once_and_skipped(store_path, capsys):
    store = Store(store_path)
    good = store.add(copy.deepcopy(RECORD))
    other = {**copy.deepcopy(RECORD), "config_hash": "fedcba9876543210"}
    with store.db:
        store.db.execute("INSERT INTO runs (config_hash, status, backbone, task, method, head, seed, record) "
                         "VALUES ('fedcba9876543210', 'finished', 'onehot', 'gb1', 'frozen', 'mlp-protein', 1, ?)",
                         (json.dumps({**other, "metrics": "broken"}),))
        store.db.execute("INSERT INTO runs (config_hash, status, backbone, task, method, head, seed, record) "
                         "VALUES ('aaaaaaaaaaaaaaaa', 'finished', 'onehot', 'gb1', 'frozen', 'mlp-protein', 1, "
                         "'{not json')")
    assert [r["run_id"] for r in store.records()] == [good]
    assert [r["run_id"] for r in store.records()] == [good]
    assert store.finished("fedcba9876543210") is None  # a rerun replaces the bad row
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all(w.startswith(f"warning: {store_path}: run ") for w in warnings)
    result = bench("leaderboard", "--store", store_path)
    assert result.exit_code == 0, result.output
    assert "gb1" in result.output and result.output.count("is not a valid record") == 2


@pytest.mark.parametrize("command", [("leaderboard",), ("predict", "--run", "1", "in.fasta", "-o", "out.csv")])
def test_read_commands_never_create_a_store(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.fasta").write_text(">a\nACD\n")
    result = bench(*command, "--store", tmp_path / "typo.sqlite")
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {tmp_path / 'typo.sqlite'}: no results store there (read commands "
                                     "never create one); check --store or $PLM_BENCH_STORE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a file system mounted read-only (as root, where permissions do not stop
    writes), or a folder without write permission (as any other user)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if sys.platform != "linux":
        pytest.skip("read-only mounts are set up on Linux only")
    import os

    if os.geteuid() != 0:
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root but cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        gc.collect()  # connections the commands left open hold files on the mount
        if subprocess.run(["umount", str(folder)]).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def make_read_only(folder) -> None:
    import os

    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        folder.chmod(0o555)


def test_a_store_on_a_read_only_disk_can_be_read(tmp_path, read_only_folder):
    built = tmp_path / "built.sqlite"
    store = Store(built)
    store.add(copy.deepcopy(RECORD))
    store.close()
    shutil.copy(built, read_only_folder / "results.sqlite")
    make_read_only(read_only_folder)
    with pytest.raises(OSError):
        (read_only_folder / "probe").write_text("x")  # the folder really is read-only
    result = bench("leaderboard", "--store", read_only_folder / "results.sqlite")
    assert result.exit_code == 0, result.output
    assert "gb1" in result.output and "0.250" in result.output


def test_read_commands_write_nothing_to_the_store(tmp_path):
    built = tmp_path / "results.sqlite"
    store = Store(built)
    store.add(copy.deepcopy(RECORD))
    store.close()
    before = built.read_bytes()
    reader = Store(built, read_only=True)
    assert [r["config_hash"] for r in reader.records()] == [RECORD["config_hash"]]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.db.execute("DELETE FROM runs")
    assert built.read_bytes() == before


def test_a_store_that_cannot_be_opened_for_writing_is_one_line(tmp_path, monkeypatch):
    def no_disk(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite3, "connect", no_disk)
    with pytest.raises(BenchError, match="cannot open the results store for writing .disk I/O error.; free space"):
        Store(tmp_path / "results.sqlite")


def test_when_the_store_disk_cannot_take_the_journal_either_it_goes_to_tmp_and_says_where_to_move_it(
        store_path, tmp_path, monkeypatch):
    store = Store(store_path)
    monkeypatch.setattr(Store, "_insert", disk_full)
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    pending_folder(store_path).write_text("a file where the folder would go: journaling beside the store fails")
    with pytest.raises(BenchError) as failure:
        store.add(copy.deepcopy(RECORD))
    kept = tmp_path / "tmp" / "plm-bench-pending" / f"{RECORD['config_hash']}.json"
    assert f"kept in {kept}: move it into {pending_folder(store_path)} once the disk has room" in str(failure.value)
    assert json.loads(kept.read_text()) == RECORD
