"""The SQLite store: schema validation, replacement, no NaN."""

from __future__ import annotations

import copy

import pytest

from plm_bench.errors import BenchError
from plm_bench.results.store import Store

RECORD = {
    "config": {"backbone": "onehot", "task": "gb1", "method": "frozen", "head": "mlp-protein", "seed": 1,
               "epochs": 2, "lr": 0.001, "batch_size": 8, "backbone_path": None},
    "config_hash": "0123456789abcdef",
    "status": "finished",
    "primary_metric": "spearman",
    "metrics": {"valid": {"spearman": 0.3}, "test": {"spearman": 0.25}},
    "environment": {"torch": "2"},
    "finished_at": "2026-11-25T01:00:00+00:00",
}


def test_valid_record_round_trips(store_path):
    store = Store(store_path)
    run_id = store.add(copy.deepcopy(RECORD))
    found = store.finished(RECORD["config_hash"])
    assert found["run_id"] == run_id and found["metrics"] == RECORD["metrics"]


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("config_hash"),
    lambda r: r["config"].update(seed="one"),
    lambda r: r.update(status="maybe"),
    lambda r: r["metrics"]["test"].update(spearman="high"),
    lambda r: r.update(config_hash="not-hex"),
])
def test_malformed_record_is_rejected_and_nothing_stored(store_path, damage):
    record = copy.deepcopy(RECORD)
    damage(record)
    store = Store(store_path)
    with pytest.raises(BenchError, match="invalid run record"):
        store.add(record)
    assert store.records() == []


def test_nan_metric_is_refused(store_path):
    record = copy.deepcopy(RECORD)
    record["metrics"]["test"]["spearman"] = float("nan")
    with pytest.raises(BenchError, match="NaN"):
        Store(store_path).add(record)


def test_rerun_replaces_the_earlier_record(store_path):
    store = Store(store_path)
    store.add(copy.deepcopy(RECORD))
    newer = copy.deepcopy(RECORD)
    newer["metrics"]["test"]["spearman"] = 0.5
    store.add(newer)
    assert [r["metrics"]["test"]["spearman"] for r in store.records()] == [0.5]


def test_a_file_that_is_not_sqlite_gives_one_line(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(BenchError, match="not a usable results store"):
        Store(bad)
    assert bad.read_text().startswith("these are my notes")


def test_profiles_are_validated_and_every_measurement_is_kept(store_path):
    from stored_profiles import profile

    store = Store(store_path)
    first, second = profile("esm2-8m", "lora", {8: 1024}), profile("esm2-8m", "lora", {8: 1088})
    ids = [store.add_profile(first), store.add_profile(second)]
    found = store.profiles()
    assert [p["profile_id"] for p in found] == ids and ids[0] < ids[1]  # a re-profile adds a row
    assert [p["envelope"]["budgets"] for p in found] == [[{"bytes": 8 * 1024**3, "longest": 1024}],
                                                         [{"bytes": 8 * 1024**3, "longest": 1088}]]
    assert store.records() == []  # profiles are not runs
    bad = copy.deepcopy(first)
    bad["envelope"]["budgets"][0]["longest"] = -1
    with pytest.raises(BenchError, match="invalid profile at envelope/budgets/0/longest"):
        store.add_profile(bad)
    nan = copy.deepcopy(first)
    nan["rates"][0]["seconds"] = float("nan")
    with pytest.raises(BenchError, match="profile contains NaN"):
        store.add_profile(nan)
    assert len(store.profiles()) == 2


def test_a_store_from_before_profiles_opens_unchanged_and_a_writer_adds_the_table(store_path, capsys):
    import sqlite3

    from stored_profiles import profile

    Store(store_path).add(copy.deepcopy(RECORD))
    with sqlite3.connect(store_path) as db:
        db.execute("DROP TABLE profiles")  # the store as the release before profiles left it
    old = Store(store_path, read_only=True)
    assert old.profiles() == [] and [r["config_hash"] for r in old.records()] == [RECORD["config_hash"]]
    old.close()
    store = Store(store_path)
    store.add_profile(profile("onehot", "frozen", {1: 2048}))
    assert [p["method"] for p in store.profiles()] == ["frozen"] and len(store.records()) == 1
    with sqlite3.connect(store_path) as db:  # a row damaged outside the harness is skipped, said once
        db.execute("UPDATE profiles SET profile = '{}'")
    assert store.profiles() == [] and store.profiles() == []
    assert capsys.readouterr().err.count("is not a valid profile") == 1
