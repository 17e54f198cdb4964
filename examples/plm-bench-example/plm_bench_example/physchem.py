"""The physchem backbone: a fixed table lookup, standardized per property."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from plm_bench import Backbone, Residues, residue_mask


class PhysChem(Backbone):
    """Three numbers per residue, linearly mixed; ``forward`` returns them aligned 1:1 with the residues."""

    def __init__(self, properties: dict[str, tuple[float, ...]]) -> None:
        super().__init__()
        table = torch.tensor(list(properties.values()), dtype=torch.float32)
        table = (table - table.mean(0)) / table.std(0)
        # X and the rare codes (index len(properties)) get all-zero (average) properties
        self.register_buffer("table", torch.cat([table, torch.zeros(1, table.shape[1])]), persistent=False)
        self.index = {aa: i for i, aa in enumerate(properties)}
        self.hidden_size = table.shape[1]
        # A linear mix that starts as the identity: what methods that train the backbone adapt
        self.mix = torch.nn.Linear(self.hidden_size, self.hidden_size)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(self.hidden_size))
            self.mix.bias.zero_()

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        unknown = len(self.index)
        ids = [torch.tensor([self.index.get(aa, unknown) for aa in s]) for s in sequences]
        return {"ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True),
                "lengths": torch.tensor([len(s) for s in sequences])}

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> Residues:
        return Residues(self.mix(self.table[ids]), residue_mask(lengths.tolist()).to(ids.device))
