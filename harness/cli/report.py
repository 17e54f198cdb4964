"""``bench report``: the store's answer per task (fine-tune or not, at what cost) as one page."""

from __future__ import annotations

from pathlib import Path

import click

from plm_bench.cli.common import console, data_dir_option, store_option
from plm_bench.cli.leaderboard import filter_options, selected, study_logs_in
from plm_bench.files import atomic_file


@click.command()
@store_option()
@filter_options
@click.option("--smoke", is_flag=True, help="Include smoke runs (--limit-train/--limit-eval), hidden by default.")
@click.option("--metric", help="Test metric to report (default: each task's primary metric).")
@click.option("--ci", type=click.Choice(["t", "normal"]), default="t", show_default=True,
              help="Seed CI: t-distribution, or normal (1.96·SE, the study's rule in Tables S3-S6).")
@click.option("--overlap", is_flag=True,
              help="Add a leakage summary: align every test protein of the report's tasks against their training "
                   "sets (as `bench data overlap`; seconds for disorder, minutes for the large tasks).")
@data_dir_option("Task data folder for --overlap, and where study-logs/training_logs.zip is read for the study "
                 "section (default $PLM_BENCH_DATA).")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the report here.")
def report(store: Path | None, tasks: tuple[str, ...], backbones: tuple[str, ...], methods: tuple[str, ...],
           where: tuple[str, ...], smoke: bool, metric: str | None, ci: str, overlap: bool, data_dir: Path | None,
           fmt: str, output: Path) -> None:
    """One self-contained page from the store: fine-tuned − frozen heatmap with significance, accuracy vs
    cost with Pareto fronts, the memory envelope from `bench profile`, learning curves, sensitivity to
    varying settings, leakage, a recommendation per task, and each `bench pilot`'s answer."""
    from plm_bench.results import pilot
    from plm_bench.results import report as rp
    from plm_bench.results.store import Store
    from plm_bench.tasks.sources import default_data_dir

    records, notes = selected(store, tasks, backbones, methods, where, smoke)
    results = Store(store, read_only=True)
    profiles = [p for p in results.profiles() if (not backbones or p["backbone"] in backbones)
                and (not methods or p["method"] in methods)]  # --task and --where select runs only
    found = None
    if overlap:
        found = []
        for task in sorted({r["config"]["task"] for r in records}):
            found.append(rp.leakage(task, data_dir or default_data_dir()))
            console.print(f"overlap {task}: {found[-1].seconds:.1f} s", highlight=False)
    logs = study_logs_in(data_dir, notes) if any(r["config"].get("protocol") == "study" for r in records) else None
    pilots = pilot.sections(results.path, results.records(), ci)  # its runs, smoke or not, whatever the filters
    sections = rp.build(records, metric, ci, found, notes, profiles, str(results.path), logs) \
        if records or profiles or not pilots else []
    text = rp.render(sections + pilots, fmt)
    with atomic_file(output) as replacement:  # an interrupted write leaves the old report whole
        replacement.path.write_text(text)
    console.print(f"{fmt} report written to {output}", highlight=False)
