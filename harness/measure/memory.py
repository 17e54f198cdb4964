"""Cost measurements recorded with every run: peak memory and throughput.

On CUDA the peak is torch's allocated and reserved device memory since the run began; on CPU
it is the process's peak resident set size (the whole process, so a long-lived process running
several runs reports the largest so far).
"""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda", "allocated_bytes": torch.cuda.max_memory_allocated(device),
                "reserved_bytes": torch.cuda.max_memory_reserved(device)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "process_rss", "rss_bytes": rss if sys.platform == "darwin" else rss * 1024}


def per_second(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None
