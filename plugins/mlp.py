"""The 32-unit MLP head (the study's frozen-embedding predictor: Dense(32, relu), dropout, output;
notebooks/embedding/Embedding_Predictor_Training.ipynb)."""

from __future__ import annotations

import torch
from torch import nn

KERAS_EPSILON = 1e-7  # keras Normalization divides by max(std, epsilon)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real residues only (padding never counts)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class MLP(nn.Module):
    """Per-protein (masked mean pooling first) or per-residue MLP.

    With ``standardize`` its input is shifted and scaled by statistics of the training split
    (:meth:`fit_standardization`, like the study's keras ``Normalization`` layer in the same notebook); they are
    buffers of the head, so a saved run predicts with the statistics it trained with.
    """

    def __init__(self, hidden_size: int, out_dim: int, level: str, width: int = 32,
                 dropout: float = 0.25, standardize: bool = False) -> None:
        super().__init__()
        self.per_protein = level == "protein"
        if standardize:
            self.register_buffer("shift", torch.zeros(hidden_size))
            self.register_buffer("scale", torch.ones(hidden_size))
        self.net = nn.Sequential(
            nn.Linear(hidden_size, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out_dim)
        )

    @property
    def standardizes(self) -> bool:
        return hasattr(self, "shift")

    def inputs(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the first layer sees, before standardization: the pooled protein or each residue."""
        return masked_mean(hidden.float(), mask) if self.per_protein else hidden.float()

    @torch.no_grad()
    def fit_standardization(self, features: list[torch.Tensor]) -> None:
        """Mean and population standard deviation of the training inputs (per-protein vectors, or
        every residue), as keras ``Normalization.adapt`` computes them."""
        rows = torch.stack([f.float().mean(0) for f in features]) if self.per_protein else \
            torch.cat([f.float() for f in features])
        self.shift.copy_(rows.mean(0))
        self.scale.copy_(rows.var(0, unbiased=False).sqrt().clamp(min=KERAS_EPSILON))

    def rows(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the first linear layer reads: :meth:`inputs`, standardized where the head does.
        On frozen embeddings these never change, so training can compute them once."""
        features = self.inputs(hidden, mask)
        if self.standardizes:
            features = (features - self.shift) / self.scale
        return features

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(self.rows(hidden, mask))

    def forward_stacked(self, params: dict[str, torch.Tensor], rows: torch.Tensor, sizes: list[int],
                        generators: list[torch.Generator] | None) -> torch.Tensor:
        """S copies of this head at once (:mod:`plm_bench.run.frozen_heads` trains a frozen
        condition's seeds together): ``params`` are this module's parameters stacked along a
        leading seed axis (``torch.func.stack_module_state``), ``rows`` (S, B, in) each seed's
        batch of :meth:`rows`, of which the first ``sizes[s]`` are real (the rest pad a short
        batch). With ``generators`` (training), seed s's dropout mask is drawn from
        ``generators[s]`` exactly as :meth:`forward` draws it from torch's global generator (one
        ``bernoulli_`` over its real rows, then divided by the keep probability), so each seed
        sees the dropout stream it would alone."""
        w1, b1, w2, b2 = (params[f"net.{layer}.{name}"] for layer in (0, 3) for name in ("weight", "bias"))
        hidden = torch.baddbmm(b1.unsqueeze(1), rows, w1.transpose(1, 2)).relu()
        p = self.net[2].p
        if generators is not None and p > 0:
            noise = torch.ones_like(hidden)
            for s, (size, generator) in enumerate(zip(sizes, generators, strict=True)):
                noise[s, :size].bernoulli_(1 - p, generator=generator)
            hidden = hidden * noise.div_(1 - p)
        return torch.baddbmm(b2.unsqueeze(1), hidden, w2.transpose(1, 2))
