"""How many CPU threads a run's work uses: the work decides, an explicit setting overrides.

torch's default (one thread per core of the machine) oversubscribes a shared node: every local
grid worker, and every other process on it, claims all cores. A frozen head's steps are tiny (a
batch of 8 residues through a 32-unit MLP): one thread runs them fastest, since waking a pool
costs more than the work. Backbone forward and backward passes use the cores this process owns
(``os.sched_getaffinity``: what a launcher pinned it to, e.g. ``bench grid --launcher local
--workers N`` on CPUs gives each worker its own slice). ``PLM_BENCH_THREADS=N`` overrides both.

Threads change timings, never results beyond float rounding, so they are not part of a run's
config (its identity); the record's ``environment`` says what a run used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from plm_bench.errors import BenchError

ENV = "PLM_BENCH_THREADS"
HEAD_THREADS = 1  # a frozen head's step: a few kFLOP, below what a thread pool's wake-up costs


def explicit() -> int | None:
    """The thread count set in ``$PLM_BENCH_THREADS``, if any."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BenchError(f"${ENV}={value!r}: give a positive number of threads, or unset it")
    return int(value)


def owned_cores() -> int:
    """The cores this process may run on (its CPU affinity; all the machine's where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def for_backbone() -> int:
    """Threads for backbone work (embedding, fine-tuning): the cores this process owns."""
    return explicit() or owned_cores()


def for_head() -> int:
    """Threads for a frozen head's training and prediction."""
    return explicit() or HEAD_THREADS


@contextmanager
def using(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def described() -> dict[str, str]:
    """What the record's ``environment`` says about threads."""
    cores = owned_cores()
    source = ENV if explicit() else f"policy, {cores} core{'s' * (cores != 1)} owned"
    return {"threads": f"backbone {for_backbone()}, frozen head {for_head()} ({source})"}


def split_cores(workers: int) -> list[set[int]]:
    """The cores this process owns dealt out to ``workers`` local workers: contiguous slices as
    even as possible; with more workers than cores each worker gets one core, shared round-robin."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if workers >= len(cores):
        return [{cores[i % len(cores)]} for i in range(workers)]
    size, extra = divmod(len(cores), workers)
    slices, start = [], 0
    for i in range(workers):
        end = start + size + (i < extra)
        slices.append(set(cores[start:end]))
        start = end
    return slices
