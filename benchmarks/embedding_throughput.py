"""Figure 1: per-residue embedding extraction in residues/s, the study's notebook loop against the harness.

Baseline: the Embedding_Generation notebook's loop (one sequence at a time, batch 1, fp32).
Ours: ``plm_bench.run.protocol.embed_all``, the path every frozen run takes (length-bucketed batches
of up to 8 sequences under a residue budget; ESM2 runs them packed, back to back without padding;
on CUDA in bf16 by default). Both embed the same length-diverse real sequences (disorder and
subcellular location) with the same weights. Outputs-equal check: every residue's embedding agrees
within tolerance. Each row's model-FLOP utilization is against this machine's measured GEMM peak
in its dtype (``cpu_peak.py``). Targets (issue #15): >= 2.5x, and MFU >= 50% for esm2-35m.

    python benchmarks/embedding_throughput.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import copy
from pathlib import Path

import click
import torch
from cpu_peak import gemm_peak, mfu
from notebook_baseline import (
    BACKBONE,
    BACKBONE_PATH,
    DATA_DIR,
    DEVICE,
    INIT,
    as_shipped,
    describe_backbone,
    length_diverse_set,
    load,
    median,
    notebook_embed,
    print_report,
    timed,
    verdict,
)

from plm_bench.measure.profiler import model_flops
from plm_bench.models.backbone import resolve_dtype
from plm_bench.run.protocol import RunContext, embed_all
from plm_bench.tasks.sources import default_data_dir

TARGET = 2.5
MFU_TARGET = 0.5
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}  # max |ours - notebook| / max |notebook|


@click.command()
@BACKBONE
@BACKBONE_PATH
@INIT
@DEVICE
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Ours' precision (the notebook baseline always runs fp32); auto: fp32 on CPU, bf16 on GPU.")
@DATA_DIR
@click.option("--per-task", type=click.IntRange(min=1), default=40, show_default=True,
              help="Records from each of disorder and subcellular location.")
@click.option("--max-residues", type=click.IntRange(min=1), default=1022, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Ours: sequences per batch at most (the harness default).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
def main(backbone: str, backbone_path: str | None, init: str, device: str, dtype: str, data_dir: Path | None,
         per_task: int, max_residues: int, batch_size: int, repeats: int) -> None:
    """Embedding residues/s: notebook loop vs the harness's bucketed batches."""
    data_dir = data_dir or default_data_dir()
    examples = length_diverse_set(data_dir, per_task, max_residues)
    sequences = [e.sequence for e in examples]
    residues = sum(map(len, sequences))
    notebook = load(backbone, backbone_path=backbone_path, init=init, device=device)
    ours = copy.deepcopy(notebook).to(resolve_dtype(dtype, ("fp32", "bf16", "fp16"), device, backbone))
    notebook = as_shipped(notebook)
    context = RunContext(data_dir=data_dir, device=device)

    warm = examples[:: max(1, len(examples) // 4)]  # thread pools and kernels, before any timing
    notebook_embed(notebook, [e.sequence for e in warm])
    embed_all(ours, warm, context, batch_size)
    base_seconds, our_seconds = [], []
    for _ in range(repeats):  # interleaved, so load changes on the machine hit both alike
        base_seconds.append(timed(lambda: notebook_embed(notebook, sequences), device))
        our_seconds.append(timed(lambda: embed_all(ours, examples, context, batch_size), device))
    expected = notebook_embed(notebook, sequences)
    got = embed_all(ours, examples, context, batch_size)
    scale = max(float(e.abs().max()) for e in expected)
    error = max(float((g.float() - e).abs().max()) for g, e in zip(got, expected, strict=True)) / scale
    tolerance = TOLERANCE[next(ours.parameters()).dtype]

    base_rate, our_rate = residues / median(base_seconds), residues / median(our_seconds)
    ratio = our_rate / base_rate
    tokens = sum(v.numel() for v in (notebook.vocabulary.encode([s])["input_ids"] for s in sequences))
    flops = model_flops(sum(p.numel() for p in notebook.parameters()), tokens, "inference", full=False)

    our_dtype = next(ours.parameters()).dtype
    our_mfu = flops / median(our_seconds) / gemm_peak(device, our_dtype)[0]

    def row(name: str, seconds: list[float], rate: float, dtype: torch.dtype) -> tuple[str, ...]:
        return name, f"{median(seconds):.2f}", f"{rate:,.0f}", mfu(flops, median(seconds), device, dtype)

    lengths = sorted(map(len, sequences))
    print_report(
        f"Embedding extraction: {len(sequences)} sequences, {residues:,} residues "
        f"(lengths {lengths[0]}-{lengths[-1]}, median {lengths[len(lengths) // 2]}), median of {repeats}",
        [row("notebook: one sequence at a time, fp32", base_seconds, base_rate, torch.float32),
         row(f"ours: embed_all, {'packed' if ours.packs else 'padded'} batches of <= {batch_size}, "
             f"{str(our_dtype).removeprefix('torch.')}", our_seconds, our_rate, our_dtype)],
        ["path", "seconds", "residues/s", "MFU (measured GEMM peak)"],
        [describe_backbone(notebook, init, device),
         f"measured GEMM peak: fp32 {gemm_peak(device, torch.float32)[0] / 1e9:,.1f} GFLOP/s, "
         f"{str(our_dtype).removeprefix('torch.')} {gemm_peak(device, our_dtype)[0] / 1e9:,.1f} GFLOP/s",
         f"ratio ours/notebook: {ratio:.2f}x ({verdict(ratio, TARGET)})",
         f"MFU ours: {our_mfu:.1%} (target >= {MFU_TARGET:.0%} {'met' if our_mfu >= MFU_TARGET else 'missed'})",
         f"outputs equal: {'yes' if error <= tolerance else 'NO'} (max |ours - notebook| = {error:.1e} of the "
         f"largest value; tolerance {tolerance:.0e})"],
    )
    if error > tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
