"""The BERT family: ProtBERT and AntiBERTy through transformers' ``BertModel``.

Residues are space-separated words of a WordPiece vocabulary, one token each, between
``[CLS]`` and ``[SEP]`` (both dropped from outputs); ProtBERT saw U/Z/O/B as X (``rare_to_x``).
``BertModel`` takes absolute ``position_ids`` and passes attention keyword arguments through,
so it runs packed like ESM2 (tests/test_packed.py checks it against the padded forward).
AntiBERTy's pretrained weights ship inside the ``antiberty`` wheel (``pip install
'plm-bench[antiberty]'``): they load with plain transformers classes from the files in the
wheel, because the package's own runner does not import under transformers 5.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from transformers import BertConfig, BertModel

from plm_bench_plugins.transformer_family import Family
from plm_bench_plugins.transformer_family import load as load_family


def bert_config(arch: Mapping[str, Any]) -> BertConfig:
    return BertConfig(
        vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"], num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"], intermediate_size=arch["ffn_size"],
        max_position_embeddings=arch["max_position_embeddings"], pad_token_id=0,
    )


BERT = Family(BertModel, bert_config, ("layers", "hidden_size", "heads", "ffn_size", "vocab_size",
                                       "max_position_embeddings"),
              specials=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),  # ids 0-4 in ProtBERT's and AntiBERTy's
              unknown="[UNK]", pad="[PAD]", prefix=("[CLS]",), suffix=("[SEP]",), packs=True,
              model_kwargs={"add_pooling_layer": False})
load = partial(load_family, BERT)
