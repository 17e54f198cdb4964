"""Light attention (Stärk et al. 2021, Bioinformatics Advances): a per-protein head that learns
where to look along the sequence instead of averaging it.

Two convolutions over the residues give values and attention logits per channel; a softmax
over the (masked) length pools the values, a max-pool over real residues is concatenated, and
a 32-unit MLP maps that to the output. Differences from the published module, on purpose:
padding is zeroed before the convolutions and excluded from the max-pool (the original let
padding reach both, so a prediction depended on what it was batched with), and there is no
BatchNorm after the hidden layer (it fails on a batch of one and its running statistics are
not weights, so neither the best-checkpoint restore nor a saved run would carry them).
"""

from __future__ import annotations

import torch
from torch import nn


class LightAttention(nn.Module):
    def __init__(self, hidden_size: int, out_dim: int, kernel_size: int = 9, width: int = 32,
                 dropout: float = 0.25, conv_dropout: float = 0.25) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.values = nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=padding)
        self.attention = nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=padding)
        self.conv_dropout = nn.Dropout(conv_dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden_size, width), nn.Dropout(dropout), nn.ReLU(),
                                 nn.Linear(width, out_dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        real = mask.unsqueeze(1)  # [B, 1, L]
        x = (hidden.float() * mask.unsqueeze(-1)).transpose(1, 2)  # [B, H, L], padding zeroed
        values = self.conv_dropout(self.values(x))
        logits = self.attention(x).masked_fill(~real, float("-inf"))
        attended = (values * torch.softmax(logits, dim=-1)).sum(-1)
        maxed = values.masked_fill(~real, float("-inf")).amax(-1)
        return self.mlp(torch.cat([attended, maxed], dim=-1))
