"""Issue 14, item 2: the embedding cache on a full disk, after kills, and with corrupted entries.
A full disk was a bus error (memory-mapped write) leaving a sparse temporary; killed writers left
full-size temporaries forever; zeroed, permuted or random entries were trained on."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.models import embeddings
from plm_bench.models.embeddings import EmbeddingCache, temporary_tag
from plm_bench.tasks.task import Example

HIDDEN = 4
SEQUENCES = ("ACDEFG", "KLMN", "PQRSTVW", "KLMN"[::-1])


def examples() -> list[Example]:
    return [Example(f"p{i}", s, 0.0) for i, s in enumerate(SEQUENCES)]


class Embed:
    """Distinct rows per sequence, and a count of the sequences it was asked to embed."""

    def __init__(self) -> None:
        self.embedded = 0

    def __call__(self, batch: list[Example]) -> list[torch.Tensor]:
        self.embedded += len(batch)
        return [torch.arange(len(e.sequence) * HIDDEN, dtype=torch.float32).reshape(-1, HIDDEN) / 10
                + sum(i * ord(c) for i, c in enumerate(e.sequence)) / 100 for e in batch]  # order-sensitive


@pytest.fixture
def cache(tmp_path) -> EmbeddingCache:
    return EmbeddingCache(nn.Linear(2, 2), HIDDEN, {"dtype": "fp32"}, folder=tmp_path / "cache")


def rows(features) -> list[np.ndarray]:
    return [features[i].numpy() for i in range(len(features))]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["posix_fallocate", "pwrite"])
def test_a_full_disk_is_one_line_naming_the_cache_and_the_space_and_leaves_no_temporary(cache, monkeypatch, where):
    monkeypatch.setattr(os, where, no_space)
    with pytest.raises(BenchError) as error:
        cache.features(examples(), Embed())
    message = str(error.value)
    assert message.startswith(f"embedding cache {cache.folder}: no space for a ") and " GiB entry (" in message
    assert f"point ${embeddings.CACHE_ENV} at a larger disk" in message and "\n" not in message
    assert list(cache.folder.iterdir()) == []


def test_a_short_write_is_a_full_disk_too(cache, monkeypatch):
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: len(data) // 2)
    with pytest.raises(BenchError, match="no space for a"):
        cache.features(examples(), Embed())
    assert list(cache.folder.iterdir()) == []


@pytest.mark.parametrize("damage", ["zeroed", "permuted", "random bytes", "truncated"])
def test_a_corrupted_entry_is_detected_and_recomputed(cache, capsys, damage):
    embed = Embed()
    expected = rows(cache.features(examples(), embed))
    path = cache.path(examples())
    array = np.load(path, mmap_mode="r")
    data = bytearray(path.read_bytes())
    start, end = array.offset, array.offset + array.nbytes
    del array
    if damage == "zeroed":
        data[start:start + 16] = bytes(16)
    elif damage == "permuted":  # two sequences of the same length swapped: shapes still fit
        width = 4 * HIDDEN * 2
        first, second = start + 6 * HIDDEN * 2, start + (6 + 4 + 7) * HIDDEN * 2
        data[first:first + width], data[second:second + width] = data[second:second + width], data[first:first + width]
    elif damage == "random bytes":
        data[start:end] = np.random.default_rng(0).bytes(end - start)
    else:
        data = data[:-5]
    path.write_bytes(bytes(data))
    again = rows(cache.features(examples(), embed))
    assert embed.embedded == 2 * len(SEQUENCES)  # computed anew, not read
    assert all(np.array_equal(a, b) for a, b in zip(again, expected, strict=True))
    assert f"warning: embedding cache entry {path} is corrupt" in capsys.readouterr().err or damage == "truncated"


def test_an_intact_entry_is_read_not_recomputed(cache):
    embed = Embed()
    first = rows(cache.features(examples(), embed))
    second = rows(cache.features(examples(), embed))
    assert embed.embedded == len(SEQUENCES)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(np.isfinite(a).all() for a in second)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(cache):
    cache.folder.mkdir(parents=True)
    host = temporary_tag().rpartition("-")[0]
    dead = cache.folder / f"{'a' * 40}.{host}-{dead_pid()}.xyz.tmp"  # a SIGKILLed writer on this host
    live = cache.folder / f"{'b' * 40}.{temporary_tag()}.xyz.tmp"  # this process, still writing
    elsewhere = cache.folder / f"{'c' * 40}.otherhost-1.xyz.tmp"  # another host's: kept until stale
    stale = cache.folder / f"{'d' * 40}.otherhost-2.xyz.tmp"
    for path in (dead, live, elsewhere, stale):
        path.write_bytes(bytes(1000))
    os.utime(stale, (1, 1))
    cache.features(examples(), Embed())
    assert sorted(p.name for p in cache.folder.glob("*.tmp")) == sorted([live.name, elsewhere.name])


def test_a_failing_embedding_leaves_no_temporary(cache):
    def fail(batch):
        raise RuntimeError("backbone crashed")

    with pytest.raises(RuntimeError):
        cache.features(examples(), fail)
    assert list(cache.folder.iterdir()) == []


SLOW_EMBEDDING = """
import sys, time
from pathlib import Path
from plm_bench.run import protocol
def stall(*args, **kwargs):
    Path(sys.argv[1]).write_text("embedding")  # the cache entry's temporary exists now
    time.sleep(120)
protocol.embed_all = stall
from plm_bench.cli import main
main(sys.argv[2:])
"""


def test_sigterm_mid_write_removes_the_temporary(tmp_path):
    from robustness import write_task

    cache_root, marker = tmp_path / "cache-root", tmp_path / "embedding"
    run = subprocess.Popen([sys.executable, "-c", SLOW_EMBEDDING, str(marker), "run", "--backbone", "onehot",
                            "--task", str(write_task(tmp_path)), "--store", str(tmp_path / "s.sqlite"), "--device",
                            "cpu"], env={**os.environ, embeddings.CACHE_ENV: str(cache_root),
                                         "PLM_BENCH_TASK_FILES": ""}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), run.stderr.read() if run.poll() is not None else "the run never started embedding"
        assert list((cache_root / "embeddings").glob("*.tmp"))  # mid-write
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        run.kill()
        run.wait()
    assert list((cache_root / "embeddings").iterdir()) == []
