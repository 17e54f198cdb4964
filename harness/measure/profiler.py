"""What fine-tuning a backbone costs on this device: throughput and the memory envelope.

``bench profile`` and the scripts in ``benchmarks/`` measure with this module. Throughput is
residues per second of training steps (forward, backward, optimizer step) and of inference, on
synthetic sequences of one length, so that no padding is counted. Where the GPU's bf16 peak is
known it is also given as model FLOP utilization (MFU): ``2·params·tokens`` per forward, plus
``2·params·tokens`` for activation gradients and as much again for weight gradients when every
backbone weight trains.

Steps follow the run's precision policy (:mod:`plm_bench.models.precision`), so a profile
measures one precision: fp32 trainable weights, gradients and AdamW moments (16 bytes a trainable
parameter) under every policy, activations and frozen weights in 16-bit under mixed precision.

The memory envelope is the peak memory of one training step at batch 1 as a function of the
sequence length, and from it the longest sequence that trains within a memory budget (the
study's Figure 5b). A peak is what the step needs, weights and optimizer state included: on
CUDA the most memory torch's caching allocator reserved (what the device must hold); on CPU the
process's peak resident set (Linux ``VmHWM``, reset before each step) above what the process
held apart from the model (see :class:`MemoryMeter`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from plm_bench import plugins
from plm_bench.alphabet import AMINO_ACIDS
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.measure.memory import MemoryMeter, tensor_bytes
from plm_bench.run.protocol import build
from plm_bench.run.training import labels_for, loss_fn
from plm_bench.tasks.task import Example, Task

GIB = 1024**3
SEARCH_CAP = 4096  # residues: the envelope search's cap for backbones without a length limit (T5)

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against
# torch.cuda.get_device_name in this order (more specific names first).
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H100", 989.0), ("H200", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0),
)


def no_data(*_: object) -> dict:
    """The profiling task's loader: its sequences are synthetic, it reads no files."""
    return {}


# One value per protein, scored by MSE: the smallest head and loss, so the backbone dominates.
PROFILE_TASK = Task(name="profile", level="protein", type="regression", metric="spearman", load=no_data,
                    description="Synthetic sequences of one length, for throughput and memory profiles.")


def synthetic_examples(count: int, length: int, seed: int = 0) -> list[Example]:
    """``count`` random sequences of ``length`` standard residues (label 0.0), reproducibly."""
    rng = random.Random(f"{seed}:{length}")
    return [Example(id=f"synthetic-{length}-{i + 1}", sequence="".join(rng.choices(AMINO_ACIDS, k=length)),
                    label=0.0) for i in range(count)]


def bf16_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None where it is not in :data:`BF16_PEAK_TFLOPS`."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in BF16_PEAK_TFLOPS if key in name), None)


def model_flops(parameters: int, tokens: int, mode: str, full: bool) -> float:
    """Model FLOPs of one pass over ``tokens``: ``2·params·tokens`` forward; training adds as much
    for activation gradients and, when every weight trains (``full``), as much for weight gradients."""
    passes = 1 if mode == "inference" else 3 if full else 2
    return passes * 2.0 * parameters * tokens


@dataclass(frozen=True)
class Rate:
    """Throughput of ``steps`` timed steps of ``batch_size`` sequences of ``length`` residues."""

    mode: str  # train | inference
    batch_size: int
    length: int
    steps: int
    seconds: float
    residues_per_second: float
    flops_per_second: float  # model FLOPs, see the module docstring
    mfu: float | None  # flops_per_second over the device's bf16 peak; None where unknown


@dataclass(frozen=True)
class Envelope:
    """Peak memory of a training step at batch 1 by sequence length, and the longest length
    within each budget (0: not even the shortest length tried; ``max_length``: the backbone's
    limit or the search's cap came first, not memory)."""

    peaks: dict[int, int | None]  # length -> peak bytes; None: out of memory
    longest: dict[int, int]  # budget bytes -> longest length that fits
    max_length: int
    resolution: int
    step: str  # the step measured: train, or inference (frozen)
    memory: str  # what a peak is: MemoryMeter.kind


class Profiler:
    """A run's model (as :func:`plm_bench.run.protocol.build` makes it) under measurement.

    Methods that train the backbone are profiled by training steps; ``frozen`` by inference,
    since its backbone only ever embeds.
    """

    def __init__(self, config: RunConfig, device: torch.device, peak_flops: float | None = None) -> None:
        self.device = device
        self.backbone, self.model = build(config, PROFILE_TASK, device)
        self.meter = MemoryMeter(device, held=self.held_bytes)
        self.trains = self.model.backbone is not None
        self.optimizer = torch.optim.AdamW(self.model.trainable_parameters(), lr=config.lr)
        self.scaler = self.model.compute.scaler()
        self.parameters = sum(p.numel() for p in self.backbone.parameters())
        self.full = self.trains and all(p.requires_grad for p in self.backbone.parameters())
        self.peak_flops = peak_flops if peak_flops is not None else bf16_peak_flops(device)

    def held_bytes(self) -> int:
        """What the model holds between steps: weights, buffers, gradients and optimizer state."""
        modules = (self.backbone, self.model)
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        tensors += [p.grad for m in modules for p in m.parameters() if p.grad is not None]
        tensors += [v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
        return tensor_bytes(tensors)

    @property
    def mode(self) -> str:
        return "train" if self.trains else "inference"

    def train_step(self, batch: Sequence[Example]) -> None:
        """One optimizer step, as the run protocol takes it (no accumulation; the model's forward
        runs under its precision's autocast)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        output, mask = self.model(batch, None)
        labels, known = labels_for(PROFILE_TASK, batch, mask.cpu())
        self.scaler.scale(loss_fn(PROFILE_TASK, output, labels.to(self.device), known.to(self.device))).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.no_grad()
    def inference_step(self, batch: Sequence[Example]) -> None:
        self.backbone.eval()
        with self.model.precision.autocast():
            self.backbone.embed([e.sequence for e in batch], [e.id for e in batch])

    def step(self, mode: str) -> Callable[[Sequence[Example]], None]:
        if mode == "train" and not self.trains:
            raise BenchError("method frozen trains no backbone weights: profile its inference instead")
        return self.train_step if mode == "train" else self.inference_step

    def rate(self, mode: str, batch_size: int, length: int, steps: int, warmup: int = 1) -> Rate:
        """Residues per second over ``steps`` timed steps, after ``warmup`` untimed ones."""
        step = self.step(mode)
        batch = synthetic_examples(batch_size, length)
        for _ in range(warmup):
            step(batch)
        self._sync()
        started = time.perf_counter()
        for _ in range(steps):
            step(batch)
        self._sync()
        seconds = time.perf_counter() - started
        inputs = self.backbone.tokenize([e.sequence for e in batch])
        # Token ids count special tokens too; a backbone without them (one-hot) sees the residues.
        tokens = inputs["input_ids"].numel() if "input_ids" in inputs else batch_size * length
        flops = model_flops(self.parameters, tokens, mode, self.full) * steps / seconds
        return Rate(mode=mode, batch_size=batch_size, length=length, steps=steps, seconds=seconds,
                    residues_per_second=batch_size * length * steps / seconds, flops_per_second=flops,
                    mfu=flops / self.peak_flops if self.peak_flops else None)

    def peak(self, length: int, mode: str | None = None) -> int | None:
        """Peak bytes of one step at batch 1 on a sequence of ``length``; None: out of GPU memory."""
        step = self.step(mode or self.mode)
        batch = synthetic_examples(1, length)
        try:
            return self.meter.measure(lambda: step(batch))
        except torch.cuda.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            return None

    def envelope(self, budgets: Sequence[int], max_length: int, resolution: int = 64, start: int = 64,
                 on_probe: Callable[[int, int | None], None] | None = None,
                 measured: Mapping[int, int | None] | None = None) -> Envelope:
        """The longest length within each budget, to ``resolution`` residues (``measured``: peaks
        already taken with :meth:`peak`, by length, which the search reuses).

        Lengths grow from ``start`` by at most 2x and by no more than sqrt(budget / last peak):
        a transformer's memory grows at most quadratically with length, so a probe overshoots
        its budget by at most (1 + resolution / length)^2 and never takes the host down. Then
        the gap to the first length over budget is bisected. Peaks are measured once per length
        and shared by all budgets.
        """
        if resolution < 1 or start < 1 or max_length < 1:
            raise BenchError("envelope lengths must be positive: check --resolution and --max-length")
        room = self.meter.available()
        if self.device.type == "cpu" and max(budgets) > room:
            raise BenchError(f"memory budget {max(budgets) / GIB:.1f} GiB is more than the "
                             f"{room / GIB:.1f} GiB this host has free: give a smaller --budget")
        peaks: dict[int, int | None] = dict(measured or {})

        def fits(length: int, budget: int) -> bool:
            if length not in peaks:
                peaks[length] = self.peak(length)
                if on_probe:
                    on_probe(length, peaks[length])
            found = peaks[length]
            return found is not None and found <= budget

        longest: dict[int, int] = {}
        for budget in sorted(budgets):
            known = [n for n, p in peaks.items() if p is not None and p <= budget]
            low = max(known, default=0)
            high = min((n for n in peaks if n > low and not fits(n, budget)), default=None)
            while low < max_length and (high is None or high - low > resolution):
                if high is not None:
                    length = (low + high) // 2
                elif low == 0:
                    length = min(start, max_length)
                else:
                    grow = min(2.0, math.sqrt(budget / max(peaks[low] or 1, 1)))
                    length = min(max_length, max(low + resolution, int(low * grow)))
                if fits(length, budget):
                    low = length
                else:
                    high = length
            longest[budget] = low
        return Envelope(peaks=dict(sorted(peaks.items())), longest=longest, max_length=max_length,
                        resolution=resolution, step=self.mode, memory=self.meter.kind)

    def length_cap(self, requested: int | None = None) -> int:
        """The longest length an envelope search tries: ``requested``, else the backbone's
        maximum, else :data:`SEARCH_CAP`."""
        return requested or self.backbone.max_length or SEARCH_CAP

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def profile_config(backbone: str, method: str, *, backbone_path: str | None = None, dtype: str = "auto",
                   precision: str = "auto", init: str = "pretrained", seed: int = 1) -> RunConfig:
    """The run config whose model a profile measures (the method's default learning rate)."""
    spec = plugins.get("method", method)
    return RunConfig(backbone=backbone, task=PROFILE_TASK.name, method=method,
                     head=plugins.default_head("protein").name, seed=seed, lr=spec.default_lr,
                     backbone_path=backbone_path, dtype=dtype, precision=precision, init=init,
                     method_options=spec.resolve_options({}))


def plot_envelope(envelopes: dict[str, Envelope], path: Path) -> None:
    """Peak memory against sequence length, one line per label, budgets as dashed lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'plm-bench[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    budgets: set[int] = set()
    for label, envelope in envelopes.items():
        measured = [(n, p) for n, p in envelope.peaks.items() if p is not None]
        ax.plot([n for n, _ in measured], [p / GIB for _, p in measured], marker="o", label=label)
        budgets.update(envelope.longest)
    for budget in sorted(budgets):
        ax.axhline(budget / GIB, linestyle="--", linewidth=0.8, color="grey")
    ax.set_xlabel("sequence length (residues, batch 1)")
    ax.set_ylabel("peak memory of a training step (GiB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
