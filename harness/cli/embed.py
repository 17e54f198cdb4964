"""``bench embed BACKBONE FASTA -o out.h5|npz [--per-protein]``: embeddings out, for other tools.

They come from the same on-disk cache and batching as frozen runs (so a FASTA of a task's
sequences reuses that run's entry, and the numbers are the ones its head trained on: the
cache's fp16 values). ``.npz`` holds one array per id; ``.h5`` one dataset per id with the id
in its ``original_id`` attribute, the layout biotrainer and bio_embeddings read (needs h5py:
``pip install 'plm-bench[h5]'``).
"""

from __future__ import annotations

from pathlib import Path

import click

from plm_bench.cli.common import config_options, console, device_option, progress_bar
from plm_bench.errors import BenchError

SUFFIXES = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}


@click.command()
@click.argument("backbone")
@click.argument("fasta", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write: .npz, or .h5/.hdf5 (needs h5py).")
@click.option("--per-protein", is_flag=True,
              help="One vector per protein (mean over its residues, as the frozen per-protein head pools) "
                   "instead of one per residue.")
@config_options(only=("seed", "backbone_path", "dtype", "init", "long_policy"),
                overrides={"seed": {"help": "Seed of the random weights with --init random."}})
@device_option
def embed(backbone: str, fasta: Path, output: Path, per_protein: bool, seed: int, backbone_path: str | None,
          dtype: str, init: str, long_policy: str, device: str) -> None:
    """Embed the sequences of FASTA with BACKBONE, per residue (default) or per protein."""
    kind = SUFFIXES.get(output.suffix.lower())
    if kind is None:
        raise BenchError(f"{output}: write .npz, .h5 or .hdf5 (the suffix picks the format)")
    from plm_bench.cli.predict import read_examples

    examples = read_examples(fasta)
    if kind == "h5":
        slashed = next((e.id for e in examples if "/" in e.id), None)
        if slashed:
            raise BenchError(f"{fasta}: id {slashed!r} holds '/', which HDF5 reads as a group path; rename it "
                             "or write .npz")
    arrays = embeddings(backbone, examples, per_protein, device, seed=seed, backbone_path=backbone_path,
                        dtype=dtype, init=init, long_policy=long_policy)
    write(output, kind, arrays)
    hidden = next(iter(arrays.values())).shape[-1] if arrays else 0
    console.print(f"wrote {len(arrays)} {'per-protein' if per_protein else 'per-residue'} embeddings "
                  f"(hidden size {hidden}) to {output}", highlight=False)


def embeddings(backbone: str, examples: list, per_protein: bool, device: str = "auto", **settings) -> dict:
    """id -> float32 array ``[length, hidden]`` (or ``[hidden]`` per protein), through the frozen cache."""
    import numpy as np

    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.models.backbone import load_backbone
    from plm_bench.run.protocol import RunContext, frozen_features, seed_everything

    # The cache key depends on the weights, dtype, long-sequence policy and sequences, not the task.
    config = RunConfig(backbone=backbone, task="embed", method="frozen", **settings)
    progress = progress_bar()
    context = RunContext(data_dir=Path("."), device=device, progress=progress)
    spec = plugins.get("backbone", backbone)
    with progress:
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
