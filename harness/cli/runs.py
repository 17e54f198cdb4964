"""``bench runs``: the stored runs with their ids (what ``bench predict --run`` takes), status,
the settings that tell them apart, test metric and time; ``bench show RUN``: one whole record."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from plm_bench.cli.common import console, err_console, literal, store_option
from plm_bench.cli.leaderboard import filter_options, selected
from plm_bench.errors import BenchError


@click.command()
@store_option()
@filter_options
@click.option("--status", type=click.Choice(["all", "finished", "failed"]), default="all", show_default=True)
@click.option("--metric", help="Test metric to show (default: each run's primary metric).")
def runs(store: Path | None, tasks: tuple[str, ...], backbones: tuple[str, ...], methods: tuple[str, ...],
         where: tuple[str, ...], status: str, metric: str | None) -> None:
    """List stored runs: id, status, the settings that vary among them, test metric, when."""
    from plm_bench.results import leaderboard as lb
    from plm_bench.results import records as rec

    found, _ = selected(store, tasks, backbones, methods, where, smoke=True,
                        status=None if status == "all" else status)
    if not found:
        raise BenchError("no stored runs match; start with `bench run` or loosen the filters")
    conditions = [lb.condition(r) for r in found]
    labels, caption = lb.layout(conditions, skip=())
    seeds = len({r["config"]["seed"] for r in found}) > 1
    table = Table("run", "status", *labels, *(["seed"] if seeds else []), f"test {metric or 'primary metric'}",
                  "finished at", title=f"{len(found)} runs", caption="\n".join(caption))
    for record, c in zip(found, conditions, strict=True):
        if record["status"] == "finished":
            score = rec.test_score(record, metric)
            outcome = "—" if score is None else f"{score:.4f}"
        else:
            outcome = record.get("error", "")
        cells = [str(record["run_id"]), record["status"] + (" (smoke)" if lb.smoke(record) else ""),
                 *lb.label(c, labels), *([str(record["config"]["seed"])] if seeds else []), outcome,
                 record.get("finished_at", "")[:19].replace("T", " ")]
        table.add_row(*(Text(cell) for cell in cells))  # settings and errors are user text, not markup
    console.print(table)


@click.command()
@click.argument("run_id", type=int)
@store_option()
def show(run_id: int, store: Path | None) -> None:
    """Print the whole stored record of run RUN_ID as JSON, after the code that produced it (on stderr,
    so the JSON stays pipeable)."""
    from plm_bench.results.store import Store

    results = Store(store, read_only=True)
    for record in results.records(status=None):
        if record["run_id"] == run_id:
            for line in code_lines(record):
                err_console.print(literal(line), soft_wrap=True)
            click.echo(json.dumps(record, indent=2, sort_keys=True))
            return
    raise BenchError(f"{results.path} has no run {run_id}; `bench runs` lists the ids")


def code_lines(record: dict) -> list[str]:
    """Which code produced ``record``, for people: plm-bench and every plugin that served it."""
    provenance = record.get("provenance")
    if not provenance:
        return ["code: not recorded (a record of plm-bench 0.1.0, record schema 1)"]
    own = provenance["plm_bench"]
    commit = f", commit {own['commit'][:12]}{' (dirty)' if own.get('dirty') else ''}" if own.get("commit") else ""
    lines = [f"code: plm-bench {own['version']} (result version {own['result_version']}{commit}), "
             f"record schema {provenance['schema_version']}"]
    lines += [f"  {kind} {p['name']}: {p['distribution']} {p['version']}" for kind, p in provenance["plugins"].items()]
    return lines
