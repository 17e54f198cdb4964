"""The embedded SQLite results store: one validated JSON record per run.

A record is written in one transaction when its run ends, so an interrupted run leaves no
partial row. WAL mode lets readers (leaderboards) work while a run writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from plm_bench.errors import BenchError
from plm_bench.results import records

DEFAULT_STORE = "bench-results.sqlite"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    backbone TEXT NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    head TEXT NOT NULL,
    seed INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_config_hash ON runs (config_hash);
"""


def default_store_path() -> Path:
    return Path(os.environ.get("PLM_BENCH_STORE", DEFAULT_STORE))


class Store:
    """Run records in one SQLite file."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_store_path()
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA_SQL)
        except sqlite3.DatabaseError as exc:
            raise BenchError(f"{self.path}: not a usable results store ({exc}); "
                             "point --store at another file") from None

    def add(self, record: dict) -> int:
        """Validate and store ``record``, replacing earlier records of the same config."""
        records.validate(record)
        try:
            text = json.dumps(record, sort_keys=True, allow_nan=False)
        except ValueError:
            raise BenchError("run record contains NaN or infinity; not stored") from None
        config = record["config"]
        with self.db:
            self.db.execute("DELETE FROM runs WHERE config_hash = ?", (record["config_hash"],))
            cursor = self.db.execute(
                "INSERT INTO runs (config_hash, status, backbone, task, method, head, seed, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record["config_hash"], record["status"], config["backbone"], config["task"],
                 config["method"], config["head"], config["seed"], text),
            )
        return int(cursor.lastrowid)

    def finished(self, config_hash: str) -> dict | None:
        """The finished record of this config, if any (with its ``run_id``)."""
        row = self.db.execute(
            "SELECT id, record FROM runs WHERE config_hash = ? AND status = 'finished'",
            (config_hash,),
        ).fetchone()
        return {**json.loads(row[1]), "run_id": row[0]} if row else None

    def records(self, status: str = "finished") -> list[dict]:
        rows = self.db.execute("SELECT id, record FROM runs WHERE status = ? ORDER BY id", (status,))
        return [{**json.loads(text), "run_id": run_id} for run_id, text in rows]

    def close(self) -> None:
        self.db.close()
