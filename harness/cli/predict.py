"""``bench predict --run RUN_ID input.fasta -o out.csv``: a finished run predicts new sequences
(harness/run/predict.py). Heavy imports happen inside the command, so ``bench --help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import click

from plm_bench.cli.common import console, device_option, literal, store_option
from plm_bench.errors import BenchError


@click.command()
@click.option("--run", "run_id", type=int, required=True, help="Run id (the `run` column of `bench runs`).")
@click.argument("fasta", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV to write: one row per protein, or per residue for residue-level tasks.")
@store_option()
@device_option
@click.option("--task-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The task TOML of a run made with `bench run --task FILE.toml`.")
def predict(run_id: int, fasta: Path, output: Path, store: Path | None, device: str, task_file: Path | None) -> None:
    """Predict the sequences of FASTA with the trained model of run RUN_ID."""
    from plm_bench.results.store import Store
    from plm_bench.run.predict import finished_run, predict_examples, write_csv
    from plm_bench.tasks.fasta import read_examples
    from plm_bench.tasks.task import use_task_file

    if not output.parent.is_dir():
        raise BenchError(f"-o {output}: the folder {output.parent} does not exist; create it or write elsewhere")
    if task_file:
        use_task_file(task_file)
    results = Store(store, read_only=True)
    record = finished_run(results, run_id)
    examples = read_examples(fasta)
    task, predictions = predict_examples(record, results.path, examples, device)
    rows = write_csv(output, task, examples, predictions)
    console.print(literal(f"wrote {rows} rows for {len(examples)} sequences to {output} "
                          f"(run {run_id}: {record['config']['backbone']} {record['config']['method']} "
                          f"on {record['config']['task']})"), soft_wrap=True)
