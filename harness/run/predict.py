"""A finished run predicts new sequences: its model rebuilt from the recorded config (same
backbone weights, method and head) with its saved trainable weights loaded back, so on the run's
test sequences the predictions reproduce its test predictions exactly."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file

if TYPE_CHECKING:
    import numpy as np

    from plm_bench.results.store import Store
    from plm_bench.tasks.task import Example, Task


def finished_run(store: Store, run_id: int) -> dict[str, Any]:
    """The record of run ``run_id``, which must have finished and saved its weights."""
    for record in store.records(status="finished"):
        if record["run_id"] == run_id:
            if "artifact" not in record:
                raise BenchError(f"run {run_id} in {store.path} saved no weights (it ran without an artifact "
                                 "folder); rerun it with `bench run ... --force`")
            return record
    raise BenchError(f"{store.path} has no finished run {run_id}; `bench runs` lists them, or pass --store")


def predict_examples(record: dict[str, Any], store_path: Path, examples: list[Example],
                     device: str = "auto") -> tuple[Task, list[np.ndarray]]:
    """The run's task and its raw predictions for ``examples`` (values, or class scores; arrays
    over residues for residue tasks), exactly as the run computed test predictions."""
    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.results.artifacts import load_into, verified_path
    from plm_bench.results.store import folder_for
    from plm_bench.run.protocol import RunContext, build, frozen_features
    from plm_bench.run.training import predict

    try:
        config = RunConfig(**record["config"])
    except TypeError as exc:
        raise BenchError(f"run {record.get('run_id')}: its config does not match this plm-bench version "
                         f"({exc}); rerun it with this version") from None
    weights = verified_path(folder_for(store_path), record["artifact"])
    tasks = plugins.catalog().items["task"]
    if config.task not in tasks:
        base = config.task.partition("@")[0]
        edited = [name for name in tasks if "@" in config.task and name.partition("@")[0] == base]
        if edited:
            raise BenchError(f"run {record.get('run_id')} was trained on task {config.task}, but the task file given "
                             f"is {edited[0]}: its definition or data changed since; give the files as they were, "
                             "or rerun the run")
        raise BenchError(f"run {record.get('run_id')} is on task {config.task}, which no installed plugin provides: "
                         "for a task from a TOML file, pass --task-file FILE.toml")
    context = RunContext(data_dir=Path("."), device=device)
    task = plugins.get("task", config.task)
    backbone, model = build(config, task, context.torch_device)
    load_into(model, weights)
    features = (frozen_features(backbone, {"input": examples}, config, context, precision=model.precision)["input"]
                if model.backbone is None else None)
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
    with atomic_file(output) as replacement, open(replacement.path, "w", newline="") as handle:  # never half a file
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
            name = inert(example.id)
            if residue:
                for position, (aa, cell) in enumerate(zip(example.sequence, cells, strict=True), start=1):
                    writer.writerow([name, position, aa, *cell])
            else:
                writer.writerow([name, *cells[0]])
            rows += len(cells) if residue else 1
    return rows


def inert(text: str) -> str:
    """``text`` for a CSV cell that spreadsheets show as text: a leading ``= + - @`` (or tab, CR)
    would make ``=HYPERLINK(...)`` in a FASTA id a live formula, so it gets a ``'`` in front."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
