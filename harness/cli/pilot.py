"""``bench pilot``: does fine-tuning pay on this task, by how much, at what cost, answered within a
time budget. Plans from measured cost (harness/run/pilot.py), runs the plan through the driver
like ``bench grid``, answers per backbone (harness/results/pilot.py).

Torch, the plugins and the launchers are imported inside the command, so ``bench --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import (
    allow_unverified_option,
    console,
    data_dir_option,
    device_option,
    err_console,
    literal,
    log_json_option,
    store_option,
)
from plm_bench.cli.grid import launcher_options


def method_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    if not methods:
        raise click.BadParameter("name at least one method, e.g. frozen,lora,full")
    return methods


def fraction_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        fractions = tuple(sorted({float(f) for f in value.split(",")}))
    except ValueError:
        raise click.BadParameter(f"{value!r}: write fractions as 0.1,0.3,1") from None
    if not all(0 < f <= 1 for f in fractions):
        raise click.BadParameter(f"{value!r}: each fraction must be in (0, 1]")
    return fractions


def backbone_paths(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{pair!r}: write it as NAME=DIR, e.g. esm2-8m=./my-esm")
        out[name] = str(Path(path).resolve())
    return out


@click.command()
@allow_unverified_option
@click.option("--task", required=True, help="Task name (see `bench list task`) or your own task TOML.")
@click.option("--backbone", "backbones", multiple=True, required=True, help="Backbone to answer for; repeatable.")
@click.option("--budget", required=True, help="Time for the whole pilot, e.g. 20m, 1h30m (profiling included).")
@click.option("--methods", default="frozen,lora,full", show_default=True, callback=method_list,
              help="Methods to compare; frozen (a linear probe and the MLP head) always runs as the baseline.")
@click.option("--min-gain", type=click.FloatRange(min=0),
              help="The smallest gain in the task's metric worth fine-tuning for: 'frozen is enough' needs "
                   "every fine-tuning gain's 95% CI below it (default 0.01).")
@click.option("--backbone-path", "paths", multiple=True, metavar="NAME=DIR", callback=backbone_paths,
              help="Load a backbone's weights from this directory instead of its hub id; repeatable.")
@click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
              help="random: the architectures with random weights (offline).")
@click.option("--seeds", type=click.IntRange(min=2), help="Pin the seeds instead of letting the budget choose.")
@click.option("--fractions", callback=fraction_list, help="Pin the training fractions, e.g. 0.1,0.3,1.")
@click.option("--epochs", type=click.IntRange(min=1), help="Pin the fine-tuning epochs (early stopping still on).")
@click.option("--dry-run", is_flag=True, help="Print the plan and its estimated time, run nothing (profiles that "
                                               "had to be measured are still stored).")
@click.option("--launcher", default="local", show_default=True, help="Where runs execute (see `bench list launcher`).")
@click.option("--workers", type=click.IntRange(min=1), help="local: runs at once, each in its own process.")
@click.option("--launcher-option", "extra", multiple=True, metavar="KEY=VALUE", callback=launcher_options,
              help="Any other launcher option, as for `bench grid`.")
@store_option()
@data_dir_option()
@device_option
@log_json_option
def pilot(task: str, backbones: tuple[str, ...], budget: str, methods: tuple[str, ...], min_gain: float | None,
          paths: dict[str, str], init: str, seeds: int | None, fractions: tuple[float, ...] | None,
          epochs: int | None, dry_run: bool, launcher: str, workers: int | None, extra: dict, store: Path | None,
          data_dir: Path | None, device: str, log_json: Path | None) -> None:
    """Plan, run and answer within --budget: per backbone, the gain of each fine-tuning method over the
    best frozen head at each training fraction (paired over seeds, 95% CIs), its cost, and a verdict.

    The plan comes from `bench profile` measurements of each backbone and method on this device
    (stored ones reused); the runs go into the store like a grid's, cheapest first, so a stopped
    pilot still answers what it can and rerunning the command runs only what is missing. Exits
    with status 1 if any run failed.
    """
    started = time.monotonic()
    from plm_bench import plugins
    from plm_bench.cli.profile import device_name
    from plm_bench.config import RunConfig
    from plm_bench.errors import BenchError
    from plm_bench.results import pilot as answers
    from plm_bench.results.records import now
    from plm_bench.results.store import Store, default_store_path
    from plm_bench.run import pilot as planner
    from plm_bench.run.protocol import RunContext
    from plm_bench.tasks.sources import default_data_dir

    seconds = planner.parse_duration(budget)
    if task.endswith(".toml"):
        from plm_bench.tasks.task import use_task_file

        task = use_task_file(Path(task))
    spec = plugins.get("task", task)
    for name in backbones:
        plugins.get("backbone", name)
    unknown = [m for m in methods if m != planner.FROZEN and not plugins.get("method", m).trains_backbone]
    if unknown:
        raise BenchError(f"--methods {','.join(unknown)}: not a fine-tuning method; frozen always runs")
    for name in paths:
        if name not in backbones:
            raise BenchError(f"--backbone-path {name}=...: {name} is not a --backbone of this pilot")
    data = (data_dir or default_data_dir()).resolve()
    shape = planner.Shape.of(spec, data)
    torch_device = RunContext(data_dir=data, device=device).torch_device
    label = device_name(torch_device)
    store_path = store or default_store_path()
    results = Store(store_path)  # profiles are stored, even by a dry run: they are measurements
    memory = planner.memory_budget(torch_device)
    settings = {b: {"init": init, **({"backbone_path": paths[b]} if b in paths else {})} for b in backbones}
    costs: dict = {}
    stored = results.profiles()
    for backbone in backbones:
        for method in (planner.FROZEN, *(m for m in methods if m != planner.FROZEN)):
            cost = planner.stored_cost(stored, backbone, paths.get(backbone), method, label, shape, memory)
            if cost is None:
                err_console.print(f"profiling {backbone} · {method} on {label} (no stored profile matches) ...")
                try:
                    batch = RunConfig(backbone=backbone, task=task, method=method, **settings[backbone]).resolved()
                    cost = planner.measure_cost(results, backbone, paths.get(backbone), init, method, torch_device,
                                                label, shape, batch.batch_size, memory)
                except BenchError as exc:  # e.g. LoRA on one-hot: the other backbones still compare it
                    if method == planner.FROZEN:
                        raise
                    console.print(literal(f"{backbone} · {method}: left out ({exc})"), soft_wrap=True)
                    continue
            costs.setdefault(backbone, {})[method] = cost
            console.print(literal(cost_line(cost)), soft_wrap=True)
    pinned = {k: v for k, v in {"seeds": (seeds,) if seeds else None, "fractions": fractions,
                                "epochs": epochs}.items() if v}
    spent = time.monotonic() - started
    plan = planner.make_plan(task, spec.level, shape, backbones, costs, seconds - spent, label, settings, pinned)
    if min_gain is not None:
        plan.min_gain = min_gain
    done = finished_runs([s.config for s in plan.steps], results, data)
    console.print(plan_table(plan, done))
    console.print(literal(f"plan: {plan.design.describe(shape)}"), soft_wrap=True)
    for note in plan.notes:
        console.print(literal(f"note: {note}"), soft_wrap=True)
    todo_seconds = sum(s.seconds for s in plan.steps if s.config.hash not in done)
    console.print(literal(f"estimated {planner.duration(todo_seconds)} for {len(plan.steps) - len(done)} runs "
                          f"({len(done)} already finished) of a {planner.duration(seconds)} budget, "
                          f"{planner.duration(spent)} of it spent on profiles and planning; every epoch counted "
                          "(early stopping only saves)"), soft_wrap=True)
    if dry_run:
        return

    document = {**plan.document(), "budget_seconds": seconds}  # the user's, profiling included
    plan_file = planner.save(document, store_path, planner.plan_id(plan))
    ran = run(plan, results, store_path, data, device, launcher, workers, extra, log_json, done,
              seconds, started)
    document.update(ran={"seconds": ran["seconds"], "pace": ran["pace"], "left_out": len(ran["skipped"]),
                         "finished": now()})
    planner.save(document, store_path, planner.plan_id(plan))
    failed = sum(r["status"] == "failed" for r in ran["records"])
    console.print(literal(f"pilot took {planner.duration(time.monotonic() - started)} of {planner.duration(seconds)}: "
                          f"{len(ran['records']) - failed} runs finished, {failed} failed, {len(done)} already "
                          f"finished, {len(ran['skipped'])} left out for the budget (plan kept in {plan_file})"),
                  soft_wrap=True)
    if ran["skipped"]:
        console.print(literal(f"{len(ran['skipped'])} run(s) left out to stay within the budget (the runs took "
                              f"{ran['pace'] or 1:.2g}x their estimates); rerun the same command with a larger "
                              "--budget to add them: finished runs are kept"), soft_wrap=True)
    show(answers.answer(document, results.records()))
    if failed:
        err_console.print(literal((f"{failed} run(s) failed", "bold red"), "; rerun the same command to retry them"))
        sys.exit(1)


def cost_line(cost) -> str:
    source = f"profile {cost.profile_id}, {'stored' if cost.reused else 'measured now'}"
    train = f"train {cost.train_rate:,.0f} residues/s, " if cost.train_rate else ""
    memory = "fits memory" if cost.fits else "does NOT fit memory"
    return (f"{cost.backbone} · {cost.method} ({cost.dtype}): {train}inference {cost.inference_rate:,.0f} residues/s, "
            f"{cost.trainable_share:.2%} of {cost.total / 1e6:,.1f}M parameters trainable, {memory} ({source})")


def finished_runs(configs: list, results, data: Path) -> set[str]:
    """The hashes of the plan's runs that are done as `bench run` decides it: finished, on the same
    input files and code (a stale result is run again, or the command stops naming the change)."""
    from plm_bench.run import inputs
    from plm_bench.run.driver import split_done

    _, done = split_done(configs, results, planned=inputs.planned(configs, data))
    return {c.hash for c in done}


def plan_table(plan, done: set[str]) -> Table:
    """One row per backbone, condition and fraction: its seeds and estimated time."""
    from plm_bench.run.pilot import duration

    rows: dict[tuple, list] = {}
    for step in plan.steps:
        key = (step.config.backbone, step.role, f"{step.config.train_fraction:g}")
        seeds, seconds, finished = rows.setdefault(key, [[], 0.0, 0])
        seeds.append(str(step.config.seed))
        rows[key][1] = seconds + step.seconds
        rows[key][2] = finished + (step.config.hash in done)
    table = Table("#", "backbone", "condition", "train fraction", "seeds", "estimated", "finished",
                  title=f"pilot plan: {plan.task}, {plan.design.seeds} seeds", caption="in the order they run")
    for i, ((backbone, role, fraction), (seeds, seconds, finished)) in enumerate(rows.items(), 1):
        table.add_row(str(i), *map(literal, (backbone, role, fraction, ",".join(seeds))), duration(seconds),
                      f"{finished}/{len(seeds)}")
    return table


def run(plan, results, store_path: Path, data: Path, device: str, launcher: str, workers: int | None, extra: dict,
        log_json: Path | None, done: set[str], budget: float, started: float) -> dict:
    """The plan's runs through the driver, as `bench grid` runs a grid, within the budget."""
    from functools import partial

    from plm_bench import plugins
    from plm_bench.results.store import folder_for, pending_folder, resume_folder
    from plm_bench.run.driver import attempt, check_options, drive
    from plm_bench.run.pilot import run_within, waves
    from plm_bench.run.progress import for_command
    from plm_bench.run.protocol import RunContext

    spec = plugins.get("launcher", launcher)
    options = {**({"workers": workers} if workers else {}), **extra}
    if device == "cpu":
        options = {**spec.cpu_options, **options}
    check_options(spec, options)
    progress = for_command(store_path, err_console, log_json)
    context = RunContext(data_dir=data, device=device, progress=progress,
                         artifact_dir=folder_for(store_path).resolve(),
                         pending_dir=pending_folder(store_path).resolve(),
                         resume_dir=resume_folder(store_path).resolve())
    one_by_one = launcher == "local" and (options.get("workers") or 1) == 1
    with progress:
        return run_within(waves(plan.steps, one_by_one), budget,
                          lambda configs: drive(configs, spec, partial(attempt, context=context), results, options,
                                                progress),
                          done, started)


def show(found) -> None:
    """Each backbone's verdict, its evidence and tables, in the terminal."""
    from plm_bench.results.leaderboard import text

    for answer in found:
        for table in (answer.gains, answer.costs):
            out = Table(*table.label_columns, *table.columns, title=table.title, caption="\n".join(table.caption))
            for key, cells in table.rows.items():
                out.add_row(*map(literal, key), *(literal(text(cells.get(c))) for c in table.columns))
            console.print(out)
        for line in answer.evidence:
            console.print(literal(line), soft_wrap=True)
        console.print(literal((f"verdict for {answer.backbone}: {answer.verdict}", "bold")), soft_wrap=True)
