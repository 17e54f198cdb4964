"""ESM2 through transformers' ``EsmModel``; ``<cls>`` and ``<eos>`` are dropped from outputs.

ESM2 runs packed (sequences back to back, no padding): ``EsmModel`` takes rotary positions from
``position_ids`` and hands ``cu_seq_lens_q`` on to its attention function, and its token-dropout
rescaling depends on a sequence only through its ``<mask>`` tokens (so it is the same in both layouts),
which residue letters never produce (tests/test_packed.py checks the equality).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoTokenizer, EsmConfig, EsmModel

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

SPECIALS = ("<cls>", "<pad>", "<eos>", "<unk>")  # ids 0-3 in every ESM2 vocabulary
ARCHITECTURE = ("layers", "hidden_size", "heads", "ffn_size", "vocab_size", "max_position_embeddings")


def esm_config(arch: Mapping[str, Any]) -> EsmConfig:
    """ESM2's configuration as released: rotary positions, token dropout, <pad> = 1, <mask> = last
    id, and no dropout (the published config.json files set both dropout probabilities to 0.0,
    where transformers' EsmConfig defaults to 0.1)."""
    return EsmConfig(
        vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"], num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"], intermediate_size=arch["ffn_size"],
        max_position_embeddings=arch["max_position_embeddings"], position_embedding_type="rotary",
        token_dropout=True, emb_layer_norm_before=False, layer_norm_eps=1e-5,
        pad_token_id=1, mask_token_id=arch["vocab_size"] - 1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def load(spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
         dtype: str = "auto", init: str = "pretrained") -> TransformerBackbone:
    torch_dtype = resolve_dtype(dtype, spec.dtypes, device, spec.name)
    if init == "random":
        arch = architecture(entry, ARCHITECTURE, spec.name)
        with torch.device(device):  # built in place: no CPU copy of a big model
            model = EsmModel(esm_config(arch), add_pooling_layer=False)
        vocab, origin = synthetic_vocab(SPECIALS, arch["vocab_size"]), f"{spec.name} (random init)"
    else:
        origin = weights_source(spec, source)
        model = load_model(EsmModel, origin, spec.family, add_pooling_layer=False, dtype=torch_dtype)
        vocab = from_pretrained(AutoTokenizer, origin).get_vocab()
    vocabulary = ResidueVocabulary.from_vocab(vocab, unknown="<unk>", pad="<pad>", prefix=["<cls>"],
                                              suffix=["<eos>"], source=origin)
    return TransformerBackbone(model.to(device=device, dtype=torch_dtype), vocabulary, name=spec.name,
                               max_length=model.config.max_position_embeddings - 2,
                               adapter_targets=spec.adapter_targets, packs=True)
