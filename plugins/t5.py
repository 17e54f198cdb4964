"""The T5 encoder family: ProtT5, ProstT5 and Ankh through transformers' ``T5EncoderModel``.

Conventions (from registry.toml): ProtT5 and ProstT5 read space-separated residues, so a
residue's token is its sentencepiece word (``▁M``), and they saw U/Z/O/B as X (``rare_to_x``);
ProstT5 embeds amino acids behind its ``<AA2fold>`` prefix (``prefix``); Ankh's vocabulary holds
bare residue letters, one token each, rare residues included. Every family member closes the
sequence with ``</s>``; prefix and ``</s>`` are dropped from outputs. T5 runs in fp32 or bf16,
never fp16 (its activations overflow), and has no position table, hence no maximum length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel

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

SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0-2 in every T5 vocabulary
ARCHITECTURE = ("layers", "hidden_size", "heads", "ffn_size", "vocab_size", "d_kv", "feed_forward_proj",
                "relative_attention_num_buckets", "relative_attention_max_distance")
SENTENCEPIECE_WORD = "\u2581"  # the word marker sentencepiece puts before each space-separated residue


def t5_config(arch: Mapping[str, Any]) -> T5Config:
    return T5Config(
        vocab_size=arch["vocab_size"], d_model=arch["hidden_size"], num_layers=arch["layers"],
        num_heads=arch["heads"], d_ff=arch["ffn_size"], d_kv=arch["d_kv"],
        feed_forward_proj=arch["feed_forward_proj"],
        relative_attention_num_buckets=arch["relative_attention_num_buckets"],
        relative_attention_max_distance=arch["relative_attention_max_distance"],
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    )


def load(spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
         dtype: str = "auto", init: str = "pretrained") -> TransformerBackbone:
    torch_dtype = resolve_dtype(dtype, spec.dtypes, device, spec.name)
    prefix = [entry["prefix"]] if "prefix" in entry else []
    if init == "random":
        arch = architecture(entry, ARCHITECTURE, spec.name)
        with torch.device(device):  # built in place: no CPU copy of a big model
            model = T5EncoderModel(t5_config(arch))
        vocab = synthetic_vocab([*SPECIALS, *prefix], arch["vocab_size"], SENTENCEPIECE_WORD)
        origin = f"{spec.name} (random init)"
    else:
        origin = weights_source(spec, source)
        model = load_model(T5EncoderModel, origin, spec.family, dtype=torch_dtype)
        vocab = from_pretrained(AutoTokenizer, origin).get_vocab()
    marker = SENTENCEPIECE_WORD if SENTENCEPIECE_WORD + "A" in vocab else ""
    vocabulary = ResidueVocabulary.from_vocab(vocab, unknown="<unk>", pad="<pad>", prefix=prefix, suffix=["</s>"],
                                              word_marker=marker, rare_to_x=entry.get("rare_to_x", False),
                                              source=origin)
    return TransformerBackbone(model.to(device=device, dtype=torch_dtype), vocabulary, name=spec.name,
                               max_length=None, adapter_targets=spec.adapter_targets)
