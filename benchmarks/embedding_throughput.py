"""Figure 1: per-residue embedding extraction in residues/s, the study's notebook loop against the harness.

Baseline: the Embedding_Generation notebook's loop (one sequence at a time, batch 1, fp32).
Ours: ``plm_bench.run.protocol.embed_all``, the path every frozen run takes (length-bucketed batches
of up to 8 sequences under a residue budget; ESM2 runs them packed, back to back without padding;
on CUDA in bf16 by default). Both embed the same length-diverse real sequences (disorder and
subcellular location) with the same weights. Outputs-equal check: every residue's embedding agrees
within tolerance. With ``--peer esm-cpp --peer-python VENV/bin/python``, esm.cpp (PyPI ``esm-cpp``)
embeds the same records with the same weights (``esm_cpp_peer.py``; it needs its own venv, as it
pins numpy<2), its hidden states are checked against the notebook's, and ours/esm.cpp is
printed (target >= 1.0x). Each row's model-FLOP utilization is against this machine's measured GEMM peak
in its dtype (``cpu_peak.py``). Targets (issue #15): >= 2.5x, and MFU >= 50% for esm2-35m.

    python benchmarks/embedding_throughput.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path

import click
import numpy as np
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
from plm_bench.models.transformer import TransformerBackbone
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
@click.option("--peer", type=click.Choice(["esm-cpp"]), help="Also time this engine on the same records and weights.")
@click.option("--peer-python", type=click.Path(exists=True, dir_okay=False),
              help="The interpreter of the virtual environment the peer is installed in (esm-cpp pins numpy<2).")
def main(backbone: str, backbone_path: str | None, init: str, device: str, dtype: str, data_dir: Path | None,
         per_task: int, max_residues: int, batch_size: int, repeats: int, peer: str | None,
         peer_python: str | None) -> None:
    """Embedding residues/s: notebook loop vs the harness's bucketed batches."""
    if peer and not peer_python:
        raise click.UsageError(f"--peer {peer} needs --peer-python: the python of the venv {peer} is installed in")
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

    rows, notes = [], []
    peer_error = 0.0
    if peer:
        peer_seconds, peer_error, peer_info = esm_cpp_side_by_side(notebook, sequences, expected, repeats, peer_python)
        peer_rate = residues / median(peer_seconds)
        rows.append(row(f"esm.cpp {peer_info}: forward_scheduled, fp32", peer_seconds, peer_rate, torch.float32))
        versus = our_rate / peer_rate
        notes += [f"ratio ours/esm.cpp: {versus:.2f}x ({verdict(versus, 1.0)}; esm.cpp timed after ours, "
                  "in its own process)",
                  f"esm.cpp outputs equal: {'yes' if peer_error <= TOLERANCE[torch.float32] else 'NO'} "
                  f"(max |esm.cpp - notebook| = {peer_error:.1e} of the largest value)"]
    lengths = sorted(map(len, sequences))
    print_report(
        f"Embedding extraction: {len(sequences)} sequences, {residues:,} residues "
        f"(lengths {lengths[0]}-{lengths[-1]}, median {lengths[len(lengths) // 2]}), median of {repeats}",
        [row("notebook: one sequence at a time, fp32", base_seconds, base_rate, torch.float32),
         row(f"ours: embed_all, {'packed' if ours.packs else 'padded'} batches of <= {batch_size}, "
             f"{str(our_dtype).removeprefix('torch.')}", our_seconds, our_rate, our_dtype), *rows],
        ["path", "seconds", "residues/s", "MFU (measured GEMM peak)"],
        [describe_backbone(notebook, init, device),
         f"measured GEMM peak: fp32 {gemm_peak(device, torch.float32)[0] / 1e9:,.1f} GFLOP/s, "
         f"{str(our_dtype).removeprefix('torch.')} {gemm_peak(device, our_dtype)[0] / 1e9:,.1f} GFLOP/s",
         f"ratio ours/notebook: {ratio:.2f}x ({verdict(ratio, TARGET)})",
         f"MFU ours: {our_mfu:.1%} (target >= {MFU_TARGET:.0%} {'met' if our_mfu >= MFU_TARGET else 'missed'})",
         f"outputs equal: {'yes' if error <= tolerance else 'NO'} (max |ours - notebook| = {error:.1e} of the "
         f"largest value; tolerance {tolerance:.0e})", *notes],
    )
    if error > tolerance or peer_error > TOLERANCE[torch.float32]:
        raise SystemExit(1)


def esm_cpp_side_by_side(backbone: TransformerBackbone, sequences: list[str], expected: list[torch.Tensor],
                         repeats: int, python: str) -> tuple[list[float], float, str]:
    """esm.cpp on the same weights and records, in its own venv (``esm_cpp_peer.py``) with torch's
    thread count: its seconds per pass, the largest difference of its per-residue hidden states
    from the notebook's (relative to their largest value), and its version and ISA."""
    with tempfile.TemporaryDirectory(prefix="plm-bench-esm-cpp-") as scratch:
        folder = Path(scratch)
        backbone.model.save_pretrained(folder / "weights")
        ids = [backbone.vocabulary.encode([s])["input_ids"][0].tolist() for s in sequences]
        (folder / "job.json").write_text(json.dumps({"weights": str(folder / "weights" / "model.safetensors"),
                                                     "ids": ids, "check": list(range(len(ids))),
                                                     "repeats": repeats}))
        subprocess.run([python, str(Path(__file__).with_name("esm_cpp_peer.py")), str(folder / "job.json"),
                        str(folder / "result.npz")], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
        result = np.load(folder / "result.npz")
        start = len(backbone.vocabulary.prefix)
        scale = max(float(e.abs().max()) for e in expected)
        error = max(float(np.abs(result[str(i)][start:start + len(s)] - e.numpy()).max())
                    for i, (s, e) in enumerate(zip(sequences, expected, strict=True))) / scale
        info = f"{result['version']} ({result['isa']}, {int(result['threads'])} threads)"
        return result["seconds"].tolist(), error, info


if __name__ == "__main__":
    main()
