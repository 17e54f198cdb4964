"""One-hot residues: the no-pretraining baseline (20 amino acids, anything else as X)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from plm_bench.backbone import Backbone, Residues, residue_mask

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


class OneHot(Backbone):
    hidden_size = len(AMINO_ACIDS) + 1

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("eye", torch.eye(self.hidden_size), persistent=False)
        self.index = {aa: i for i, aa in enumerate(AMINO_ACIDS)}

    @classmethod
    def load(cls, source: str | None, device: str) -> OneHot:
        return cls().to(device)

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        unknown = len(AMINO_ACIDS)
        ids = [torch.tensor([self.index.get(aa, unknown) for aa in s]) for s in sequences]
        return {
            "ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True),
            "lengths": torch.tensor([len(s) for s in sequences]),
        }

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> Residues:
        return Residues(self.eye[ids], residue_mask(lengths.tolist()).to(ids.device))
