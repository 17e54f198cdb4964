"""What mixed precision costs in memory against the old pure-bf16 path, measured in one run.

Full fine-tuning of one backbone (random init of the registry's architecture), one AdamW step at
batch 1, through ``plm_bench.measure.profiler`` as ``bench profile`` measures it, under:

- ``pure bf16``: the path before the precision policy (the backbone's weights stored, stepped
  and kept in bf16, AdamW moments in bf16 too; the head fp32): 2 + 2 + 4 bytes a backbone weight;
- ``fp32``: weights, gradients and both moments fp32: 16 bytes a trainable weight;
- ``bf16-mixed`` and ``fp16-mixed``: the same 16 bytes of fp32 state, activations (and the
  autocast's per-step weight copies) in 16-bit.

Held: what the model keeps between steps (weights, gradients, optimizer state: exact tensor
bytes). Peak: one step's peak memory (CPU: the process's peak resident set above what it held
apart from the model; CUDA: torch's peak reserved memory), per sequence length. Step time is a
ratio to fp32's within this run (two steps each: only meaningful on an otherwise idle machine).
Output: a markdown table for benchmarks/README.md.

    python benchmarks/precision_memory.py                      # esm2-35m on CPU
    python benchmarks/precision_memory.py --device cuda --backbone esm2-650m --length 512 --length 1024
"""

from __future__ import annotations

import gc
import time

import click
import torch

from plm_bench.measure.profiler import GIB, Profiler, profile_config, synthetic_examples

MIB = 1024**2
PATHS = ("pure bf16", "fp32", "bf16-mixed", "fp16-mixed")


def profiler_for(path: str, backbone: str, device: torch.device) -> Profiler:
    """The model and optimizer of ``path``: the run protocol's for a precision; for pure bf16 the fp32
    model with its backbone cast to bf16 and the optimizer made over those bf16 weights (the old path)."""
    precision = "fp32" if path == "pure bf16" else path
    profiler = Profiler(profile_config(backbone, "full", init="random", precision=precision), device)
    if path == "pure bf16":
        profiler.model.backbone.to(torch.bfloat16)
        profiler.optimizer = torch.optim.AdamW(profiler.model.trainable_parameters(), lr=2e-5)
    return profiler


def seconds_per_step(profiler: Profiler, length: int, steps: int = 2) -> float:
    batch = synthetic_examples(1, length)
    profiler.train_step(batch)  # warm-up (and the optimizer state exists from here on)
    started = time.perf_counter()
    for _ in range(steps):
        profiler.train_step(batch)
    return (time.perf_counter() - started) / steps


@click.command()
@click.option("--backbone", default="esm2-35m", show_default=True, help="Registry name (random init).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--length", "lengths", type=click.IntRange(min=1), multiple=True, default=(128, 512), show_default=True)
def main(backbone: str, device: str, lengths: tuple[int, ...]) -> None:
    """Held and peak memory of one full fine-tuning step per precision, against the old pure-bf16 path."""
    torch_device = torch.device(device)
    rows = {}
    for path in PATHS:
        profiler = profiler_for(path, backbone, torch_device)
        trainable = sum(p.numel() for p in profiler.model.trainable_parameters())
        seconds = seconds_per_step(profiler, lengths[0])
        peaks = {n: profiler.peak(n) for n in lengths}
        held = profiler.held_bytes()  # after several steps: fp16's scaler skips its first one or two
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in profiler.model.trainable_parameters()})
        moments = sorted({str(v.dtype).removeprefix("torch.") for s in profiler.optimizer.state.values()
                          for k, v in s.items() if k.startswith("exp_avg")})
        rows[path] = {"trainable": trainable, "held": held, "peaks": peaks, "seconds": seconds,
                      "dtypes": "/".join(dtypes), "moments": "/".join(moments)}
        print(f"{path}: held {held / MIB:.1f} MiB ({held / trainable:.2f} bytes a trainable weight), "
              + ", ".join(f"peak at {n}: {p / MIB:.1f} MiB" for n, p in peaks.items()), flush=True)
        del profiler
        gc.collect()
    where = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} thread(s)"
    base, old = rows["fp32"], rows["pure bf16"]
    print(f"\n{backbone} (random init, {base['trainable'] / 1e6:.1f}M trainable), full fine-tuning, one AdamW step at "
          f"batch 1, on {where}; torch {torch.__version__}.\n")
    print("| path | trainable weights | AdamW moments | held (MiB) | bytes / trainable weight | held vs pure bf16 | "
          + " | ".join(f"step peak at {n} (MiB)" for n in lengths) + f" | peak at {lengths[-1]} vs pure bf16 | "
          f"step time vs fp32 (length {lengths[0]}) |")
    print("|---" * (8 + len(lengths)) + "|")
    for path, row in rows.items():
        peaks = " | ".join(f"{p / MIB:.0f}" if p is not None else "OOM" for p in row["peaks"].values())
        last, old_last = row["peaks"][lengths[-1]], old["peaks"][lengths[-1]]
        print(f"| {path} | {row['dtypes']} | {row['moments']} | {row['held'] / MIB:.0f} | "
              f"{row['held'] / row['trainable']:.1f} | {row['held'] / old['held']:.2f}x | {peaks} | "
              f"{last / old_last:.2f}x | {row['seconds'] / base['seconds']:.2f}x |")
    print(f"\n(1 GiB = {GIB / MIB:.0f} MiB; held counts weights, gradients and optimizer state, the head's included.)")


if __name__ == "__main__":
    main()
