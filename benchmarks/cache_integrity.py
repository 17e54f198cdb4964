"""What the embedding cache's integrity costs: writing with reserved space, plain writes and a
per-sequence SHA-1 against the memory-mapped write it replaced, and opening an entry with its
checksum verified against a bare memory map — in the same run, on the same entry.

The baseline is the earlier writer (``numpy.lib.format.open_memmap``, rows assigned, flushed),
re-implemented here; ``ours`` is ``EmbeddingCache.features`` on a miss (write) and on a hit
(open: verifying reads every byte once). For scale the report also times one pass over all
rows, which every training epoch of a frozen head makes. Outputs-equal check: the rows read
back through the cache equal the rows the baseline wrote.

    python benchmarks/cache_integrity.py [--residues 200000 --hidden 480]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from notebook_baseline import print_report
from torch import nn

from plm_bench.models.embeddings import EmbeddingCache
from plm_bench.tasks.task import Example


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


@click.command()
@click.option("--residues", type=click.IntRange(min=1000), default=200_000, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=480, show_default=True)
@click.option("--length", type=click.IntRange(min=1), default=250, show_default=True, help="Residues per sequence.")
def main(residues: int, hidden: int, length: int) -> None:
    rng = np.random.default_rng(0)
    count = residues // length
    examples = [Example(f"p{i}", "".join(rng.choice(list("ACDEFGHIKL"), length)), 0.0) for i in range(count)]
    rows = [torch.from_numpy(rng.standard_normal((length, hidden), dtype=np.float32)) for _ in range(count)]
    by_sequence = {e.sequence: r for e, r in zip(examples, rows, strict=True)}

    def embed(batch: list[Example]) -> list[torch.Tensor]:
        return [by_sequence[e.sequence] for e in batch]

    with tempfile.TemporaryDirectory() as folder:
        baseline_path = Path(folder) / "baseline.npy"

        def memmap_write() -> None:
            array = np.lib.format.open_memmap(baseline_path, mode="w+", dtype=np.float16,
                                              shape=(count * length, hidden))
            for i, r in enumerate(rows):
                array[i * length:(i + 1) * length] = r.numpy()
            array.flush()
            del array

        cache = EmbeddingCache(nn.Linear(2, 2), hidden, {"dtype": "fp32"}, folder=Path(folder) / "cache")
        write_baseline, _ = timed(memmap_write)
        write_ours, _ = timed(lambda: cache.features(examples, embed))
        open_baseline, bare = timed(lambda: np.load(baseline_path, mmap_mode="r"))
        open_ours, features = timed(lambda: cache.features(examples, embed))
        epoch, _ = timed(lambda: [features[i] for i in range(len(features))])
        equal = all(np.array_equal(features[i].numpy(), np.asarray(bare[i * length:(i + 1) * length], np.float32))
                    for i in range(count))
    megabytes = count * length * hidden * 2 / 2**20
    print_report(
        f"embedding cache entry: {count} sequences x {length} residues x {hidden} (fp16, {megabytes:.0f} MiB)",
        [("write", f"{write_baseline:.3f} s", f"{write_ours:.3f} s", f"{write_ours / write_baseline:.2f}x"),
         ("open", f"{open_baseline * 1000:.1f} ms", f"{open_ours:.3f} s", f"{open_ours / epoch:.2f} epochs")],
        ("step", "baseline (memory map)", "ours (checked)", "ours / baseline"),
        [f"one pass over all rows (a training epoch reads them all): {epoch:.3f} s; opening with the checksum "
         f"verified costs {open_ours / epoch:.2f} such passes, once per run and split",
         f"outputs-equal check: rows read back through the cache equal the baseline's: {'yes' if equal else 'NO'}"])
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
