"""The max-pool head: the strongest signal along the sequence, then one linear layer."""

from __future__ import annotations

import torch
from torch import nn


class MaxPool(nn.Module):
    """``(hidden [B, L, H], mask [B, L])`` -> ``[B, out]``: padding never wins the max."""

    def __init__(self, hidden_size: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, out_dim)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = hidden.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.out(self.dropout(pooled))
