"""Linear probes: ridge (regression) or logistic regression (classification) on frozen features.

Fitted in closed form / by scikit-learn, not by gradient steps: the protocol fits the probe once
per regularization strength in :attr:`LinearProbe.strengths` and keeps the one that scores best
on the validation split (harness/run/training.py ``fit_closed_form``). The design matrix is the
masked mean of the residues (``mean``), every residue's features in order (``flat``: the
position-aware one-hot of fixed-length landscapes, FLIP's ridge baseline) or each residue on its
own (``residue``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from plm_bench import BenchError
from plm_bench_plugins.mlp import masked_mean

STRENGTHS = tuple(float(a) for a in np.logspace(-3, 3, 7))  # ridge alpha; logistic C = 1 / alpha


class LinearProbe(nn.Module):
    """A linear map of pooled (or per-residue) features whose weights come from scikit-learn."""

    strengths = STRENGTHS

    def __init__(self, hidden_size: int, out_dim: int, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        self.out_dim = out_dim
        self.linear = nn.LazyLinear(out_dim)  # `flat` knows its width only from the first proteins

    def design(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The features the linear map reads: ``[B, F]``, or ``[B, L, F]`` per residue."""
        if self.pooling == "mean":
            return masked_mean(hidden.float(), mask)
        if self.pooling == "flat":
            width = hidden.shape[1] * hidden.shape[2]
            fitted = not isinstance(self.linear.weight, nn.parameter.UninitializedParameter)
            if not bool(mask.all()) or (fitted and self.linear.weight.shape[1] != width):
                raise BenchError("head probe-flat needs proteins of one length (fixed-length landscapes such "
                                 "as GB1); this task's lengths differ: use --head probe-mean")
            return hidden.float().flatten(1)
        return hidden.float()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.linear(self.design(hidden, mask))

    @torch.no_grad()
    def fit(self, x: np.ndarray, y: np.ndarray, strength: float) -> None:
        """Fit on design rows ``x`` and labels ``y`` with regularization ``strength`` (ridge alpha,
        logistic 1/C); classification labels are class indices."""
        from sklearn.linear_model import LogisticRegression, Ridge

        classification = self.out_dim > 1
        if classification:
            model = LogisticRegression(C=1.0 / strength, max_iter=2000).fit(x, y)
            weight, bias = np.zeros((self.out_dim, x.shape[1])), np.full(self.out_dim, -1e4)
            rows = model.classes_.astype(int)
            if len(rows) == 2:  # sklearn keeps one score z for two classes: logits (-z/2, z/2)
                weight[rows], bias[rows] = np.stack([-model.coef_[0], model.coef_[0]]) / 2, \
                    np.array([-model.intercept_[0], model.intercept_[0]]) / 2
            else:
                weight[rows], bias[rows] = model.coef_, model.intercept_  # absent classes never win
        else:
            model = Ridge(alpha=strength).fit(x, y)
            weight, bias = model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_)
        if isinstance(self.linear.weight, nn.parameter.UninitializedParameter):
            self.linear.weight.materialize((self.out_dim, x.shape[1]))
            self.linear.bias.materialize((self.out_dim,))
        self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
