"""The BERT family: ProtBERT and AntiBERTy through transformers' ``BertModel``.

Residues are space-separated words of a WordPiece vocabulary, one token each, between
``[CLS]`` and ``[SEP]`` (both dropped from outputs); ProtBERT saw U/Z/O/B as X (``rare_to_x``).
AntiBERTy's pretrained weights ship inside the ``antiberty`` wheel (``pip install
'plm-bench[antiberty]'``): they load with plain transformers classes from the files in the
wheel, because the package's own runner does not import under transformers 5.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from plm_bench.errors import BenchError
from plm_bench.models.backbone import (
    ResidueVocabulary,
    TransformerBackbone,
    architecture,
    resolve_dtype,
    synthetic_vocab,
    weights_source,
)
from plm_bench.models.hub import from_pretrained, load_model
from plm_bench.plugins.specs import BackboneSpec

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4 in ProtBERT's and AntiBERTy's vocabularies
ARCHITECTURE = ("layers", "hidden_size", "heads", "ffn_size", "vocab_size", "max_position_embeddings")


def bert_config(arch: Mapping[str, Any]) -> BertConfig:
    return BertConfig(
        vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"], num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"], intermediate_size=arch["ffn_size"],
        max_position_embeddings=arch["max_position_embeddings"], pad_token_id=0,
    )


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


def load(spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
         dtype: str = "auto", init: str = "pretrained") -> TransformerBackbone:
    torch_dtype = resolve_dtype(dtype, spec.dtypes, device, spec.name)
    if init == "random":
        arch = architecture(entry, ARCHITECTURE, spec.name)
        with torch.device(device):  # built in place: no CPU copy of a big model
            model = BertModel(bert_config(arch), add_pooling_layer=False)
        vocab, origin = synthetic_vocab(SPECIALS, arch["vocab_size"]), f"{spec.name} (random init)"
    elif source is None and "package" in entry:
        folder, vocab_file = packaged_checkpoint(spec, entry)
        origin = str(folder)
        model = load_model(BertModel, origin, spec.family, add_pooling_layer=False, dtype=torch_dtype)
        vocab = {token: i for i, token in enumerate(vocab_file.read_text().splitlines())}
    else:
        origin = weights_source(spec, source)
        model = load_model(BertModel, origin, spec.family, add_pooling_layer=False, dtype=torch_dtype)
        vocab = from_pretrained(AutoTokenizer, origin).get_vocab()
    vocabulary = ResidueVocabulary.from_vocab(vocab, unknown="[UNK]", pad="[PAD]", prefix=["[CLS]"],
                                              suffix=["[SEP]"], rare_to_x=entry.get("rare_to_x", False),
                                              source=origin)
    return TransformerBackbone(model.to(device=device, dtype=torch_dtype), vocabulary, name=spec.name,
                               max_length=model.config.max_position_embeddings - 2,
                               adapter_targets=spec.adapter_targets)
