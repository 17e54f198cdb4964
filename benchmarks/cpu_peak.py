"""This machine's measured dense GEMM peak, the limit every benchmark's model-FLOP utilization (MFU)
is reported against.

A datasheet peak assumes every core at its highest clock with both FMA units busy; a shared VM
gets neither, so the scripts measure instead: square ``torch.mm`` in fp32 and bf16 with the
threads torch uses (``torch.get_num_threads()``), sizes large enough for the library's best
kernel, best of several timings. MFU = model FLOPs (2·params·tokens per forward, see
``plm_bench.measure.profiler.model_flops``) per second / this peak.

    python benchmarks/cpu_peak.py [--device cuda]
"""

from __future__ import annotations

import functools
import time

import click
import torch
from notebook_baseline import DEVICE, print_report

SIZES = (512, 1024, 2048)  # square GEMM sizes tried; the fastest sets the peak
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def gemm_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 3) -> tuple[float, int]:
    """Best measured dense GEMM rate in FLOP/s (``2·n³`` per ``n × n`` product) and the size that reached it.

    Cached per process: every figure of a run divides by the same measurement.
    """
    best, best_size = 0.0, SIZES[0]
    for n in SIZES:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        calls = max(1, int(2e9 // (2 * n**3)))  # about 2 GFLOP per timing: long enough to time, short on 2 cores
        torch.mm(a, b)  # warm-up: thread pool, kernel selection
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            rate = 2 * n**3 * calls / (time.perf_counter() - started)
            if rate > best:
                best, best_size = rate, n
    return best, best_size


def mfu(flops: float, seconds: float, device: str, dtype: torch.dtype) -> str:
    """Model-FLOP utilization of ``flops`` done in ``seconds`` against the measured peak of ``dtype``."""
    return f"{flops / seconds / gemm_peak(device, dtype)[0]:.1%}"


@click.command()
@DEVICE
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
def main(device: str, repeats: int) -> None:
    """Measured dense GEMM peak in fp32 and bf16."""
    rows = []
    for name, dtype in DTYPES.items():
        rate, size = gemm_peak(device, dtype, repeats)
        rows.append((name, f"{rate / 1e9:,.1f}", f"{size} x {size}"))
    print_report(f"Dense GEMM peak on {device}, {torch.get_num_threads()} torch threads, best of {repeats}",
                 rows, ["dtype", "GFLOP/s", "at size"], [f"torch {torch.__version__}"])


if __name__ == "__main__":
    main()
