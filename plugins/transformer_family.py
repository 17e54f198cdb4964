"""One loader for the transformers encoder families (ESM2, BERT, T5), driven by a table each.

A :class:`Family` says which model class and configuration a family uses, its special tokens
and how residues are wrapped; :func:`load` does the rest the same way for all of them: random
weights built in place from the registry's architecture table (``--init random``), or weights
from a local folder, the hub, or the package that ships them (AntiBERTy's), then the residue
vocabulary read from the checkpoint's own tokenizer.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from plm_bench import (
    BackboneSpec,
    BenchError,
    ResidueVocabulary,
    TransformerBackbone,
    from_pretrained,
    load_model,
    resolve_dtype,
    synthetic_vocab,
)


@dataclass(frozen=True)
class Family:
    """The facts that make one encoder family a :class:`TransformerBackbone`."""

    model_class: type
    config: Callable[[Mapping[str, Any]], Any]  # registry architecture table -> the model's config
    architecture: tuple[str, ...]  # the keys config reads
    specials: tuple[str, ...]  # the first ids of every vocabulary of the family (for random init)
    unknown: str
    pad: str
    prefix: tuple[str, ...] = ()  # tokens before the residues (an entry's ``prefix`` adds one)
    suffix: tuple[str, ...] = ()  # tokens after them
    word_marker: str = ""  # sentencepiece's marker before space-separated residues, where it has one
    positions: bool = True  # a position table, so at most max_position_embeddings tokens
    packs: bool = False  # the backbone runs sequences packed (see TransformerBackbone)
    blocks: str = "encoder.layer"  # the model's nn.ModuleList of blocks (layer choices, peft's layers_pattern)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


def load(family: Family, spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
         dtype: str = "auto", init: str = "pretrained") -> TransformerBackbone:
    torch_dtype = resolve_dtype(dtype, spec.dtypes, device, spec.name)
    prefix = [*family.prefix, *([entry["prefix"]] if "prefix" in entry else [])]
    if init == "random":
        arch = architecture(entry, family.architecture, spec.name)
        with torch.device(device):  # built in place: no CPU copy of a big model
            model = family.model_class(family.config(arch), **family.model_kwargs)
        vocab = synthetic_vocab([*family.specials, *prefix[len(family.prefix):]], arch["vocab_size"],
                                family.word_marker)
        origin = f"{spec.name} (random init)"
    elif source is None and "package" in entry:
        folder, vocab_file = packaged_checkpoint(spec, entry)
        origin = str(folder)
        model = load_model(family.model_class, origin, spec.family, dtype=torch_dtype, **family.model_kwargs)
        vocab = {token: i for i, token in enumerate(vocab_file.read_text().splitlines())}
    else:
        origin = weights_source(spec, source)
        model = load_model(family.model_class, origin, spec.family, dtype=torch_dtype, **family.model_kwargs)
        vocab = from_pretrained(AutoTokenizer, origin).get_vocab()
    marker = family.word_marker if family.word_marker and family.word_marker + "A" in vocab else ""
    vocabulary = ResidueVocabulary.from_vocab(vocab, unknown=family.unknown, pad=family.pad, prefix=prefix,
                                              suffix=list(family.suffix), word_marker=marker,
                                              rare_to_x=entry.get("rare_to_x", False), source=origin)
    wrapping = len(prefix) + len(family.suffix)
    return TransformerBackbone(model.to(device=device, dtype=torch_dtype), vocabulary, name=spec.name,
                               max_length=model.config.max_position_embeddings - wrapping if family.positions
                               else None, adapter_targets=spec.adapter_targets, packs=family.packs,
                               blocks=family.blocks)


def packaged_checkpoint(spec: BackboneSpec, entry: Mapping[str, Any]) -> tuple[Path, Path]:
    """The model folder and vocab.txt inside an installed package (``package``, ``checkpoint``
    and ``vocab`` in the registry entry), found without importing the package."""
    found = importlib.util.find_spec(entry["package"])
    folders = [Path(f) for f in (found.submodule_search_locations or [])] if found else []
    for folder in folders:
        if (folder / entry["checkpoint"] / "config.json").is_file() and (folder / entry["vocab"]).is_file():
            return folder / entry["checkpoint"], folder / entry["vocab"]
    raise BenchError(f"backbone {spec.name}: its weights ship in the {entry['package']} package, which is not "
                     f"installed (or lacks {entry['checkpoint']}); run pip install 'plm-bench[{spec.name}]'")


def architecture(entry: Mapping[str, Any], keys: Sequence[str], backbone: str) -> dict[str, Any]:
    """The registry entry's architecture table, checked to hold ``keys`` (for ``--init random``)."""
    table = entry.get("architecture", {})
    missing = [k for k in keys if k not in table]
    if missing:
        raise BenchError(f"registry.toml [backbones.{backbone}] lacks architecture.{missing[0]}, needed to build "
                         "the architecture for --init random; add it")
    return dict(table)


def weights_source(spec: BackboneSpec, source: str | None) -> str:
    """Where pretrained weights come from: ``--backbone-path`` or the registry's hub id."""
    if source is None:
        raise BenchError(f"backbone {spec.name} has no hub_id in registry.toml; pass --backbone-path DIR")
    return source
