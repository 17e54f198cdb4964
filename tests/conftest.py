"""Shared fixtures: the real task data mirror and tiny random-weight checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PLM_BENCH_TEST_DATA", REPO.parent / "shared" / "datasets"))

ESM_TOKENS = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data mirror (../shared/datasets); tests never use copies in the repo."""
    if not (SHARED_DATA / "gb1" / "splits.zip").is_file():
        pytest.fail(f"task data mirror not found at {SHARED_DATA}; set PLM_BENCH_TEST_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_esm(tmp_path_factory) -> Path:
    """A random-weight ESM2 (2 layers, 32 hidden) saved like a hub checkpoint."""
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    folder = tmp_path_factory.mktemp("tiny-esm2")
    (folder / "vocab.txt").write_text("\n".join(ESM_TOKENS) + "\n")
    tokenizer = EsmTokenizer(vocab_file=str(folder / "vocab.txt"))
    config = EsmConfig(
        vocab_size=len(ESM_TOKENS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=1026, position_embedding_type="rotary",
        pad_token_id=1, mask_token_id=32, token_dropout=True,
    )
    EsmModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "results.sqlite"
