"""``bench embed BACKBONE FASTA -o out.h5|npz [--per-protein]``: embeddings out, for other tools
(the file format: harness/models/embedding_files.py)."""

from __future__ import annotations

from pathlib import Path

import click

from plm_bench.cli.common import config_options, console, device_option, err_console
from plm_bench.errors import BenchError


@click.command()
@click.argument("backbone")
@click.argument("fasta", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write: .npz, or .h5/.hdf5 (needs h5py).")
@click.option("--per-protein", is_flag=True,
              help="One vector per protein (mean over its residues, as the frozen per-protein head pools) "
                   "instead of one per residue.")
@config_options(only=("seed", "backbone_path", "dtype", "precision", "init", "long_policy", "method_options"),
                overrides={"seed": {"help": "Seed of the random weights with --init random."},
                           "method_options": {"help": "The frozen method's layer options: layer=N (0: the embedding "
                                                      "output, negative: from the end) and last_k=K (mean of the K "
                                                      "layers up to it)."}})
@device_option
def embed(backbone: str, fasta: Path, output: Path, per_protein: bool, seed: int, backbone_path: str | None,
          dtype: str, precision: str, init: str, long_policy: str, method_options: dict, device: str) -> None:
    """Embed the sequences of FASTA with BACKBONE, per residue (default) or per protein."""
    from plm_bench.models.embedding_files import embeddings, file_kind, write
    from plm_bench.run.progress import Progress, display
    from plm_bench.run.protocol import RunContext
    from plm_bench.tasks.fasta import read_examples

    kind = file_kind(output)
    examples = read_examples(fasta)
    if kind == "h5":
        slashed = next((e.id for e in examples if "/" in e.id), None)
        if slashed:
            raise BenchError(f"{fasta}: id {slashed!r} holds '/', which HDF5 reads as a group path; rename it "
                             "or write .npz")
    context = RunContext(data_dir=Path("."), device=device, progress=Progress(view=display(err_console)))
    arrays = embeddings(backbone, examples, per_protein, context, seed=seed, backbone_path=backbone_path,
                        dtype=dtype, precision=precision, init=init, long_policy=long_policy,
                        method_options=method_options)
    write(output, kind, arrays)
    hidden = next(iter(arrays.values())).shape[-1] if arrays else 0
    console.print(f"wrote {len(arrays)} {'per-protein' if per_protein else 'per-residue'} embeddings "
                  f"(hidden size {hidden}) to {output}", highlight=False)
