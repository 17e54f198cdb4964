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


def test_a_frozen_run_on_an_h5_of_antiberty_embeddings_equals_the_antiberty_run(data_dir, tmp_path, monkeypatch):
    """Bring your own embeddings: the file `bench embed` wrote gives the metrics the run computing them gives."""
    pytest.importorskip("antiberty")
    pytest.importorskip("h5py")
    from plm_bench import plugins
    from plm_bench.config import RunConfig
    from plm_bench.results.store import Store
    from plm_bench.run.protocol import limit

    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    limits = ["--limit-train", "24", "--limit-eval", "16"]
    config = RunConfig(backbone="antiberty", task="gb1", limit_train=24, limit_eval=16)
    splits = limit(plugins.get("task", "gb1").load(data_dir), config)
    fasta = tmp_path / "gb1.fasta"
    fasta.write_text("".join(f">{e.id}\n{e.sequence}\n" for split in splits.values() for e in split))
    h5 = tmp_path / "antiberty.h5"
    bench = CliRunner().invoke
    assert bench(main, ["embed", "antiberty", str(fasta), "-o", str(h5)]).exit_code == 0
    common = ["run", "--backbone", "antiberty", "--task", "gb1", "--data-dir", str(data_dir), *limits]
    computed = bench(main, [*common, "--store", str(tmp_path / "a.sqlite")])
    assert computed.exit_code == 0, computed.output
    read_back = bench(main, [*common, "--embeddings", str(h5), "--store", str(tmp_path / "b.sqlite")])
    assert read_back.exit_code == 0, read_back.output
    [a], [b] = Store(tmp_path / "a.sqlite").records(), Store(tmp_path / "b.sqlite").records()
    assert a["metrics"] == b["metrics"] and a["test_ci"] == b["test_ci"]
    assert b["config"]["embeddings"] == f"{h5.resolve()}#sha256={hashlib.sha256(h5.read_bytes()).hexdigest()}"

    refused = bench(main, [*common, "--embeddings", str(h5), "--method", "lora", "--store", str(tmp_path / "c.sqlite")])
    assert refused.exit_code != 0 and "--embeddings feeds frozen runs" in refused.output
    stored = b["config"]["embeddings"]
    h5.write_bytes(h5.read_bytes() + b"\0")  # the file changes after the run
    with pytest.raises(BenchError, match="changed since the run that read it"):
        RunConfig(**{**b["config"], "embeddings": stored}).resolved()
