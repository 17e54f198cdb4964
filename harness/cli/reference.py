"""``bench reference``: what the study reached, as a yardstick for your runs.

``bench reference logs`` reads the study's own training logs (fetched with ``bench data fetch
study-logs``) for one condition and prints each seed's test value under each selection rule.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import console, data_dir_option, literal
from plm_bench.tasks.sources import default_data_dir

RULE_TEXT = {"valid-loss": "lowest validation loss", "best-test": "best test epoch", "last": "last epoch"}


@click.group()
def reference() -> None:
    """The study's published values and training logs, to compare your runs with."""


@reference.command()
@click.option("--backbone", required=True, help="Backbone name, e.g. esm2-8m.")
@click.option("--task", required=True, help="Task name, e.g. disorder.")
@click.option("--method", required=True, help="frozen, full or lora (what the study ran).")
@click.option("--init", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
              help="random: the study's fine-tuning from random weights (ESM2-8M and -150M, full).")
@data_dir_option("Data folder holding study-logs/training_logs.zip (default $PLM_BENCH_DATA); "
                 "`bench data fetch study-logs` puts it there.")
def logs(backbone: str, task: str, method: str, init: str, data_dir: Path | None) -> None:
    """The study's logged test value of a condition under each selection rule, per seed and over
    seeds (mean ± 1.96·SD/√n, the study's rule), with the epoch each rule picked."""
    from plm_bench.results.study_logs import condition_logs, summaries

    runs = condition_logs(data_dir or default_data_dir(), backbone, task, method, init)
    table = Table("rule", *(f"seed {r.seed}" for r in runs), "mean ± 1.96·SD/√n",
                  title=f"study logs: {backbone} {method} ({init} init) on {task}, test primary metric",
                  caption="each seed: test value @ epoch the rule picked; schedule "
                          + "; ".join(f"seed {r.seed}: {r.epochs} epochs × {r.val_per_epoch} validations "
                                      f"({r.file})" for r in runs))
    for rule, summary in summaries(runs).items():
        cells = [f"{p.test:.4f} @ {p.epoch:g}" if (p := r.picks[rule]) else "not logged" for r in runs]
        spread = "—" if summary is None else (f"{summary.mean:.4f}" + (
            f" ± {summary.half_width:.4f}" if summary.half_width is not None else ""))
        table.add_row(literal(RULE_TEXT[rule]), *cells, spread)
    console.print(table)
