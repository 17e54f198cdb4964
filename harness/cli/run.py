"""``bench run``: one backbone on one task, once per seed — a one-axis grid through the driver."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import (
    accept_changed_option,
    allow_unverified_option,
    config_options,
    console,
    data_dir_option,
    device_option,
    err_console,
    literal,
    log_json_option,
    store_option,
)
from plm_bench.errors import BenchError
from plm_bench.tasks.sources import default_data_dir, forget_hashes


@click.command()
@allow_unverified_option
@config_options(exclude=("seed",))
@click.option("--seed", "seed_list", type=int, multiple=True, help="Seed; repeat for several runs.")
@click.option("--seeds", "seed_count", type=click.IntRange(min=1),
              help="Run seeds 1..N (default: the protocol's number; study: 5 for frozen embeddings, 3 for "
                   "fine-tuning, Tables S1/S2).")
@device_option
@store_option()
@data_dir_option()
@click.option("--force", is_flag=True, help="Rerun configs that already finished.")
@click.option("--dry-run", is_flag=True, help="Print each seed's run with every setting resolved (protocol, "
                                              "method, head) and whether it is done, then stop: nothing trains.")
@accept_changed_option
@log_json_option
def run(seed_list: tuple[int, ...], seed_count: int | None, device: str, store: Path | None,
        data_dir: Path | None, force: bool, dry_run: bool, accept_changed: bool, log_json: Path | None,
        **settings) -> None:
    """Train and evaluate one backbone on one task, once per seed."""
    from functools import partial

    from plm_bench import plugins
    from plm_bench.config import RunConfig, protocol_seeds
    from plm_bench.results import records
    from plm_bench.results.store import Store, folder_for, resume_folder
    from plm_bench.run import inputs
    from plm_bench.run.driver import attempt, drive, split_done
    from plm_bench.run.progress import for_command
    from plm_bench.run.protocol import RunContext

    if seed_list and seed_count:
        raise BenchError("give either --seed (explicit seeds) or --seeds N, not both")
    forget_hashes()  # this command reads every input file's content afresh (run.inputs)
    if settings["task"].endswith(".toml"):  # the user's own task file, registered for this process and its workers
        from plm_bench.tasks.task import use_task_file

        settings["task"] = use_task_file(Path(settings["task"]))
    if not seed_list and not seed_count:  # the protocol's number of seeds
        seed_count = protocol_seeds(RunConfig(**settings).resolved())
    configs = [RunConfig(**settings, seed=seed).resolved() for seed in seed_list or range(1, seed_count + 1)]
    if dry_run:
        from plm_bench.results.store import default_store_path

        path = store or default_store_path()  # a dry run writes nothing, not even a new store
        _, done = split_done(configs, Store(path, read_only=True) if path.exists() else None, force, accept_changed)
        console.print(settings_table(configs, {c.hash for c in done}))
        return
    data_dir = data_dir or default_data_dir()
    planned = inputs.planned(configs, data_dir)  # reads and checks the data before anything is stored
    results = Store(store)
    todo, done = split_done(configs, results, force, accept_changed, planned)
    for config in done:
        console.print(literal(f"already done: {config.backbone} {config.task} {config.method} seed {config.seed} "
                              f"(run {results.finished(config.hash)['run_id']}); use --force to rerun"),
                      soft_wrap=True)
    for config in todo:
        stale = results.finished(config.hash) if not force else None
        for change in inputs.changed(stale, planned[config.hash]) if stale else ():
            err_console.print(literal(f"rerunning {config.backbone} {config.task} {config.method} seed {config.seed} "
                                      f"(run {stale['run_id']}): its {change} differs"), soft_wrap=True)
    progress = for_command(results.path, err_console, log_json, show_failed=False)  # reported below
    context = RunContext(data_dir=data_dir, device=device, progress=progress, artifact_dir=folder_for(results.path),
                         resume_dir=resume_folder(results.path), planned=planned)
    with progress:
        ran = drive(todo, plugins.get("launcher", "local"), partial(attempt, context=context), results,
                    {"workers": 1}, progress)
    failures = [r for r in ran if r["status"] == "failed"]
    fixable = [r for r in failures if records.user_error(r)]
    if fixable:  # something the user must fix first (missing data or weights, a bad setting): one line, exit 2
        raise BenchError(fixable[0]["error"])
    shown = [(results.finished(c.hash), "already done") for c in done] + [(r, r["status"]) for r in ran]
    table = Table("run", "backbone", "task", "method", "seed", "valid", "test [95% CI]", "status")
    for record, status in sorted(shown, key=lambda pair: pair[0]["config"]["seed"]):
        c = record["config"]
        row = [str(record["run_id"]), *map(literal, (c["backbone"], c["task"], c["method"])), str(c["seed"])]
        if status == "failed":
            table.add_row(*row, "—", "—", status)
            continue
        ci = record["test_ci"]
        table.add_row(*row, f"{records.valid_score(record):.4f}",
                      f"{records.test_score(record):.4f} [{ci['low']:.3f}, {ci['high']:.3f}]", status)
        table.title = f"test {record['primary_metric']}"
    console.print(table)
    for record in ran:
        for warning in record.get("warnings", []):
            err_console.print(literal((f"run {record['run_id']} warning:", "yellow"), f" {warning}"), soft_wrap=True)
    for record in failures:
        err_console.print(literal((f"run {record['run_id']} failed:", "red"), f" {record['error']}"), soft_wrap=True)
    if failures:
        sys.exit(1)


def settings_table(configs: list, done: set[str]) -> Table:
    """What ``bench run --dry-run`` shows: every setting of each seed's resolved run, a column per seed."""
    import json
    from dataclasses import asdict

    from plm_bench.config import config_fields

    table = Table("setting", *(f"seed {c.seed}" for c in configs), title="run plan (resolved settings)")
    for f in config_fields():
        values = [asdict(c)[f.name] for c in configs]
        table.add_row(literal(f.name), *(literal(v if isinstance(v, str) else json.dumps(v)) for v in values))
    table.add_row("config hash", *(c.hash for c in configs))
    table.add_row("status", *("finished" if c.hash in done else "to run" for c in configs))
    return table

