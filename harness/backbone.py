"""The backbone contract: sequences in, per-residue hidden states out, aligned 1:1.

Everything downstream (heads, metrics, embedding caches) relies on position ``i`` of the output
being residue ``i`` of the sequence: families strip their special tokens here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Residues:
    """Per-residue hidden states ``[B, L, H]`` and the mask ``[B, L]`` of real residues."""

    hidden: torch.Tensor
    mask: torch.Tensor


class Backbone(nn.Module):
    """Base class of loaded backbones.

    Subclasses set ``hidden_size`` and ``adapter_targets`` (module names PEFT methods wrap) and
    implement :meth:`tokenize` and :meth:`forward`.
    """

    hidden_size: int
    adapter_targets: tuple[str, ...] = ()

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch, padded to the longest sequence in *this* batch."""
        raise NotImplementedError

    def forward(self, **inputs: torch.Tensor) -> Residues:
        raise NotImplementedError

    def embed(self, sequences: Sequence[str]) -> Residues:
        """Tokenize and run, on the backbone's device."""
        tensors = (*self.parameters(), *self.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
        inputs = {k: v.to(device) for k, v in self.tokenize(sequences).items()}
        return self(**inputs)


def residue_mask(lengths: Sequence[int]) -> torch.Tensor:
    """``[B, max(lengths)]`` boolean mask of real residues."""
    lengths_t = torch.as_tensor(list(lengths))
    return torch.arange(int(lengths_t.max())).unsqueeze(0) < lengths_t.unsqueeze(1)
