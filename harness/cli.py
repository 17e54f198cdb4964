"""The ``bench`` command line.

Imports of torch and the plugins happen inside the commands, so ``bench --help`` stays fast.
Every :class:`BenchError` is printed as one red line, with exit status 2 — no traceback.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from plm_bench.errors import BenchError

console = Console()
err_console = Console(stderr=True)


class BenchGroup(click.Group):
    """Turns user-fixable errors into one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=BenchGroup)
@click.version_option(package_name="plm-bench")
def main() -> None:
    """plm-bench: does fine-tuning this protein language model help, and at what cost?"""


@main.command("list")
@click.argument("kind", required=False,
                type=click.Choice(["backbone", "task", "head", "method", "launcher"]))
def list_(kind: str | None) -> None:
    """List registered plugins' items (and plugins that failed to load)."""
    from plm_bench.plugins import catalog

    cat = catalog()
    table = Table("name", "kind", "distribution", "description")
    for k, items in cat.items.items():
        if kind and k != kind:
            continue
        for name, item in sorted(items.items()):
            table.add_row(name, k, cat.providers[(k, name)].split(":")[0], item.description)
    console.print(table)
    for label, error in cat.broken.items():
        err_console.print(f"[red]broken plugin[/] {label}: {error}", highlight=False)


def default_data_dir() -> Path:
    return Path(os.environ.get("PLM_BENCH_DATA", Path.home() / ".cache" / "plm-bench" / "data"))


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; values parse as JSON where they can (numbers, lists, booleans)."""
    import json

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--method-option {pair!r}: write it as KEY=VALUE, e.g. rank=8")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@main.command()
@click.option("--backbone", required=True, help="Backbone name (see `bench list backbone`).")
@click.option("--task", required=True, help="Task name (see `bench list task`), or the path of your own task TOML.")
@click.option("--method", default="frozen", show_default=True, help="Adaptation method.")
@click.option("--head", default="auto", show_default=True, help="Prediction head; auto picks by task level.")
@click.option("--seed", "seed_list", type=int, multiple=True, help="Seed; repeat for several runs.")
@click.option("--seeds", "seed_count", type=click.IntRange(min=1),
              help="Run seeds 1..N (the study: 5 for frozen embeddings, 3 for fine-tuning).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate (default: the method's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path),
              help="Results store (default $PLM_BENCH_STORE or ./bench-results.sqlite).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Task data folder laid out <task>/<file> (default $PLM_BENCH_DATA).")
@click.option("--backbone-path", type=click.Path(exists=True, file_okay=False),
              help="Load the backbone's weights from this local directory instead of its hub id.")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
              help="random: the architecture with random weights (how much does pretraining add?).")
@click.option("--long-policy", type=click.Choice(["error", "chunk"]), default="error", show_default=True,
              help="Sequences longer than the backbone's maximum: fail naming them, or chunk.")
@click.option("--method-option", "method_options", multiple=True, metavar="KEY=VALUE",
              help="Option of the method, e.g. rank=8; repeatable.")
@click.option("--limit-train", type=click.IntRange(min=1), help="Use only the first N training examples.")
@click.option("--limit-eval", type=click.IntRange(min=1), help="Use only the first N validation and test examples.")
@click.option("--val-per-epoch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Validations per epoch.")
@click.option("--patience", type=click.IntRange(min=1),
              help="Stop after this many validations without improvement (default: never).")
@click.option("--min-delta", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Smallest validation gain that counts as an improvement.")
@click.option("--checkpoint", type=click.Choice(["early-stop", "best-of-N"]), default="early-stop",
              show_default=True, help="Report the early-stopping checkpoint, or train all epochs and report "
              "the best (both are recorded when all epochs run).")
@click.option("--force", is_flag=True, help="Rerun configs that already finished.")
def run(backbone: str, task: str, method: str, head: str, seed_list: tuple[int, ...], seed_count: int | None,
        epochs: int,
        lr: float | None, batch_size: int, device: str, store: Path | None, data_dir: Path | None,
        backbone_path: str | None, dtype: str, init: str, long_policy: str, method_options: tuple[str, ...],
        limit_train: int | None, limit_eval: int | None, val_per_epoch: int, patience: int | None,
        min_delta: float, checkpoint: str, force: bool) -> None:
    """Train and evaluate one backbone on one task, once per seed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from plm_bench.artifacts import folder_for
    from plm_bench.protocol import RunConfig, RunContext, environment, execute
    from plm_bench.store import Store, failed_record

    if seed_list and seed_count:
        raise BenchError("give either --seed (explicit seeds) or --seeds N, not both")
    if task.endswith(".toml"):  # the user's own task file, registered for this process and its workers
        from plm_bench.task import use_task_file

        task = use_task_file(Path(task))
    results = Store(store)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    context = RunContext(data_dir=data_dir or default_data_dir(), device=device, progress=progress,
                         artifact_dir=folder_for(results.path))
    table = Table("run", "backbone", "task", "method", "seed", "valid", "test [95% CI]", "status")
    failures = 0
    for seed in seed_list or range(1, (seed_count or 1) + 1):
        config = RunConfig(backbone=backbone, task=task, method=method, head=head, seed=seed,
                           epochs=epochs, lr=lr, batch_size=batch_size, backbone_path=backbone_path,
                           dtype=dtype, init=init, long_policy=long_policy,
                           method_options=parse_options(method_options),
                           limit_train=limit_train, limit_eval=limit_eval, val_per_epoch=val_per_epoch,
                           patience=patience, min_delta=min_delta, checkpoint=checkpoint).resolved()
        record = None if force else results.finished(config.hash)
        status = "already done"
        if record:
            console.print(f"already done: {backbone} {task} {method} seed {seed} "
                          f"(run {record['run_id']}); use --force to rerun")
        else:
            try:
                with progress:
                    record = execute(config, context)
            except BenchError:
                raise  # a problem the user must fix first: one line, nothing stored
            except Exception as exc:  # a crash mid-run is recorded as failed; other seeds go on
                record = failed_record(config, f"{type(exc).__name__}: {exc}", environment(context.torch_device))
            record["run_id"] = results.add(record)
            status = record["status"]
        if status == "failed":
            failures += 1
            err_console.print(f"[red]run {record['run_id']} failed:[/] {record['error']}", highlight=False)
            table.add_row(str(record["run_id"]), backbone, task, method, str(seed), "—", "—", status)
            continue
        metric = record["primary_metric"]
        ci = record["test_ci"]
        table.add_row(str(record["run_id"]), backbone, task, method, str(seed),
                      f"{record['metrics']['valid'][metric]:.4f}",
                      f"{record['metrics']['test'][metric]:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]", status)
        table.title = f"test {metric}"
    console.print(table)
    if failures:
        sys.exit(1)


@main.command()
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path),
              help="Results store (default $PLM_BENCH_STORE or ./bench-results.sqlite).")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@click.option("--backbone", "backbones", multiple=True, help="Only these backbones (repeatable).")
@click.option("--method", "methods", multiple=True, help="Only these methods (repeatable).")
@click.option("--metric", help="Test metric to show (default: each task's primary metric).")
@click.option("--delta", "baseline", metavar="METHOD",
              help="Show the gain over METHOD (e.g. frozen), paired over seeds, instead of raw scores.")
@click.option("--cost", is_flag=True, help="One row per task with peak memory, times and residues/s.")
@click.option("--pareto", is_flag=True, help="Per task: which settings are on the metric-vs-cost front.")
@click.option("--cost-axis", type=click.Choice(["train time (s)", "peak memory (GiB)", "time to best (s)"]),
              default="train time (s)", show_default=True, help="The cost used by --pareto.")
@click.option("--reference", is_flag=True, help="Add the study's published values, flag results outside their CI.")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json", "html"]), default="table",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the export here.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw a heatmap PNG here.")
def leaderboard(store: Path | None, tasks: tuple[str, ...], backbones: tuple[str, ...], methods: tuple[str, ...],
                metric: str | None, baseline: str | None, cost: bool, pareto: bool, cost_axis: str,
                reference: bool, fmt: str, output: Path | None, plot: Path | None) -> None:
    """Test scores as mean ± 95% CI over seeds: rows backbone × method × head, columns tasks."""
    from plm_bench import leaderboard as lb
    from plm_bench.store import Store

    records = lb.select(Store(store).records(), tasks, backbones, methods)
    if not records:
        raise BenchError("no finished runs match; start with `bench run` or loosen the filters")
    if pareto:
        report = lb.pareto(records, cost_axis, metric)
    elif cost:
        report = lb.costs(records, metric)
    elif baseline:
        report = lb.delta(records, baseline, metric)
    else:
        report = lb.leaderboard(records, metric, reference)
    if plot:
        lb.heatmap(report, plot)
        console.print(f"heatmap written to {plot}")
    if fmt != "table":
        text = lb.render(report, fmt)
        if output:
            output.write_text(text)
            console.print(f"{fmt} written to {output}")
        else:
            click.echo(text, nl=False)
        return
    table = Table(*report.label_columns, *report.columns, title=report.title)
    for key, cells in report.rows.items():
        table.add_row(*key, *(styled(cells.get(c)) for c in report.columns))
    console.print(table)


def styled(value) -> str:
    """Rich markup for a leaderboard cell: gains green, losses and off-reference results red."""
    from plm_bench.leaderboard import text

    colour = {"gain": "green", "loss": "red", "outside study CI": "red"}.get(getattr(value, "flag", ""), "")
    return f"[{colour}]{text(value)}[/]" if colour else text(value)


# Subcommand groups live in their own modules, which import `main` from here to attach
# themselves; importing them last keeps `bench --help` free of torch.
for _commands in ("cli_data", "cli_models", "cli_grid", "cli_predict", "cli_profile"):
    import_module(f"plm_bench.{_commands}")
