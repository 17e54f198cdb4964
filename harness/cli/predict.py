"""``bench predict --run RUN_ID input.fasta -o out.csv``: a finished run predicts new sequences.

The run's model is rebuilt from its recorded config (same backbone weights, method and head)
and its saved trainable weights are loaded back, so the predictions are the run's own: on
the run's test sequences they reproduce its test predictions exactly. Heavy imports happen
inside the command, so ``bench --help`` stays fast.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from plm_bench.cli.common import console
from plm_bench.errors import BenchError

if TYPE_CHECKING:
    import numpy as np

    from plm_bench.results.store import Store
    from plm_bench.tasks.task import Example, Task


@click.command()
@click.option("--run", "run_id", type=int, required=True, help="Run id (the `run` column of `bench run`).")
@click.argument("fasta", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV to write: one row per protein, or per residue for residue-level tasks.")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path),
              help="Results store (default $PLM_BENCH_STORE or ./bench-results.sqlite).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--task-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The task TOML of a run made with `bench run --task FILE.toml`.")
def predict(run_id: int, fasta: Path, output: Path, store: Path | None, device: str, task_file: Path | None) -> None:
    """Predict the sequences of FASTA with the trained model of run RUN_ID."""
    from plm_bench.results.store import Store
    from plm_bench.tasks.task import use_task_file

    if task_file:
        use_task_file(task_file)
    results = Store(store)
    record = finished_run(results, run_id)
    examples = read_examples(fasta)
    task, predictions = predict_examples(record, results.path, examples, device)
    rows = write_csv(output, task, examples, predictions)
    console.print(f"wrote {rows} rows for {len(examples)} sequences to {output} "
                  f"(run {run_id}: {record['config']['backbone']} {record['config']['method']} "
                  f"on {record['config']['task']})", highlight=False)


def finished_run(store: Store, run_id: int) -> dict[str, Any]:
    """The record of run ``run_id``, which must have finished and saved its weights."""
    for record in store.records(status="finished"):
        if record["run_id"] == run_id:
            if "artifact" not in record:
                raise BenchError(f"run {run_id} in {store.path} saved no weights (it ran without an artifact "
                                 "folder); rerun it with `bench run ... --force`")
            return record
    raise BenchError(f"{store.path} has no finished run {run_id}; see `bench leaderboard` or pass --store")


def read_examples(fasta: Path) -> list[Example]:
    """The FASTA's records as unlabelled examples, checked like task data."""
    from plm_bench.alphabet import check_sequence
    from plm_bench.tasks.fasta import read_fasta
    from plm_bench.tasks.task import Example

    try:
        text = fasta.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{fasta}: cannot read it as text ({exc})") from None
    examples, seen = [], set()
    for name, _header, lines, line in read_fasta(text, str(fasta)):
        if name in seen:
            raise BenchError(f"{fasta} line {line}: id {name} appears twice; ids name the output rows, "
                             "make them unique")
        seen.add(name)
        sequence = check_sequence("".join(lines).upper(), f"{fasta} record {name} (line {line})")
        examples.append(Example(id=name, sequence=sequence, label=None))
    return examples


def predict_examples(record: dict[str, Any], store_path: Path, examples: list[Example],
                     device: str = "auto") -> tuple[Task, list[np.ndarray]]:
    """The run's task and its raw predictions for ``examples`` (values, or class scores; arrays
    over residues for residue tasks), exactly as the run computed test predictions."""
    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.results.artifacts import folder_for, load_into, verified_path
    from plm_bench.run.protocol import RunContext, build, frozen_features
    from plm_bench.run.training import predict

    try:
        config = RunConfig(**record["config"])
    except TypeError as exc:
        raise BenchError(f"run {record.get('run_id')}: its config does not match this plm-bench version "
                         f"({exc}); rerun it with this version") from None
    weights = verified_path(folder_for(store_path), record["artifact"])
    if config.task not in plugins.catalog().items["task"]:
        raise BenchError(f"run {record.get('run_id')} is on task {config.task}, which no installed plugin provides: "
                         "for a task from a TOML file, pass --task-file FILE.toml")
    context = RunContext(data_dir=Path("."), device=device)
    task = plugins.get("task", config.task)
    backbone, model = build(config, task, context.torch_device)
    load_into(model, weights)
    features = frozen_features(backbone, {"input": examples}, config, context)["input"] if model.backbone is None \
        else None
    return task, predict(model, examples, features, config.batch_size)


def write_csv(output: Path, task: Task, examples: list[Example], predictions: list[np.ndarray]) -> int:
    """One row per protein (``id,prediction``) or per residue (``id,position,residue,prediction``);
    classification adds the class name as prediction and a probability column per class.
    Values are written with full float precision, so reading them back gives the exact numbers."""
    import numpy as np
    import torch

    classify = task.type == "classification"
    residue = task.level == "residue"
    header = ["id", *(["position", "residue"] if residue else []), "prediction",
              *([f"p_{name}" for name in task.classes] if classify else [])]
    rows = 0
    with open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for example, prediction in zip(examples, predictions, strict=True):
            values = np.asarray(prediction, dtype=np.float32)
            if classify:
                probabilities = torch.softmax(torch.from_numpy(values), dim=-1).numpy()
                cells = [[task.classes[int(p.argmax())], *map(repr, p.astype(float).tolist())]
                         for p in np.atleast_2d(probabilities)]
            else:
                cells = [[repr(v)] for v in np.atleast_1d(values).astype(float).tolist()]
            if residue:
                for position, (aa, cell) in enumerate(zip(example.sequence, cells, strict=True), start=1):
                    writer.writerow([example.id, position, aa, *cell])
            else:
                writer.writerow([example.id, *cells[0]])
            rows += len(cells) if residue else 1
    return rows
