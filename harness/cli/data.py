"""``bench data``: fetch task files into the cache and list what is there.

Attached to ``bench`` by importing this module (cli.py does, last). Only click and rich at
import time, so ``bench --help`` stays fast; the rest loads inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from plm_bench.cli.common import allow_unverified_option, console, data_dir_option, literal
from plm_bench.errors import BenchError
from plm_bench.tasks.sources import default_data_dir

DATA_DIR_HELP = "Data folder laid out <task folder>/<file> (default $PLM_BENCH_DATA, else ~/.cache/plm-bench/data)."


def declarative_tasks(names: tuple[str, ...]) -> list:
    """The named tasks (all declarative ones if none named) whose files live in the data folder;
    code-only tasks have no files, and tasks whose files ship beside their TOML need no fetching."""
    from plm_bench import plugins

    if names:
        tasks = [plugins.get("task", n) for n in names]
        plain = [t.name for t in tasks if not getattr(t, "forms", ())]
        if plain:
            raise BenchError(f"task {plain[0]} is defined in code and names no source files to fetch or list")
        beside = [t for t in tasks if getattr(t, "root", None)]
        if beside:
            raise BenchError(f"task {beside[0].name} reads its files from {beside[0].root}, beside its definition "
                             "(checked when read): there is nothing to fetch or list in the data folder")
        return tasks
    return [t for _, t in sorted(plugins.catalog().items["task"].items())
            if getattr(t, "forms", ()) and not getattr(t, "root", None)]


@click.group()
def data() -> None:
    """Task data: fetch (download, verify, cache) and list what is present."""


@data.command()
@allow_unverified_option
@click.argument("tasks", nargs=-1)
@data_dir_option(DATA_DIR_HELP)
@click.option("--mirror", envvar="PLM_BENCH_MIRROR", metavar="DIR|URL",
              help="Fetch from this mirror (layout <task folder>/<file>) before the upstream URLs "
                   "(default $PLM_BENCH_MIRROR).")
@click.option("--force", is_flag=True, help="Fetch again even where a verified copy is present.")
def fetch(tasks: tuple[str, ...], data_dir: Path | None, mirror: str | None, force: bool) -> None:
    """Download TASKS' files (default: every task) into the data folder and verify them.

    A task whose data comes in several published forms gets the first form that can be
    fetched completely; a copy whose checksum differs is rejected and never cached. The name
    ``study-logs`` fetches the study's training logs (`bench reference logs` reads them).
    """
    from plm_bench.results import study_logs
    from plm_bench.tasks.sources import fetch as fetch_files

    cache = data_dir or default_data_dir()
    table = Table("task", "file", "outcome", title=f"bench data fetch → {cache}")
    incomplete = []
    chosen = declarative_tasks(tuple(t for t in tasks if t != study_logs.FOLDER))
    if study_logs.FOLDER in tasks:
        chosen = chosen if len(tasks) > 1 else []  # named alone: the logs only, not every task
        for outcome in fetch_files(study_logs.FOLDER, [study_logs.SOURCE], cache, mirror=mirror, force=force):
            table.add_row(literal(study_logs.FOLDER), literal(outcome.source.file),
                          literal((outcome.message, "" if outcome.ok else "red")))
            if not outcome.ok:
                incomplete.append(study_logs.FOLDER)
    for task in chosen:
        for form in task.forms:
            outcomes = fetch_files(task.data_folder, form.sources, cache, mirror=mirror, force=force)
            for outcome in outcomes:
                table.add_row(literal(task.name), literal(outcome.source.file),
                              literal((outcome.message, "" if outcome.ok else "red")))
            if all(o.ok for o in outcomes):
                break
        else:
            incomplete.append(task.name)
    console.print(table)
    if incomplete:
        raise BenchError(f"incomplete: {', '.join(incomplete)} (see the table above for each file and how to "
                         "supply it)")


@data.command("list")
@click.argument("tasks", nargs=-1)
@data_dir_option(DATA_DIR_HELP)
def list_(tasks: tuple[str, ...], data_dir: Path | None) -> None:
    """Per task: each source file present / missing / corrupt / unverified, and the records
    of each split that the present files give."""
    folder = data_dir or default_data_dir()
    table = Table("task", "format", "file", "status", "records (train / valid / test)", "repeated sequences",
                  title=f"task data in {folder}")
    table.columns[2].overflow = "fold"
    colours = {"present": "green", "unverified": "yellow", "missing": "red", "corrupt": "bold red"}
    for task in declarative_tasks(tasks):
        root = folder / task.data_folder
        records, repeats = count_records(task, folder, root)
        for i, (form, source, state) in enumerate(task.source_status(root)):
            table.add_row(literal(task.name if i == 0 else ""), literal(form.format),
                          literal(f"{task.data_folder}/{source.file}"), literal((state, colours[state])),
                          records if i == 0 else "", repeats if i == 0 else "")
    console.print(table)


def count_records(task, data_dir: Path, root: Path) -> tuple[Text, Text]:
    """Records per split and the sequences repeated within or across the present splits."""
    from plm_bench.tasks.overlap import duplicates

    present = task.present_splits(root)
    try:
        splits = task.load(data_dir, splits=present) if present else {}
    except BenchError as exc:
        return literal((str(exc), "red")), literal("")
    counts = " / ".join(str(len(splits[s])) if s in splits else "—" for s in ("train", "valid", "test"))
    return literal(counts), literal(duplicates(splits).summary() if splits else "")



@data.command()
@click.argument("task")
@data_dir_option(DATA_DIR_HELP)
@click.option("--split", "splits", type=click.Choice(["test", "valid"]), multiple=True,
              help="Splits to compare with train (repeatable; default: test and valid).")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="Best-scoring training sequences aligned in full per query.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write each protein's nearest training protein and identity as CSV.")
def overlap(task: str, data_dir: Path | None, splits: tuple[str, ...], top: int, output: Path | None) -> None:
    """Leakage: each test (and valid) protein's highest sequence identity to any training protein."""
    import csv

    from plm_bench import plugins
    from plm_bench.tasks.overlap import THRESHOLDS, above, histogram, nearest

    chosen = splits or ("test", "valid")
    loaded = plugins.get("task", task).load(data_dir or default_data_dir())
    train = [(e.id, e.sequence) for e in loaded["train"]]
    found = {s: nearest([(e.id, e.sequence) for e in loaded[s]], train, top=top) for s in chosen}
    table = Table("identity to train", *chosen, title=f"{task}: highest identity of each protein to the "
                  f"{len(train)} training proteins")
    columns = {s: histogram([n.identity for n in found[s]]) for s in chosen}
    for i, (low, high, _) in enumerate(columns[chosen[0]]):
        table.add_row(f"{low:.0%}–{high:.0%}", *(str(columns[s][i][2]) for s in chosen))
    for threshold in THRESHOLDS:
        table.add_row(f"≥ {threshold:.0%}", *(str(above([n.identity for n in found[s]])[threshold]) for s in chosen),
                      style="bold")
    console.print(table)
    if output:
        from plm_bench.files import atomic_file

        with atomic_file(output) as replacement, open(replacement.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "id", "nearest_train_id", "identity"])
            for s in chosen:
                writer.writerows([s, n.query, n.train, f"{n.identity:.4f}"] for n in found[s])
        console.print(f"identities written to {output}", highlight=False)
