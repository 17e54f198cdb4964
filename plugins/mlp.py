"""The study's head: one 32-unit hidden layer, then the output layer."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real residues only (the study's notebooks averaged padding in too)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class MLP(nn.Module):
    """Per-protein (masked mean pooling first) or per-residue MLP."""

    def __init__(self, hidden_size: int, out_dim: int, level: str, width: int = 32,
                 dropout: float = 0.25) -> None:
        super().__init__()
        self.per_protein = level == "protein"
        self.net = nn.Sequential(
            nn.Linear(hidden_size, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out_dim)
        )

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = masked_mean(hidden, mask) if self.per_protein else hidden
        return self.net(features.float())
