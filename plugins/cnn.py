"""Per-residue CNN head: two 1D convolutions along the sequence, so each residue's prediction
sees its neighbours (as the ProtT5 secondary-structure CNN), with the study's 32 channels."""

from __future__ import annotations

import torch
from torch import nn


class ResidueCNN(nn.Module):
    def __init__(self, hidden_size: int, out_dim: int, kernel_size: int = 7, width: int = 32,
                 dropout: float = 0.25) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(hidden_size, width, kernel_size, padding=padding), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv1d(width, out_dim, kernel_size, padding=padding),
        )

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, out]``; padding is zeroed first, so a residue next to the end of its protein
        sees zeros, whatever it was batched with."""
        x = (hidden.float() * mask.unsqueeze(-1)).transpose(1, 2)
        return self.net(x).transpose(1, 2)
