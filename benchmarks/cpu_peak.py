"""The measured dense GEMM peak of the device in use (CPU or CUDA GPU), the limit every benchmark's
model-FLOP utilization (MFU) is reported against.

A datasheet peak assumes every core at its highest clock with every unit busy; a shared VM gets
neither, and a GPU reaches its datasheet figure on no real kernel, so the scripts measure instead:
square ``torch.mm`` in fp32 and bf16 (CPU: with the threads torch uses, ``torch.get_num_threads()``),
sizes large enough for the library's best kernel (larger on a GPU, where small products are
launch-bound), best of several timings. MFU = model FLOPs (2·params·tokens per forward, see
``plm_bench.measure.profiler.model_flops``) per second / this peak. The file keeps its first name,
which the other scripts import.

    python benchmarks/cpu_peak.py [--device cuda]
"""

from __future__ import annotations

import functools
import time

import click
import torch
from notebook_baseline import DEVICE, print_report

from plm_bench.errors import BenchError

# Square GEMM sizes tried per device type; the fastest sets the peak.
SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}
# FLOPs per timing: long enough to time (and, on a GPU, to bring its clocks up), short on 2 cores.
WORK = {"cpu": 2e9, "cuda": 5e12}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def gemm_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 3) -> tuple[float, int]:
    """Best measured dense GEMM rate on ``device`` in FLOP/s (``2·n³`` per ``n × n`` product) and the
    size that reached it.

    Cached per process: every figure of a run divides by the same measurement.
    """
    kind = torch.device(device).type
    if kind not in SIZES:
        raise BenchError(f"device {device}: the GEMM peak is measured on {' or '.join(SIZES)} only")

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize(device)

    best, best_size = 0.0, SIZES[kind][0]
    for n in SIZES[kind]:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        calls = max(1, int(WORK[kind] // (2 * n**3)))
        for _ in range(calls):  # warm-up: thread pool, kernel selection, GPU clocks
            torch.mm(a, b)
        for _ in range(repeats):
            sync()
            started = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            sync()
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
    threads = f"{torch.get_num_threads()} torch threads" if device == "cpu" else torch.cuda.get_device_name()
    print_report(f"Dense GEMM peak on {device} ({threads}), best of {repeats}",
                 rows, ["dtype", "GFLOP/s", "at size"], [f"torch {torch.__version__}"])


if __name__ == "__main__":
    main()
