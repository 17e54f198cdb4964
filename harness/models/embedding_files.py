"""Embedding files: what ``bench embed`` writes and what frozen runs can read back.

They come from the same on-disk cache and batching as frozen runs (so a FASTA of a task's
sequences reuses that run's entry, and the numbers are the ones its head trained on: the
cache's fp16 values). ``.npz`` holds one array per id; ``.h5`` one dataset per id with the id
in its ``original_id`` attribute, the layout biotrainer and bio_embeddings read (needs h5py:
``pip install 'plm-bench[h5]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.run.protocol import RunContext

SUFFIXES = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}


def file_kind(path: Path) -> str:
    """``npz`` or ``h5`` by the suffix, or one line naming the suffixes."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise BenchError(f"{path}: write .npz, .h5 or .hdf5 (the suffix picks the format)")
    return kind


def embeddings(backbone: str, examples: list, per_protein: bool, context: RunContext, **settings) -> dict:
    """id -> float32 array ``[length, hidden]`` (or ``[hidden]`` per protein), through the frozen cache."""
    import numpy as np

    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.models.backbone import load_backbone
    from plm_bench.run.protocol import frozen_features, seed_everything

    # The cache key depends on the weights, dtype, long-sequence policy and sequences, not the task.
    config = RunConfig(backbone=backbone, task="embed", method="frozen", **settings)
    spec = plugins.get("backbone", backbone)
    with context.progress:
        seed_everything(config.seed)  # random-init weights, as a frozen run of this seed builds them
        model = load_backbone(spec, config.backbone_path or spec.hub_id, context.torch_device, dtype=config.dtype,
                              init=config.init, long_policy=config.long_policy)
        features = frozen_features(model, {"input": examples}, config, context)["input"]
    out = {}
    for i, example in enumerate(examples):
        rows = features[i].cpu().numpy()
        out[example.id] = rows.mean(axis=0) if per_protein else rows
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def write(output: Path, kind: str, arrays: dict) -> None:
    """``arrays`` (id -> array) to ``output`` as ``kind`` (``npz`` or ``h5``)."""
    import numpy as np

    output.parent.mkdir(parents=True, exist_ok=True)
    if kind == "npz":
        np.savez(output, **arrays)
        return
    try:
        import h5py
    except ImportError:
        raise BenchError(f"{output}: writing .h5 needs h5py: pip install 'plm-bench[h5]' (or write .npz)") from None
    with h5py.File(output, "w") as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array).attrs["original_id"] = name
