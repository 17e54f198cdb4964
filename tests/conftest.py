"""Shared fixtures: the real task data mirror and tiny random-weight checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

# Tiny models on a 2-core machine: one intra-op thread is ~8x faster than torch's default,
# and subprocesses (CLI tests, launcher workers) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import checkpoints  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PLM_BENCH_TEST_DATA", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> None:
    """Embedding caches of tests stay out of the user's home cache (one per test session)."""
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "plm-bench-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data mirror (../shared/datasets); tests never use copies in the repo."""
    if not (SHARED_DATA / "gb1" / "splits.zip").is_file():
        pytest.fail(f"task data mirror not found at {SHARED_DATA}; set PLM_BENCH_TEST_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_esm(tmp_path_factory) -> Path:
    """A random-weight ESM2 (2 layers, 32 hidden) saved like a hub checkpoint."""
    return checkpoints.build_esm(tmp_path_factory.mktemp("tiny-esm2"))


@pytest.fixture(scope="session")
def tiny_prott5(tmp_path_factory) -> Path:
    """A random-weight ProtT5-style encoder with ProtT5's sentencepiece tokenizer files."""
    return checkpoints.build_prott5(tmp_path_factory.mktemp("tiny-prott5"))


@pytest.fixture(scope="session")
def tiny_prostt5(tmp_path_factory) -> Path:
    """A random-weight ProstT5-style encoder whose tokenizer has the <AA2fold> prefix token."""
    return checkpoints.build_prostt5(tmp_path_factory.mktemp("tiny-prostt5"))


@pytest.fixture(scope="session")
def tiny_ankh(tmp_path_factory) -> Path:
    """A random-weight Ankh-style encoder with Ankh's per-letter tokenizer.json."""
    return checkpoints.build_ankh(tmp_path_factory.mktemp("tiny-ankh"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random-weight ProtBERT-style BERT with ProtBERT's vocab.txt."""
    return checkpoints.build_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "results.sqlite"
