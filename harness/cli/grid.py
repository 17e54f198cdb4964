"""``bench grid GRID.toml``: backbones × tasks × methods × heads × seeds through a launcher.

Torch, the launchers and their engines are imported inside the command, so ``bench --help``
stays fast. The launcher flags below are shortcuts for ``--launcher-option KEY=VALUE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import (
    accept_changed_option,
    allow_unverified_option,
    console,
    data_dir_option,
    device_option,
    err_console,
    literal,
    log_json_option,
    parse_options,
    store_option,
)
from plm_bench.tasks.sources import default_data_dir, forget_hashes


def launcher_options(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> dict:
    """``--launcher-option KEY=VALUE`` pairs as a dict (values parse as JSON where they can)."""
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise click.BadParameter(f"{pair!r}: write it as KEY=VALUE, e.g. cluster=local")
    return parse_options(pairs)


@click.command()
@allow_unverified_option
@click.argument("grid_file", metavar="GRID.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--launcher", default="local", show_default=True,
              help="Where runs execute: local, ray, slurm (see `bench list launcher`).")
@click.option("--dry-run", is_flag=True, help="Print the plan (each run, done or to run) and stop.")
@store_option()
@data_dir_option("Task data folder laid out <task>/<file> (default $PLM_BENCH_DATA); workers must see it.")
@device_option
@click.option("--force", is_flag=True, help="Rerun runs that already finished.")
@accept_changed_option
@click.option("--workers", type=click.IntRange(min=1),
              help="local: runs at once, each in its own process (default: one per visible GPU).")
@click.option("--ray-address", help="ray: an existing cluster (default: $RAY_ADDRESS, else a local Ray instance).")
@click.option("--partition", help="slurm: partition to submit to.")
@click.option("--time", "time_limit", type=click.IntRange(min=1), help="slurm: time limit of each run, in minutes.")
@click.option("--account", help="slurm: account to charge.")
@click.option("--gpus-per-run", type=click.FloatRange(min=0),
              help="ray, slurm: GPUs per run (default 1 where there are GPUs; ray takes fractions).")
@click.option("--cpus-per-run", type=click.IntRange(min=1), help="ray, slurm: CPU cores per run.")
@click.option("--launcher-option", "extra", multiple=True, metavar="KEY=VALUE", callback=launcher_options,
              help="Any other launcher option, e.g. cluster=local or slurm_qos=high (slurm), cpus=8 (ray).")
@log_json_option
def grid(grid_file: Path, launcher: str, dry_run: bool, store: Path | None, data_dir: Path | None, device: str,
         force: bool, accept_changed: bool, workers: int | None, ray_address: str | None, partition: str | None,
         time_limit: int | None,
         account: str | None, gpus_per_run: float | None, cpus_per_run: int | None, extra: dict,
         log_json: Path | None) -> None:
    """Run every combination in GRID.toml (see examples/grid.toml), skipping finished runs.

    Only this process writes the store; workers send their records back. A run that fails is
    recorded as failed and the grid goes on; rerunning the same command runs only what is not
    finished yet. Exits with status 1 if any run failed.
    """
    from plm_bench import plugins
    from plm_bench.results.store import Store, default_store_path
    from plm_bench.run import inputs
    from plm_bench.run.driver import check_options, drive, split_done
    from plm_bench.run.grid import load_grid

    forget_hashes()  # this command reads every input file's content afresh (run.inputs)
    plan = load_grid(grid_file)
    spec = plugins.get("launcher", launcher)
    if gpus_per_run is not None and gpus_per_run.is_integer():
        gpus_per_run = int(gpus_per_run)  # SLURM counts whole GPUs
    given = {"workers": workers, "address": ray_address, "partition": partition, "time": time_limit,
             "account": account, "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run}
    options = {**{k: v for k, v in given.items() if v is not None}, **extra}
    if device == "cpu":
        options = {**spec.cpu_options, **options}  # the launcher's own way of claiming no GPU
    check_options(spec, options)
    store_path = store or default_store_path()
    # a dry run writes nothing, not even a new store
    results = Store(store_path, read_only=dry_run) if store_path.exists() or not dry_run else None
    data_dir = (data_dir or default_data_dir()).resolve()  # absolute: workers of other launchers may start elsewhere
    unreadable: list[str] = []  # workers may see data this machine does not: checked where they run
    planned = inputs.planned(plan.configs, data_dir, strict=False, unreadable=unreadable)
    for problem in unreadable:
        err_console.print(literal(f"note: {problem} (finished runs of that task are taken as done unchecked)"),
                          soft_wrap=True)
    todo, done = split_done(plan.configs, results, force, accept_changed, planned)
    for skipped in plan.skipped:
        console.print(literal(f"skipped: {skipped}"), soft_wrap=True)
    if dry_run:
        console.print(plan_table(plan.configs, {c.hash for c in done}))
    console.print(literal(f"{len(plan.configs)} runs in {grid_file}: {len(done)} already finished, "
                          f"{len(todo)} to run on {launcher}"), soft_wrap=True)
    if dry_run or not todo:
        return

    from functools import partial

    from plm_bench.results.store import folder_for, pending_folder, resume_folder
    from plm_bench.run.driver import attempt
    from plm_bench.run.progress import for_command
    from plm_bench.run.protocol import RunContext

    progress = for_command(store_path, err_console, log_json)  # a line per event; workers' events too
    # absolute paths: workers of other launchers may start elsewhere
    context = RunContext(data_dir=data_dir, device=device, progress=progress,
                         artifact_dir=folder_for(store_path).resolve(),
                         pending_dir=pending_folder(store_path).resolve(),
                         resume_dir=resume_folder(store_path).resolve(), planned=planned)
    with progress:
        records = drive(todo, spec, partial(attempt, context=context), results, options, progress)
    failed = sum(r["status"] == "failed" for r in records)
    console.print(literal(f"{len(records) - failed} finished, {failed} failed, {len(done)} already finished "
                          f"(store: {store_path}; `bench leaderboard` summarizes)"), soft_wrap=True)
    if failed:
        err_console.print(literal((f"{failed} run(s) failed", "bold red"),
                                  "; rerun the same command to retry only them"))
        sys.exit(1)


def plan_table(configs: tuple, done: set[str]) -> Table:
    """What a dry run shows: every run of the grid and whether it would run."""
    table = Table("#", "backbone", "task", "method", "head", "seed", "status", title="grid plan")
    for i, c in enumerate(configs, 1):
        status = "finished" if c.hash in done else "to run"
        table.add_row(str(i), *map(literal, (c.backbone, c.task, c.method, c.head)), str(c.seed), status)
    return table
