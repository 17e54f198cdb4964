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
