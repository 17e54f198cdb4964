"""The T5 encoder family: ProtT5, ProstT5 and Ankh through transformers' ``T5EncoderModel``.

Conventions (from registry.toml): ProtT5 and ProstT5 read space-separated residues, so a
residue's token is its sentencepiece word (``▁M``), and they saw U/Z/O/B as X (``rare_to_x``);
ProstT5 embeds amino acids behind its ``<AA2fold>`` prefix (``prefix``); Ankh's vocabulary holds
bare residue letters, one token each, rare residues included. Every family member closes the
sequence with ``</s>``; prefix and ``</s>`` are dropped from outputs. T5 runs in fp32 or bf16,
never fp16 (its activations overflow), and has no position table, hence no maximum length.
T5 runs padded, not packed: transformers' ``T5Attention`` builds its relative position bias as
one ``[heads, T, T]`` table over the whole row, so a packed row's bias grows with the square of
the pack, not of its sequences (8 sequences of 1,000 residues, ProtT5's 32 heads: 8 GB in fp32).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from transformers import T5Config, T5EncoderModel

from plm_bench_plugins.transformer_family import Family
from plm_bench_plugins.transformer_family import load as load_family


def t5_config(arch: Mapping[str, Any]) -> T5Config:
    return T5Config(
        vocab_size=arch["vocab_size"], d_model=arch["hidden_size"], num_layers=arch["layers"],
        num_heads=arch["heads"], d_ff=arch["ffn_size"], d_kv=arch["d_kv"],
        feed_forward_proj=arch["feed_forward_proj"],
        relative_attention_num_buckets=arch["relative_attention_num_buckets"],
        relative_attention_max_distance=arch["relative_attention_max_distance"],
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    )


T5 = Family(T5EncoderModel, t5_config, ("layers", "hidden_size", "heads", "ffn_size", "vocab_size", "d_kv",
                                         "feed_forward_proj", "relative_attention_num_buckets",
                                         "relative_attention_max_distance"),
            specials=("<pad>", "</s>", "<unk>"),  # ids 0-2 in every T5 vocabulary
            unknown="<unk>", pad="<pad>", suffix=("</s>",),
            word_marker="\u2581",  # sentencepiece's marker before each space-separated residue (ProtT5)
            positions=False,  # relative attention: no position table, no maximum length
            blocks="encoder.block")
load = partial(load_family, T5)
