"""Per-residue CNN head: two 1D convolutions along the sequence, so each residue's prediction
sees its neighbours (as the ProtT5 secondary-structure CNN), with 32 channels (the width of the
study's frozen-embedding predictor)."""

from __future__ import annotations

import torch
from torch import nn


class ResidueCNN(nn.Module):
    def __init__(self, hidden_size: int, out_dim: int, kernel_size: int = 7, width: int = 32,
                 dropout: float = 0.25) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.first = nn.Conv1d(hidden_size, width, kernel_size, padding=padding)
        self.dropout = nn.Dropout(dropout)
        self.second = nn.Conv1d(width, out_dim, kernel_size, padding=padding)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, out]``. Padding is zeroed before each convolution, so a residue near the end
        of its protein sees zeros there, whatever it was batched with."""
        real = mask.unsqueeze(1)  # [B, 1, L]
        x = hidden.float().transpose(1, 2) * real
        x = self.dropout(torch.relu(self.first(x))) * real
        return self.second(x).transpose(1, 2)
