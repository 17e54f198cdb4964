"""Figure 4: peak memory of a training step, LoRA against full fine-tuning, and the longest sequence
that trains at batch 1 within a memory budget (the study's Figure 5b, on whatever device runs it).

Both methods are the harness's (``plm_bench.run.protocol.build``) and are measured by
``plm_bench.measure.profiler``: a peak is the memory one AdamW step at batch 1 needs, weights and optimizer
state included (CUDA: the caching allocator's peak reservation; CPU: the process's peak resident
set above what it held before the model was built). Full fine-tuning is the reference, LoRA the
method under test. Random ESM2 weights are saved with the published config first (dropout 0.0,
whose masks would otherwise be kept for the backward pass). Outputs-equal check: LoRA, before
training, computes the same embeddings as the backbone it adapts (its B matrices start at
zero), so the two measure the same model.

    python benchmarks/memory_envelope.py --budget 1 --budget 2
    python benchmarks/memory_envelope.py --device cuda --backbone esm2-650m --budget 8 --budget 16 --budget 24
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import torch
from notebook_baseline import BACKBONE, BACKBONE_PATH, DEVICE, INIT, describe_backbone, print_report, weights

from plm_bench.measure.profiler import GIB, Profiler, profile_config, synthetic_examples

METHODS = ("full", "lora")  # reference first
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}  # max |lora - full| / max |full|


def gib(peak: int | None) -> str:
    return "out of memory" if peak is None else f"{peak / GIB:.2f}"


def ratio(reference: int | None, ours: int | None) -> str:
    return f"{reference / ours:.2f}x" if reference and ours else "n/a"


@click.command()
@BACKBONE
@BACKBONE_PATH
@INIT
@DEVICE
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16-mixed", "fp16-mixed"]), default="auto",
              show_default=True, help="What the steps compute in (README, Precision).")
@click.option("--length", "lengths", type=click.IntRange(min=1), multiple=True, default=(128, 512, 1024),
              show_default=True, help="Sequence lengths of the peak-memory table.")
@click.option("--budget", "budgets", type=click.FloatRange(min=0, min_open=True), multiple=True, default=(0.5, 1.0),
              show_default=True, help="Memory budgets in GiB for the longest-sequence search.")
@click.option("--max-length", type=click.IntRange(min=1), help="Search cap (default: the backbone's maximum or 4096).")
@click.option("--resolution", type=click.IntRange(min=1), default=64, show_default=True,
              help="Residues to which the longest length is found.")
def main(backbone: str, backbone_path: str | None, init: str, device: str, dtype: str, precision: str,
         lengths: tuple[int, ...],
         budgets: tuple[float, ...], max_length: int | None, resolution: int) -> None:
    """Peak training memory and the longest sequence within budgets: full fine-tuning vs LoRA."""
    torch_device = torch.device(device)
    probe = [e.sequence for e in synthetic_examples(2, 64)]
    peaks: dict[str, dict[int, int | None]] = {}
    longest: dict[str, dict[int, int]] = {}
    embeddings: dict[str, torch.Tensor] = {}
    budget_bytes = [int(b * GIB) for b in budgets]
    cap = 0
    with tempfile.TemporaryDirectory(prefix="plm-bench-memory-") as scratch:
        path, load_init, label = weights(backbone, backbone_path, init, Path(scratch))
        for method in METHODS:
            profiler = Profiler(profile_config(backbone, method, backbone_path=path, dtype=dtype, precision=precision,
                                               init=load_init), torch_device)
            policy = profiler.model.precision
            with torch.no_grad(), policy.autocast():
                embeddings[method] = profiler.backbone.eval().embed(probe).hidden.float().cpu()
            cap = profiler.length_cap(max_length)
            peaks[method] = {n: profiler.peak(n) for n in sorted(lengths) if n <= cap}
            envelope = profiler.envelope(budget_bytes, cap, resolution, measured=peaks[method])
            longest[method] = envelope.longest
            described = describe_backbone(profiler.backbone, label, device)
            tolerance = TOLERANCE[policy.compute]
            del profiler  # the next method measures without this one's memory
    full, lora = METHODS
    error = float((embeddings[lora] - embeddings[full]).abs().max() / embeddings[full].abs().max())
    rows = [(f"{n} residues", gib(peaks[full][n]), gib(peaks[lora][n]), ratio(peaks[full][n], peaks[lora][n]))
            for n in sorted(peaks[full])]
    rows += [(f"longest in {b / GIB:g} GiB", limit(longest[full][b], cap), limit(longest[lora][b], cap),
              ratio(longest[lora][b], longest[full][b])) for b in budget_bytes]
    print_report(
        f"Training memory at batch 1 (peak GiB) and the longest trainable sequence (residues, to {resolution})",
        rows, ["", "full fine-tuning", "LoRA", "full/LoRA (memory), LoRA/full (length)"],
        [described,
         f"outputs equal: {'yes' if error <= tolerance else 'NO'} (LoRA before training vs the plain backbone: max "
         f"difference {error:.1e} of the largest value; tolerance {tolerance:.0e})"],
    )
    if error > tolerance:
        raise SystemExit(1)


def limit(length: int, cap: int) -> str:
    return f">= {cap} (cap)" if length >= cap else str(length)


if __name__ == "__main__":
    main()
