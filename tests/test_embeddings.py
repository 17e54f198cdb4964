"""The frozen-embedding cache: one backbone pass serves every seed, head and learning rate; changed
weights or data miss; entries are fp16, memory-mapped and written atomically."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from synthetic_tasks import CHARGE, config, context, register_tasks
from torch import nn
from transformers import EsmModel

from plm_bench import plugins
from plm_bench.errors import BenchError
from plm_bench.files import current_umask
from plm_bench.models import embeddings
from plm_bench.models.embeddings import EmbeddingCache, fingerprint
from plm_bench.run.protocol import execute
from plm_bench.tasks.task import Example, Task

HIDDEN = 4


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def examples(*sequences: str) -> list[Example]:
    return [Example(f"p{i}", s, 0.0) for i, s in enumerate(sequences)]


class Recorder:
    """An embedding function that remembers what it was asked and answers deterministically."""

    def __init__(self, value=None) -> None:
        self.calls: list[list[str]] = []
        self.value = value

    def __call__(self, batch: list[Example]) -> list[torch.Tensor]:
        self.calls.append([e.sequence for e in batch])
        if self.value is not None:
            return [torch.full((len(e.sequence), HIDDEN), self.value) for e in batch]
        return [torch.arange(len(e.sequence) * HIDDEN, dtype=torch.float32).reshape(-1, HIDDEN) / 7 + len(e.sequence)
                for e in batch]


def cache_for(module: nn.Module, tmp_path, **settings) -> EmbeddingCache:
    return EmbeddingCache(module, HIDDEN, {"dtype": "fp32", **settings}, folder=tmp_path / "cache")


def test_frozen_runs_embed_each_sequence_once_across_seeds_heads_and_learning_rates(tiny_esm, tmp_path, monkeypatch):
    embedded: list[int] = []
    forward = EsmModel.forward

    def counting(self, input_ids=None, **kwargs):
        packed = kwargs.get("cu_seq_lens_q")  # ESM2 runs packed: one row, sequences back to back
        embedded.append(int(input_ids.shape[0]) if packed is None else len(packed) - 1)
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(EsmModel, "forward", counting)
    records = [execute(config(CHARGE, tiny_esm, seed=seed, epochs=1), context(tmp_path)) for seed in range(1, 6)]
    data = CHARGE.load(tmp_path)
    assert sum(embedded) == sum(len(split) for split in data.values())  # every sequence once, over 5 seeds
    assert len({r["metrics"]["test"]["spearman"] for r in records}) > 1  # the seeds did train differently
    calls = len(embedded)
    execute(config(CHARGE, tiny_esm, epochs=1, lr=1e-2, head="light-attention"), context(tmp_path))
    assert len(embedded) == calls
    entries = sorted((tmp_path / "cache" / "embeddings").iterdir())
    assert len(entries) == 3 and all(e.suffix == ".npy" for e in entries)  # one per split, nothing half-written


def test_entries_are_fp16_memory_mapped_and_round_trip(tmp_path):
    recorder = Recorder()
    data = examples("ACDE", "KKKKKKKKK", "W")
    features = cache_for(nn.Linear(2, 2), tmp_path).features(data, recorder)
    assert isinstance(features.array, np.memmap) and features.array.dtype == np.float16
    assert oct(features.array.filename.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())  # shareable
    assert features.array.shape == (4 + 9 + 1, HIDDEN)
    expected = recorder([*data])
    for i in range(len(data)):
        assert features[i].dtype == torch.float32
        assert torch.equal(features[i], expected[i].half().float())
    assert recorder.calls[0] == ["KKKKKKKKK", "ACDE", "W"]  # embedded longest first


def test_the_cache_notices_changed_weights_settings_and_data(tmp_path):
    torch.manual_seed(0)
    module = nn.Linear(3, 3)
    data = examples("ACDE", "KLMN")
    cache = cache_for(module, tmp_path)
    assert cache_for(module, tmp_path).path(data) == cache.path(data)
    assert cache.path(data) != cache.path(examples("ACDE", "KLMQ"))  # one residue differs
    assert cache.path(data) != cache.path(examples("KLMN", "ACDE"))  # another order
    assert cache.path(data) != cache_for(module, tmp_path, dtype="bf16").path(data)
    assert cache.path(data) != cache_for(module, tmp_path, long_policy="chunk").path(data)
    before = fingerprint(module)
    with torch.no_grad():
        module.weight[0, 0] += 1e-6
    assert fingerprint(module) != before
    assert cache_for(module, tmp_path).path(data) != cache.path(data)
    assert fingerprint(module.to(torch.bfloat16)) != fingerprint(module.float())  # dtypes count too


def test_a_hit_does_not_embed_and_labels_do_not_matter(tmp_path):
    recorder = Recorder()
    cache = cache_for(nn.Linear(2, 2), tmp_path)
    cache.features(examples("ACDE", "KLMN"), recorder)
    relabelled = [Example(e.id, e.sequence, 5.0) for e in examples("ACDE", "KLMN")]
    cache.features(relabelled, recorder)
    assert len(recorder.calls) == 1


def test_large_splits_are_embedded_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "CHUNK_ELEMENTS", 10 * HIDDEN)  # at most 10 residues per call
    recorder = Recorder()
    data = examples("A" * 6, "C" * 3, "D" * 12, "E" * 4, "F" * 2)
    features = cache_for(nn.Linear(2, 2), tmp_path).features(data, recorder)
    assert recorder.calls == [["D" * 12], ["AAAAAA", "EEEE"], ["CCC", "FF"]]
    assert [len(features[i]) for i in range(len(data))] == [6, 3, 12, 4, 2]


@pytest.mark.parametrize("value", [float("nan"), 1e5])
def test_embeddings_fp16_cannot_hold_fail_naming_the_record(value, tmp_path):
    cache = cache_for(nn.Linear(2, 2), tmp_path)
    with pytest.raises(BenchError, match=r"record p0: embedding is NaN or beyond fp16's range"):
        cache.features(examples("ACD"), Recorder(value))
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no temporary file


def test_a_backbone_that_breaks_alignment_is_named(tmp_path):
    cache = cache_for(nn.Linear(2, 2), tmp_path)
    with pytest.raises(BenchError, match=r"record p0: backbone gave embeddings of shape \(4, 4\), expected \(3, 4\)"):
        cache.features(examples("ACD"), lambda batch: [torch.zeros(4, HIDDEN)])


def test_concurrent_writers_of_one_entry_both_succeed(tmp_path):
    """Two workers miss at once: both compute, each renames a complete file into place."""
    data = examples("ACDEFG", "KLM")
    module = nn.Linear(2, 2)
    results, errors = [], []

    def slow(batch):
        time.sleep(0.2)
        return Recorder()(batch)

    def worker():
        try:
            results.append(cache_for(module, tmp_path).features(data, slow))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2
    assert all(torch.equal(r[0], results[0][0]) for r in results)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]


def test_a_corrupt_entry_is_recomputed(tmp_path):
    recorder = Recorder()
    cache = cache_for(nn.Linear(2, 2), tmp_path)
    data = examples("ACDE")
    cache.features(data, recorder)
    cache.path(data).write_bytes(b"not an array")
    assert torch.equal(cache.features(data, recorder)[0], recorder(data)[0].half().float())
    assert len(recorder.calls) == 3


def test_a_record_too_long_for_the_backbone_fails_before_any_embedding(tiny_esm, tmp_path, monkeypatch):
    embedded: list[int] = []
    monkeypatch.setattr(EsmModel, "forward", lambda self, **kwargs: embedded.append(1))
    data = CHARGE.load(tmp_path)
    data["train"] = [*data["train"], Example("giant", "A" * 1100, 0.0)]
    giant = Task("toy-giant", "protein", "regression", "spearman", lambda _: data)
    monkeypatch.setitem(plugins.catalog().items["task"], giant.name, giant)
    with pytest.raises(BenchError, match="record giant has 1100 residues, more than backbone esm2-8m"):
        execute(config(giant, tiny_esm, epochs=1), context(tmp_path))
    assert embedded == []
