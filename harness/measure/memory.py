"""Memory, measured one way everywhere: what a run records and what ``bench profile`` measures.

On CUDA a peak is torch's caching-allocator peak since the last reset (reserved: what the device
must hold; allocated: what tensors used). On CPU it is the process's peak resident set since the
last reset (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), so each run of a
long-lived process reports its own peak; where /proc cannot reset it, the process's lifetime
peak, labelled as such.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from plm_bench.errors import BenchError

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # written to clear_refs: VmHWM := VmRSS (Linux >= 4.0)
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def resettable_rss() -> bool:
    """Whether this process can reset its peak resident set (Linux, /proc writable)."""
    return PROC_STATUS.is_file() and os.access(PROC_CLEAR_REFS, os.W_OK)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the next :func:`peak_memory` covers what happens from now on."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif resettable_rss():
        PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)


def peak_memory(device: torch.device) -> dict:
    """The peak since :func:`reset_peak_memory`, with its kind (what the numbers mean)."""
    if device.type == "cuda":
        return {"kind": "cuda", "allocated_bytes": torch.cuda.max_memory_allocated(device),
                "reserved_bytes": torch.cuda.max_memory_reserved(device)}
    if resettable_rss():
        return {"kind": "process_rss", "rss_bytes": _proc_bytes("VmHWM")}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "process_rss_lifetime", "rss_bytes": rss if sys.platform == "darwin" else rss * 1024}


def per_second(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def _proc_bytes(field: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise BenchError(f"{PROC_STATUS} has no {field} line; the CPU memory profile needs Linux >= 4.0")


class MemoryMeter:
    """Peak memory of one piece of work on ``device``, weights and optimizer state included.

    On CUDA that is torch's peak reservation. On CPU it is the process's peak resident set
    during the work, above a floor taken just before it: the resident set then, less ``held()``,
    the bytes the measured model already holds (weights, gradients, optimizer state). So the
    interpreter, libraries and whatever else the process holds or frees meanwhile do not count.
    """

    def __init__(self, device: torch.device, held: Callable[[], int] = lambda: 0) -> None:
        self.device = device
        self.held = held
        self._trim = None
        if device.type == "cpu":
            if not resettable_rss():
                raise BenchError("measuring CPU memory needs Linux's /proc/self/status and clear_refs; "
                                 "run the memory profile on Linux or on a CUDA device (--device cuda)")
            name = ctypes.util.find_library("c")
            libc = ctypes.CDLL(name) if name else None
            # glibc keeps freed heap pages, and after freeing big blocks it raises its mmap threshold so
            # later big blocks reuse resident heap: both would hide this work's peak. A fixed threshold
            # makes big tensors mmap'd (given back on free) and trimming returns the rest.
            if libc is not None and hasattr(libc, "mallopt"):
                libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
            self._trim = getattr(libc, "malloc_trim", None)

    @property
    def kind(self) -> str:
        """What :meth:`measure` returns, as a stored envelope names it (described, torch-free, in
        :data:`plm_bench.results.profiles.MEMORY_KINDS`)."""
        return "cuda_reserved" if self.device.type == "cuda" else "process_rss"

    def _settle(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        elif self._trim is not None:
            self._trim(0)

    def measure(self, work: Callable[[], object]) -> int:
        """Peak bytes while ``work()`` runs (exceptions, e.g. out of memory, propagate)."""
        self._settle()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            work()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_reserved(self.device)
        floor = _proc_bytes("VmRSS") - self.held()
        PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
        work()
        return max(0, _proc_bytes("VmHWM") - floor)

    def available(self) -> int:
        """Memory the work could still take: free device memory, or the host's MemAvailable, plus
        what it holds already."""
        if self.device.type == "cuda":
            return torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device)
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 + self.held()
        raise BenchError("/proc/meminfo has no MemAvailable line; give budgets below the free memory")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights and views count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())
