"""ESM2 through transformers' ``EsmModel``; ``<cls>`` and ``<eos>`` are dropped from outputs.

ESM2 runs packed (sequences back to back, no padding): ``EsmModel`` takes rotary positions from
``position_ids`` and hands ``cu_seq_lens_q`` on to its attention function, and its token-dropout
rescaling depends on a sequence only through its ``<mask>`` tokens (so it is the same in both layouts),
which residue letters never produce (tests/test_packed.py checks the equality).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from transformers import EsmConfig, EsmModel

from plm_bench_plugins.transformer_family import Family
from plm_bench_plugins.transformer_family import load as load_family


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


ESM2 = Family(EsmModel, esm_config, ("layers", "hidden_size", "heads", "ffn_size", "vocab_size",
                                      "max_position_embeddings"),
              specials=("<cls>", "<pad>", "<eos>", "<unk>"),  # ids 0-3 in every ESM2 vocabulary
              unknown="<unk>", pad="<pad>", prefix=("<cls>",), suffix=("<eos>",), packs=True,
              model_kwargs={"add_pooling_layer": False})
load = partial(load_family, ESM2)
