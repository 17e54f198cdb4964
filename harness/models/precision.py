"""The precision policy: what is stored in which dtype, and what is computed in which.

Trainable parameters and the optimizer's state are always fp32: a bf16 weight of magnitude
0.02-0.05 has a spacing of 1.2e-4-2.4e-4, so a fine-tuning step of ~2e-5 applied to it rounds to
nothing. Mixed precision computes the forward and backward passes under ``torch.autocast`` in
bf16 or fp16 and steps the fp32 weights (fp16 with a ``torch.amp.GradScaler``, whose skipped
steps the record counts), as HF Trainer's ``fp16=True`` did for the study. Frozen weights (a
LoRA base, the backbone of frozen embeddings) are only ever read, so they may be stored in the
16-bit type the autocast computes in, which halves their memory.

``--precision`` says what is computed, ``--dtype`` what frozen weights are stored in; ``auto``
precision follows an explicit ``--dtype`` (fp32 stays fp32, bf16/fp16 become their mixed
precision, which is what asking for 16-bit always meant), else the protocol's choice (applied
by :meth:`plm_bench.config.RunConfig.resolved`), else bf16-mixed on GPUs that have bf16 and
fp32 elsewhere (a CPU's bf16 matmuls are no faster than fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.models.backbone import DTYPES

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
COMPUTE = {"fp32": "fp32", "bf16-mixed": "bf16", "fp16-mixed": "fp16"}  # precision -> the dtype it computes in
MIXED = {"bf16": "bf16-mixed", "fp16": "fp16-mixed", "fp32": "fp32"}  # an explicit --dtype -> its precision
TORCH = DTYPES  # storage name -> torch dtype: the backbone's table, one owner


@dataclass(frozen=True)
class Precision:
    """A resolved policy: ``name`` (fp32, bf16-mixed or fp16-mixed), the device type it runs on
    and ``storage``, the dtype name of frozen weights."""

    name: str
    device_type: str
    storage: str

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    @property
    def compute(self) -> torch.dtype:
        return TORCH[COMPUTE[self.name]]

    def autocast(self) -> AbstractContextManager:
        """The context that forward passes run in (a no-op for fp32)."""
        return torch.autocast(self.device_type, dtype=self.compute, enabled=self.mixed)

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (whose gradients underflow without it); disabled otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16-mixed")

    def apply(self, model: nn.Module) -> None:
        """Trainable parameters to fp32, frozen floating-point ones to the storage dtype, except
        beside a trainable one in a module other than a linear layer (a layer norm whose bias
        trains, as LoRA's ``bias="all"`` makes it): ops outside autocast's cast lists (CPU
        ``layer_norm``) need one dtype for all their weights. A linear layer's matmul is cast."""
        storage = TORCH[self.storage]
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
            beside_trainable = not isinstance(module, nn.Linear) and any(p.requires_grad for p in own)
            for parameter in own:
                wanted = torch.float32 if parameter.requires_grad or beside_trainable else storage
                if parameter.dtype != wanted:
                    parameter.data = parameter.data.to(wanted)


def resolve_precision(precision: str, dtype: str, supported: Sequence[str], device: torch.device | str,
                      backbone: str) -> Precision:
    """The policy for ``--precision``/``--dtype`` within the family's dtypes and the device's."""
    device = torch.device(device)
    has_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if precision == "auto":
        if dtype != "auto":
            precision = MIXED.get(dtype, dtype)
        else:
            precision = "bf16-mixed" if device.type == "cuda" and has_bf16 and "bf16" in supported else "fp32"
    if precision not in PRECISIONS:
        raise BenchError(f"--precision {precision}: unknown; use one of auto, {', '.join(PRECISIONS)}")
    compute = COMPUTE[precision]
    if compute not in supported:
        fallback = "bf16-mixed" if "bf16" in supported else "fp32"
        raise BenchError(f"backbone {backbone} cannot compute in {compute} (it supports {', '.join(supported)}); "
                         f"use --precision {fallback}")
    if compute == "bf16" and not has_bf16:
        raise BenchError(f"--precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bf16; "
                         "use --precision fp16-mixed or fp32")
    storage = compute if dtype == "auto" else dtype
    if storage not in TORCH:
        raise BenchError(f"--dtype {dtype}: unknown; use one of auto, {', '.join(TORCH)}")
    if storage != "fp32" and storage != compute:
        raise BenchError(f"--dtype {storage} stores frozen weights in {storage}, which --precision {precision} does "
                         f"not compute in: use --dtype {compute} or --precision {MIXED[storage]}")
    return Precision(precision, device.type, storage)
