"""A third-party plm-bench plugin, written from docs/plugins.md: a backbone, a task in code, a
task in TOML, a method with a declared option, a head and a protocol that extends another.

Copy this package to start your own; nothing in plm-bench needs to change. Everything it uses
comes from the package top (``from plm_bench import ...``), the published plugin contract.
"""

from __future__ import annotations

import random
from pathlib import Path

from plm_bench import (
    BackboneSpec,
    BenchError,
    Example,
    HeadSpec,
    MethodSpec,
    Option,
    Splits,
    Task,
    hookimpl,
    load_protocol,
    load_task,
    shipped_file,
)

# Kyte-Doolittle hydropathy, charge at pH 7, and side-chain volume (Å^3) per residue.
PROPERTIES = {
    "A": (1.8, 0, 88.6), "R": (-4.5, 1, 173.4), "N": (-3.5, 0, 114.1), "D": (-3.5, -1, 111.1),
    "C": (2.5, 0, 108.5), "Q": (-3.5, 0, 143.8), "E": (-3.5, -1, 138.4), "G": (-0.4, 0, 60.1),
    "H": (-3.2, 0, 153.2), "I": (4.5, 0, 166.7), "L": (3.8, 0, 166.7), "K": (-3.9, 1, 168.6),
    "M": (1.9, 0, 162.9), "F": (2.8, 0, 189.9), "P": (-1.6, 0, 112.7), "S": (-0.8, 0, 89.0),
    "T": (-0.7, 0, 116.1), "W": (-0.9, 0, 227.8), "Y": (-1.3, 0, 193.6), "V": (4.2, 0, 140.0),
}


def load_physchem(source: str | None, device: str, *, dtype: str = "auto", init: str = "pretrained"):
    """The loader signature every backbone gets. A fixed table: nothing to download (``source``
    is unused), fp32 only (the spec's dtypes), and no weights to randomize."""
    if init != "pretrained":
        raise BenchError("backbone physchem is a fixed property table: it has no --init random")
    from plm_bench_example.physchem import PhysChem  # torch only when a run needs it

    return PhysChem(PROPERTIES).to(device)


def hydrophobicity_splits(data_dir: Path) -> Splits:
    """Random sequences labelled with their mean hydropathy: learnable, and needs no files."""
    rng = random.Random(0)
    residues = sorted(PROPERTIES)

    def example(i: int) -> Example:
        sequence = "".join(rng.choice(residues) for _ in range(rng.randint(20, 60)))
        label = sum(PROPERTIES[aa][0] for aa in sequence) / len(sequence)
        return Example(id=f"seq{i}", sequence=sequence, label=label)

    examples = [example(i) for i in range(600)]
    return {"train": examples[:400], "valid": examples[400:500], "test": examples[500:]}


@hookimpl
def register_backbones(register) -> None:
    register(BackboneSpec(name="physchem", family="physchem", load=load_physchem,
                          description="Per-residue hydropathy, charge and volume (example plugin)."))


def bitfit(backbone, options: dict):
    """BitFit (Ben Zaken et al. 2022): only the backbone's biases train, or with ``top=k`` only
    its last k bias vectors."""
    biases = [p for name, p in backbone.named_parameters() if name.endswith("bias")]
    if not biases:
        raise BenchError(f"method bitfit: backbone {backbone.name} has no biases; use --method frozen or full")
    backbone.requires_grad_(False)
    for parameter in biases[-options["top"]:] if options["top"] else biases:
        parameter.requires_grad_(True)
    return backbone


def build_max_pool(hidden_size: int, out_dim: int, level: str, dropout: float = 0.0):
    from plm_bench_example.heads import MaxPool  # torch only when a run builds it

    return MaxPool(hidden_size, out_dim, dropout=dropout)


@hookimpl
def register_tasks(register) -> None:
    register(Task(name="example-hydrophobicity", level="protein", type="regression", metric="spearman",
                  load=hydrophobicity_splits, description="Mean hydropathy of random sequences (example plugin)."))
    # A task in TOML with its data beside it, inside this package (package data in pyproject.toml).
    register(load_task(shipped_file("plm_bench_example", "tasks/charge.toml"), data="beside"))


@hookimpl
def register_methods(register) -> None:
    register(MethodSpec("bitfit", default_lr=1e-2, prepare=bitfit,
                        options={"top": Option(0, "Train only the last k bias vectors (0: all).", min=0)},
                        description="BitFit: only the backbone's biases train (example plugin)."))


@hookimpl
def register_heads(register) -> None:
    register(HeadSpec("max-pool", levels=("protein",), build=build_max_pool,
                      description="Masked max over residues, then a linear layer (example plugin)."))


@hookimpl
def register_protocols(register) -> None:
    register(load_protocol(shipped_file("plm_bench_example", "protocol.toml")))
