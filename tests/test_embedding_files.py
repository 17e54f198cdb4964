"""Embedding files read back what `bench embed` wrote, by id or sequence md5, or say what is wrong."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.models.embedding_files import load, read, write
from plm_bench.tasks.task import Example


def test_what_bench_embed_writes_reads_back_for_the_same_records(tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "in.fasta").write_text(">a\nMKV\n>b\nGSAW\n")
    out = tmp_path / "e.npz"
    result = CliRunner().invoke(main, ["embed", "onehot", str(tmp_path / "in.fasta"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    examples = [Example("a", "MKV", None), Example("b", "GSAW", None)]
    a, b = read(out, examples)
    assert a.shape == (3, 21) and b.shape == (4, 21)
    assert a.argmax(1).tolist() == [10, 8, 17]  # one-hot of M, K, V in ACDEFGHIKLMNPQRSTVWY
    np.testing.assert_array_equal(b.numpy(), load(out)["b"])


def test_sequence_md5_keys_per_protein_vectors_and_errors(tmp_path):
    path = tmp_path / "e.npz"
    md5 = hashlib.md5(b"MKV").hexdigest()
    write(path, "npz", {md5: np.ones(5, np.float32), "short": np.ones((2, 5), np.float32)})
    [vector] = read(path, [Example("x", "MKV", None)])
    assert vector.shape == (1, 5)  # a per-protein vector: one row a pooled head reads as is
    with pytest.raises(BenchError, match="no embedding for 1 of 1 records \\(first: y\\)"):
        read(path, [Example("y", "WWW", None)])
    with pytest.raises(BenchError, match="entry short has shape \\(2, 5\\), but record short has 3 residues"):
        read(path, [Example("short", "MKV", None)])
