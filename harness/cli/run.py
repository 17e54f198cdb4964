"""``bench run``: one backbone on one task, once per seed."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import allow_unverified_option, console, err_console, literal, parse_options
from plm_bench.errors import BenchError
from plm_bench.tasks.sources import default_data_dir


@click.command()
@allow_unverified_option
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

    from plm_bench.results.store import Store, failed_record, folder_for
    from plm_bench.run.protocol import RunConfig, RunContext, environment, execute

    if seed_list and seed_count:
        raise BenchError("give either --seed (explicit seeds) or --seeds N, not both")
    if task.endswith(".toml"):  # the user's own task file, registered for this process and its workers
        from plm_bench.tasks.task import use_task_file

        task = use_task_file(Path(task))
    results = Store(store)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True,
                        disable=not console.is_terminal)  # in logs and pipes a bar is only noise
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
            console.print(literal(f"already done: {backbone} {task} {method} seed {seed} "
                                  f"(run {record['run_id']}); use --force to rerun"), soft_wrap=True)
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
            err_console.print(literal((f"run {record['run_id']} failed:", "red"), f" {record['error']}"),
                              soft_wrap=True)
            table.add_row(str(record["run_id"]), *map(literal, (backbone, task, method)), str(seed), "—", "—", status)
            continue
        for warning in record.get("warnings", []):
            err_console.print(literal((f"run {record['run_id']} warning:", "yellow"), f" {warning}"), soft_wrap=True)
        metric = record["primary_metric"]
        ci = record["test_ci"]
        table.add_row(str(record["run_id"]), *map(literal, (backbone, task, method)), str(seed),
                      f"{record['metrics']['valid'][metric]:.4f}",
                      f"{record['metrics']['test'][metric]:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]", status)
        table.title = f"test {metric}"
    console.print(table)
    if failures:
        sys.exit(1)
