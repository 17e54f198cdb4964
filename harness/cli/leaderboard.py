"""``bench leaderboard``: stored test scores aggregated over seeds, deltas, cost, exports."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import console
from plm_bench.errors import BenchError


@click.command()
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
    from plm_bench.results import leaderboard as lb
    from plm_bench.results.store import Store

    records = lb.select(Store(store, read_only=True).records(), tasks, backbones, methods)
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
    from plm_bench.results.leaderboard import text

    colour = {"gain": "green", "loss": "red", "outside study CI": "red"}.get(getattr(value, "flag", ""), "")
    return f"[{colour}]{text(value)}[/]" if colour else text(value)
