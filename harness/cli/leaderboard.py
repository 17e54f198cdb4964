"""``bench leaderboard``: stored test scores aggregated over seeds per condition, deltas, cost, exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from plm_bench.cli.common import console, data_dir_option, literal, store_option
from plm_bench.errors import BenchError
from plm_bench.files import atomic_file


def filter_options(command: Callable) -> Callable:
    """The filters ``bench leaderboard`` and ``bench runs`` share."""
    for option in reversed((
        click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable)."),
        click.option("--backbone", "backbones", multiple=True, help="Only these backbones (repeatable)."),
        click.option("--method", "methods", multiple=True, help="Only these methods (repeatable)."),
        click.option("--where", "where", multiple=True, metavar="FIELD=VALUE",
                     help="Only runs whose setting FIELD (any `bench run` setting, e.g. init, lr, limit_train, "
                          "or a method option, e.g. rank) equals VALUE (none: unset); repeatable."),
    )):
        command = option(command)
    return command


def selected(store: Path | None, tasks, backbones, methods, where, smoke: bool, status: str | None = "finished"
             ) -> tuple[list[dict], list[str]]:
    """The stored records the filters keep, and notes on what they left out."""
    from plm_bench.results import leaderboard as lb
    from plm_bench.results.store import Store

    return lb.select(Store(store, read_only=True).records(status), lb.parse_where(where), smoke,
                     task=tasks, backbone=backbones, method=methods)


@click.command()
@store_option()
@filter_options
@click.option("--smoke", is_flag=True, help="Include smoke runs (--limit-train/--limit-eval), hidden by default.")
@click.option("--metric", help="Test metric to show (default: each task's primary metric).")
@click.option("--by", "by", multiple=True, metavar="FIELD",
              help="Group rows by this setting or method option (e.g. layer, top_layers, rank): it leads the "
                   "row labels, shown even when constant (repeatable).")
@click.option("--ci", type=click.Choice(["t", "normal"]), default="t", show_default=True,
              help="Seed CI: t-distribution, or normal (1.96·SE, the study's rule in Tables S3-S6, to reproduce "
                   "its tables).")
@click.option("--delta", "baseline", metavar="METHOD|init|FIELD=VALUE",
              help="Gain over the baseline condition matching each row in every other setting: a method "
                   "(e.g. frozen), init (over random weights) or FIELD=VALUE (a setting or a method option, "
                   "e.g. rank=4); paired over seeds and by the "
                   "study's Figure-1 rule.")
@click.option("--cost", is_flag=True, help="One row per task and condition: embedding, training and total time, "
                                           "time to best, peak memory and its kind, backbone dtype.")
@click.option("--pareto", is_flag=True, help="Per task: which conditions are on the metric-vs-cost front.")
@click.option("--cost-axis", default="total (s)", show_default=True,
              help="The cost --pareto uses: total (s), train (s), time to best (s) or peak memory (GiB).")
@click.option("--reference", is_flag=True,
              help="Add the study's published values beside pretrained runs of the study protocol (flag "
                   "results whose CI misses theirs), and its logged runs of the same condition where "
                   "`bench data fetch study-logs` put them in the data folder.")
@data_dir_option("Data folder holding study-logs/training_logs.zip, for --reference (default $PLM_BENCH_DATA).")
@click.option("--format", "fmt", type=click.Choice(["table", "md", "csv", "json", "html"]), default="table",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the export here.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw a heatmap PNG here.")
def leaderboard(store: Path | None, tasks: tuple[str, ...], backbones: tuple[str, ...], methods: tuple[str, ...],
                where: tuple[str, ...], smoke: bool, metric: str | None, by: tuple[str, ...], ci: str,
                baseline: str | None, cost: bool, pareto: bool, cost_axis: str, reference: bool,
                data_dir: Path | None, fmt: str, output: Path | None, plot: Path | None) -> None:
    """Test scores as mean ± 95% CI over seeds: one row per condition (every setting but the seed),
    columns tasks; settings the same for every row are listed under the table."""
    from plm_bench.results import leaderboard as lb

    records, notes = selected(store, tasks, backbones, methods, where, smoke)
    if not records:
        raise BenchError("no finished runs match; start with `bench run`, loosen the filters, or add --smoke"
                         if notes else "no finished runs match; start with `bench run` or loosen the filters")
    if pareto:
        report = lb.pareto(records, cost_axis, metric, ci, by)
    elif cost:
        report = lb.costs(records, metric, ci, by)
    elif baseline:
        report = lb.delta(records, baseline, metric, ci, by)
    else:
        logs = study_logs_in(data_dir, notes) if reference else None
        report = lb.leaderboard(records, metric, reference, ci, by, logs)
    if not report.rows:
        raise BenchError("no run has the values this report needs; see `bench runs`")
    report.caption += notes
    if plot:
        lb.heatmap(report, plot)
        console.print(literal(f"heatmap written to {plot}"))
    if fmt != "table":
        text = lb.render(report, fmt)
        if output:
            with atomic_file(output) as replacement:  # an interrupted export leaves the old file whole
                replacement.path.write_text(text)
            console.print(literal(f"{fmt} written to {output}"))
        else:
            click.echo(text, nl=False)
        return
    table = Table(*report.label_columns, *report.columns, title=report.title, caption="\n".join(report.caption))
    for key, cells in report.rows.items():  # names are user text: `console` reads no markup in them
        table.add_row(*key, *(styled(cells.get(c)) for c in report.columns))
    console.print(table)


def study_logs_in(data_dir: Path | None, notes: list[str]) -> dict | None:
    """The study's logged runs, if fetched; otherwise a note saying how to add them."""
    from plm_bench.results import study_logs
    from plm_bench.tasks.sources import default_data_dir

    try:
        return study_logs.load(study_logs.logs_path(data_dir or default_data_dir()))
    except BenchError as exc:
        notes.append(f"study logs not shown: {exc}")
        return None


def styled(value) -> Text:
    """A leaderboard cell: gains green, losses and off-reference results red."""
    from plm_bench.results.leaderboard import text

    flags = getattr(value, "flags", ())
    colour = "green" if "gain" in flags else "red" if {"loss", "outside study CI"} & set(flags) else ""
    return literal((text(value), colour))
