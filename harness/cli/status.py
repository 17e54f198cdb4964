"""``bench status``: what a store's runs have done, what is running and what failed.

Read from the store (finished and failed records) and from the runs' event files beside it
(``<store>.events/``), so it works from another shell while a grid runs, on any launcher whose
workers see that folder. Nothing here writes.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import console, store_option
from plm_bench.errors import BenchError


@click.command()
@store_option()
def status(store: Path | None) -> None:
    """Finished, failed, running and interrupted runs of a store (safe while a grid runs)."""
    from plm_bench.results import records
    from plm_bench.results.store import Store, default_store_path
    from plm_bench.run.progress import EventLog, describe, duration, events_folder, label, local_time

    path = store or default_store_path()
    if not path.is_file():
        raise BenchError(f"no results store at {path}; pass --store PATH (or set $PLM_BENCH_STORE)")
    results = Store(path)
    stored = {r["config_hash"]: r for status in ("failed", "finished") for r in results.records(status)}
    running, gone = [], []
    for config_hash, events in EventLog(events_folder(path)).latest().items():
        record = stored.get(config_hash)
        if not events or events[-1]["event"] == "end":
            continue  # ended: the store tells how
        if record and when(record["finished_at"]) >= when(events[0]["time"]):
            continue  # stored after this attempt began (its driver stopped before writing the end)
        (running if alive(events[-1]) else gone).append(events)

    finished = [r for r in stored.values() if r["status"] == "finished"]
    failed = [r for r in stored.values() if r["status"] == "failed"]
    console.print(f"{path}: {len(finished)} finished, {len(failed)} failed, {len(running)} running"
                  + (f", {len(gone)} interrupted" if gone else ""), highlight=False, soft_wrap=True)
    if running or gone:
        table = Table("config", "run", "state", "last event", "ago", title="running")
        for events in running + gone:
            last = events[-1]
            state = "running" if events in running else f"interrupted (no process {last['pid']} on {last['host']})"
            table.add_row(last["config_hash"], label(last), state, describe(last).removeprefix(label(last) + ": "),
                          duration(age(last)))
        console.print(table)
    if failed:
        table = Table("id", "config", "run", "failed at", "error", title="failed")
        for r in sorted(failed, key=lambda r: r["run_id"]):
            table.add_row(str(r["run_id"]), r["config_hash"], label(r["config"]), local_time(r["finished_at"]),
                          (r.get("error") or "no error recorded").splitlines()[0])
        console.print(table)
    if finished:
        table = Table("id", "config", "run", "finished at", "test", title="finished")
        for r in sorted(finished, key=lambda r: r["run_id"]):
            table.add_row(str(r["run_id"]), r["config_hash"], label(r["config"]), local_time(r["finished_at"]),
                          f"{r['primary_metric']} {records.test_score(r):.4f}")
        console.print(table)


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def age(event: dict) -> float:
    """Seconds since ``event``."""
    return (datetime.now(timezone.utc) - when(event["time"])).total_seconds()


def alive(event: dict) -> bool:
    """Whether the process that wrote ``event`` may still run: known only on this host."""
    if event["host"] != socket.gethostname():
        return True
    try:
        os.kill(event["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
