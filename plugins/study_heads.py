"""The study's fine-tuning heads (Schmirler et al. 2024, notebooks/finetune/*.ipynb).

They read token-level states (``HeadSpec(tokens=True)``): special tokens and padding included,
as the notebooks' heads saw them. The ESM2 head is transformers' own ``EsmClassificationHead``
(what the notebooks got from ``AutoModelForSequenceClassification``); the T5 head is the
notebooks' ``T5EncoderClassificationHead``, whose mean over dim 1 takes padding and ``</s>`` in.
"""

from __future__ import annotations

import torch
from torch import nn


class EsmClsHead(nn.Module):
    """transformers' ``EsmClassificationHead`` on the ``<cls>`` token: dropout, dense, tanh,
    dropout, out_proj.

    Initialized as the notebooks' head was: ``from_pretrained`` builds the missing classifier
    with ``EsmPreTrainedModel._init_weights``, weights normal with std ``initializer_range``
    (0.02 in the ESM2 configs) and zero biases, not ``nn.Linear``'s default."""

    def __init__(self, hidden_size: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        from transformers import EsmConfig
        from transformers.models.esm.modeling_esm import EsmClassificationHead

        config = EsmConfig(hidden_size=hidden_size, hidden_dropout_prob=dropout, num_labels=out_dim)
        self.classifier = EsmClassificationHead(config)
        for layer in (self.classifier.dense, self.classifier.out_proj):
            nn.init.normal_(layer.weight, mean=0.0, std=config.initializer_range)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(tokens.float())  # reads tokens[:, 0]: <cls>, which padding never reaches


class T5MeanHead(nn.Module):
    """The study's T5 head: the mean over *every* position (padding and ``</s>`` included, a quirk
    of the notebook kept on purpose), dropout, dense, tanh, dropout, out_proj."""

    def __init__(self, hidden_size: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, out_dim)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        pooled = torch.mean(tokens.float(), dim=1)
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))


class LinearResidue(nn.Module):
    """The study's per-residue head: dropout, then one linear layer per residue.

    ``init_std``: start the layer as transformers' ``_init_weights`` does (normal with this std,
    zero bias), as the notebooks' ESM2 heads did (``EsmForTokenRegression`` and
    ``EsmForTokenClassificationCustom`` call ``init_weights()``); None keeps ``nn.Linear``'s
    default, as the T5 heads' plain layer had."""

    def __init__(self, hidden_size: int, out_dim: int, dropout: float, init_std: float | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, out_dim)
        if init_std is not None:
            nn.init.normal_(self.classifier.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden.float()))
