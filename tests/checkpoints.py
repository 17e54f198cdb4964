"""Tiny random-weight checkpoints laid out like the hub's, for every transformers family.

Each builder writes what the published checkpoint ships (config.json, weights, tokenizer files
in the same format), so the tests load them through the same ``from_pretrained`` path as real
weights. Vocabularies follow the published ones: ESM2's 33 tokens; ProtT5's sentencepiece
model of space-separated residues (``▁A``), read through the ``spiece.model`` path as on the
hub; ProstT5's added ``<AA2fold>``/``<fold2AA>`` tokens; Ankh's ``tokenizer.json`` of bare
residue letters with no pre-tokenizer, whose ids match the real Ankh tokenizer's (e.g. MKTAY ->
19 14 11 3 18); ProtBERT's WordPiece ``vocab.txt``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

ESM_TOKENS = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]
PROTTRANS_LETTERS = "ALGVSREDTIPKFQNYMHWCXBOUZ"  # ProtT5's and Ankh's order after <pad> </s> <unk>
PROTBERT_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"LAGVESIKRDTPNQFYMHCWXUBZO"]
WORD = "\u2581"


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Fixed random weights whatever ran before, without touching the caller's RNG state:
    session fixtures are built on first use, so their order (and the weights) would otherwise
    depend on which tests run."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def build_esm(folder: Path) -> Path:
    """A random-weight ESM2 (2 layers, 32 hidden, 1024-residue window)."""
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(ESM_TOKENS) + "\n")
    tokenizer = EsmTokenizer(vocab_file=str(folder / "vocab.txt"))
    config = EsmConfig(
        vocab_size=len(ESM_TOKENS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=1026, position_embedding_type="rotary",
        pad_token_id=1, mask_token_id=32, token_dropout=True,
    )
    with seeded():
        EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _t5_encoder(folder: Path, vocab_size: int, feed_forward_proj: str) -> None:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      feed_forward_proj=feed_forward_proj, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    with seeded():
        T5EncoderModel(config).save_pretrained(folder)


def write_prott5_spiece(folder: Path) -> None:
    """ProtT5's tokenizer files: a unigram ``spiece.model`` whose pieces are the residues as
    sentencepiece words, plus the tokenizer config (100 extra ids make the vocabulary 128)."""
    from sentencepiece import sentencepiece_model_pb2 as spm

    model = spm.ModelProto()
    for token, kind in [("<pad>", spm.ModelProto.SentencePiece.CONTROL),
                        ("</s>", spm.ModelProto.SentencePiece.CONTROL),
                        ("<unk>", spm.ModelProto.SentencePiece.UNKNOWN)]:
        model.pieces.add(piece=token, score=0.0, type=kind)
    for i, letter in enumerate(PROTTRANS_LETTERS):
        model.pieces.add(piece=WORD + letter, score=-float(i + 1), type=spm.ModelProto.SentencePiece.NORMAL)
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size = spm.TrainerSpec.UNIGRAM, len(model.pieces)
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = 0, 1, 2, -1
    model.normalizer_spec.name, model.normalizer_spec.add_dummy_prefix = "identity", True
    model.normalizer_spec.escape_whitespaces = True
    (folder / "spiece.model").write_bytes(model.SerializeToString())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 100, "do_lower_case": False}))


def build_prott5(folder: Path) -> Path:
    """A random-weight ProtT5-style encoder with ProtT5's tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    write_prott5_spiece(folder)
    _t5_encoder(folder, vocab_size=128, feed_forward_proj="relu")
    return folder


def build_prostt5(folder: Path) -> Path:
    """ProtT5's tokenizer plus ProstT5's additions (lower-case 3Di letters, the two direction
    prefixes), saved by transformers as ``tokenizer.json``; its vocabulary is 150."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_prott5_spiece(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([WORD + c for c in "acdefghiklmnpqrstvwy"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<AA2fold>", "<fold2AA>"]})
    (folder / "spiece.model").unlink()
    tokenizer.save_pretrained(folder)
    _t5_encoder(folder, vocab_size=len(tokenizer), feed_forward_proj="relu")
    return folder


def build_ankh(folder: Path) -> Path:
    """A random-weight Ankh-style encoder (gated GELU) with Ankh's kind of ``tokenizer.json``:
    a unigram vocabulary of bare residue letters and no pre-tokenizer, 144 tokens in all."""
    from tokenizers import Tokenizer, models, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *((c, -1.0) for c in PROTTRANS_LETTERS)]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(144 - len(vocab))]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    _t5_encoder(folder, vocab_size=len(vocab), feed_forward_proj="gated-gelu")
    return folder


def build_bert(folder: Path) -> Path:
    """A random-weight ProtBERT-style BERT (max 126 residues) with ProtBERT's tokenizer files
    (``vocab.txt`` and a config saying not to lower-case)."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(PROTBERT_TOKENS) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": False}))
    config = BertConfig(vocab_size=len(PROTBERT_TOKENS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    with seeded():
        BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder
