"""One-hot residues: the no-pretraining baseline (20 amino acids, anything else as X)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from plm_bench import AMINO_ACIDS, Backbone, BackboneSpec, Residues, residue_mask, resolve_dtype


class OneHot(Backbone):
    hidden_size = len(AMINO_ACIDS) + 1

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("eye", torch.eye(self.hidden_size), persistent=False)
        self.index = {aa: i for i, aa in enumerate(AMINO_ACIDS)}

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        unknown = len(AMINO_ACIDS)
        ids = [torch.tensor([self.index.get(aa, unknown) for aa in s]) for s in sequences]
        return {
            "ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True),
            "lengths": torch.tensor([len(s) for s in sequences]),
        }

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> Residues:
        return Residues(self.eye[ids], residue_mask(lengths.tolist()).to(ids.device))


def load(spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
         dtype: str = "auto", init: str = "pretrained") -> OneHot:
    """No weights, so ``--init random`` is the same backbone; fp32 only (exact 0/1 features)."""
    resolve_dtype(dtype, spec.dtypes, device, spec.name)  # refuses an explicit bf16/fp16
    return OneHot().to(device)
