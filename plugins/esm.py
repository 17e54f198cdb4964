"""ESM2 through transformers' ``EsmModel``; ``<cls>`` and ``<eos>`` are dropped from outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoTokenizer, EsmModel

from plm_bench.backbone import Backbone, Residues, residue_mask
from plm_bench.hub import from_pretrained


class Esm2(Backbone):
    adapter_targets = ("query", "key", "value", "dense")

    def __init__(self, model: EsmModel, tokenizer) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size = model.config.hidden_size

    @classmethod
    def load(cls, source: str, device: str) -> Esm2:
        model = from_pretrained(EsmModel, source, add_pooling_layer=False)
        return cls(model, from_pretrained(AutoTokenizer, source)).to(device)

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(list(sequences), padding=True, return_tensors="pt")
        return {**inputs, "lengths": torch.tensor([len(s) for s in sequences])}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                lengths: torch.Tensor) -> Residues:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # position 0 is <cls>; each sequence's <eos> lands at index len, outside its mask
        return Residues(hidden[:, 1:-1], residue_mask(lengths.tolist()).to(hidden.device))
