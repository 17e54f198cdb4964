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
from plm_bench.models.embedding_paths import DIGEST, SUFFIXES, file_kind, identified, path_of  # noqa: F401

if TYPE_CHECKING:
    from plm_bench.run.protocol import RunContext



def embeddings(backbone: str, examples: list, per_protein: bool, context: RunContext, **settings) -> dict:
    """id -> float32 array ``[length, hidden]`` (or ``[hidden]`` per protein), through the frozen cache."""
    import numpy as np

    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.models.backbone import load_backbone
    from plm_bench.models.precision import resolve_precision
    from plm_bench.run.protocol import frozen_features, seed_everything

    # The cache key depends on the weights, dtype, precision, long-sequence policy, layers and sequences, not the task.
    config = RunConfig(backbone=backbone, task="embed", method="frozen", **settings)
    spec, method = plugins.get("backbone", backbone), plugins.get("method", config.method)
    precision = resolve_precision(config.precision, config.dtype, spec.dtypes, context.torch_device, spec.name)
    with context.progress:
        seed_everything(config.seed)  # random-init weights, as a frozen run of this seed builds them
        model = load_backbone(spec, config.backbone_path or spec.hub_id, context.torch_device,
                              dtype=precision.storage, init=config.init, long_policy=config.long_policy)
        method.configure(model, method.resolve_options(config.method_options))  # its layer options
        features = frozen_features(model, {"input": examples}, config, context, precision=precision)["input"]
    out = {}
    for i, example in enumerate(examples):
        rows = features[i].cpu().numpy()
        out[example.id] = rows.mean(axis=0) if per_protein else rows
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def write(output: Path, kind: str, arrays: dict) -> None:
    """``arrays`` (id -> array) to ``output`` as ``kind`` (``npz`` or ``h5``), every id exactly as
    given: through a temporary file that replaces ``output`` only once complete, so an interrupted
    write leaves the old file whole. A file that cannot be written is one error naming it."""
    import zipfile

    import numpy as np

    from plm_bench.files import atomic_file

    if kind == "h5":
        try:
            import h5py
        except ImportError:
            raise BenchError(f"{output}: writing .h5 needs h5py: pip install 'plm-bench[h5]' (or write .npz)") from None
    try:
        with atomic_file(output) as replacement:
            if kind == "npz":  # np.savez's layout, without its keywords: ids such as `file` or `allow_pickle` stay ids
                with zipfile.ZipFile(replacement.path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                    for name, array in arrays.items():
                        with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            else:
                with h5py.File(replacement.path, "w") as handle:
                    for name, array in arrays.items():
                        handle.create_dataset(name, data=array).attrs["original_id"] = name
    except OSError as exc:
        raise BenchError(f"{output}: cannot write it ({exc.strerror or exc}); pick another -o or fix the "
                         "folder's permissions") from None


def read(path: Path, examples: list, hidden_size: int | None = None) -> list:
    """Each example's embedding from ``path`` as a float32 tensor ``[length, hidden]``.

    An entry is found by the example's id, by an ``original_id`` attribute (HDF5), or by the md5
    of its sequence (bio_embeddings' keys). A per-protein vector ``[hidden]`` becomes ``[1,
    hidden]``: a pooled head reads it as is; a per-residue task needs per-residue arrays. Missing
    entries and shapes that do not fit are one line naming the file and the first record.
    """
    import hashlib

    import numpy as np
    import torch

    arrays = load(path)
    found, missing = [], []
    for e in examples:
        key = next((k for k in (e.id, hashlib.md5(e.sequence.encode()).hexdigest()) if k in arrays), None)
        if key is None:
            missing.append(e.id)
            continue
        array = np.asarray(arrays[key], dtype=np.float32)
        if array.ndim == 1:
            array = array[None]
        elif array.ndim != 2 or array.shape[0] != len(e.sequence):
            raise BenchError(f"{path}: entry {key} has shape {array.shape}, but record {e.id} has "
                             f"{len(e.sequence)} residues; write [length, hidden] per residue or [hidden] per protein")
        hidden_size = hidden_size or array.shape[1]
        if array.shape[1] != hidden_size:
            raise BenchError(f"{path}: entry {key} has hidden size {array.shape[1]}, others {hidden_size}; "
                             "one file holds one backbone's embeddings")
        found.append(torch.from_numpy(array))
    if missing:
        raise BenchError(f"{path} has no embedding for {len(missing)} of {len(examples)} records (first: "
                         f"{missing[0]}); embed them with `bench embed` (keys: ids or sequence md5)")
    return found


def load(path: Path) -> dict:
    """Every entry of an embedding file: key -> array (HDF5 entries also under their original_id)."""
    import numpy as np

    kind = file_kind(path)
    if not Path(path).is_file():
        raise BenchError(f"{path}: no such embedding file")
    if kind == "npz":
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as handle:
                return {k: handle[k] for k in handle.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise unreadable(path, exc) from None
    try:
        import h5py
    except ImportError:
        raise BenchError(f"{path}: reading .h5 needs h5py: pip install 'plm-bench[h5]'") from None
    out = {}
    try:
        with h5py.File(path, "r") as handle:
            for key, dataset in handle.items():
                out[key] = dataset[()]
                if "original_id" in dataset.attrs:
                    out[str(dataset.attrs["original_id"])] = out[key]
    except (OSError, ValueError, KeyError) as exc:
        raise unreadable(path, exc) from None
    return out


def unreadable(path: Path, problem: Exception) -> BenchError:
    return BenchError(f"{path}: cannot read the embeddings ({type(problem).__name__}: {problem}); is the file "
                      "complete? Write it again with `bench embed`")
