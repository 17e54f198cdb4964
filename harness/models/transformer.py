"""The backbone every built-in transformers family is: a transformers encoder read through a
:class:`ResidueVocabulary` (one token per residue), optionally packed and with layer choices.

It lives apart from the :class:`~plm_bench.models.backbone.Backbone` contract, which a plugin
implements without transformers; a plugin wrapping a transformers encoder builds this one
(``from plm_bench import TransformerBackbone, ResidueVocabulary, synthetic_vocab``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from plm_bench.alphabet import AMINO_ACIDS, RARE_RESIDUES
from plm_bench.errors import BenchError
from plm_bench.models.backbone import Backbone, Residues, residue_mask

RANDOM_INIT_LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO"  # ESM2's order: the 20 standard residues, then X and rare ones


@dataclass(frozen=True)
class ResidueVocabulary:
    """How a family turns residues into token ids: exactly one token per residue, wrapped in the
    family's special tokens (e.g. ESM ``<cls> … <eos>``, ProstT5 ``<AA2fold> … </s>``).

    Built from the checkpoint's own vocabulary rather than by calling its tokenizer, so the 1:1
    alignment holds by construction and does not depend on how a transformers release
    reassembles the tokenizer's pipeline (transformers 5 prepends a word marker to Ankh's
    per-character vocabulary, which turns every residue into ``<unk>`` + residue). Tests check
    the ids against each tokenizer's documented usage.
    """

    ids: Mapping[str, int]  # residue letter -> token id; letters absent map to ``unknown``
    unknown: int
    pad: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int], *, unknown: str, pad: str, prefix: Sequence[str] = (),
                   suffix: Sequence[str] = (), word_marker: str = "", rare_to_x: bool = False,
                   source: str = "") -> ResidueVocabulary:
        """Residue letters looked up as ``word_marker + letter`` (``▁A`` in sentencepiece
        vocabularies of space-separated residues, plain ``A`` elsewhere)."""
        missing = [t for t in (unknown, pad, *prefix, *suffix) if t not in vocab]
        if missing:
            raise BenchError(f"{source}: the tokenizer has no token {missing[0]!r}; this checkpoint does not "
                             "belong to its registered family (check registry.toml or --backbone-path)")
        ids = {c: vocab[word_marker + c] for c in map(chr, range(65, 91)) if word_marker + c in vocab}
        if rare_to_x and "X" in ids:
            ids.update({c: ids["X"] for c in RARE_RESIDUES})
        lacking = [c for c in AMINO_ACIDS if c not in ids]
        if lacking:
            raise BenchError(f"{source}: the tokenizer has no token for residue(s) {''.join(lacking)}; this "
                             "checkpoint does not belong to its registered family (check registry.toml)")
        return cls(ids, vocab[unknown], vocab[pad], tuple(vocab[t] for t in prefix), tuple(vocab[t] for t in suffix))

    def encode(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask``, right-padded to the longest sequence of the batch."""
        rows = [[*self.prefix, *(self.ids.get(c, self.unknown) for c in s), *self.suffix] for s in sequences]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = torch.tensor(row)
            attention_mask[r, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def encode_packed(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        """The same tokens back to back in one row: ``input_ids`` and ``position_ids`` ``[1, T]``
        (positions restart at 0 for every sequence), ``cu_seq_lens`` ``[B + 1]`` (where each
        sequence's tokens start, then ``T``) and ``residues`` (the row of every residue's token)."""
        rows = [[*self.prefix, *(self.ids.get(c, self.unknown) for c in s), *self.suffix] for s in sequences]
        sizes = torch.tensor([len(r) for r in rows])
        cu_seq_lens = torch.zeros(len(rows) + 1, dtype=torch.int32)
        cu_seq_lens[1:] = sizes.cumsum(0)
        starts = cu_seq_lens[:-1].long().repeat_interleave(sizes)
        position_ids = torch.arange(int(cu_seq_lens[-1])) - starts
        residue_starts = cu_seq_lens[:-1].long() + len(self.prefix)
        residues = torch.cat([torch.arange(len(s)) + int(a) for s, a in zip(sequences, residue_starts, strict=True)])
        return {"input_ids": torch.tensor([t for r in rows for t in r]).unsqueeze(0),
                "position_ids": position_ids.unsqueeze(0), "cu_seq_lens": cu_seq_lens, "residues": residues}


PACKED_ATTENTION = "plm_bench_packed"  # the transformers attention implementation packing needs


def packed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, or, given ``cu_seq_lens_q`` (packed input, one row), SDPA
    within each sequence: ``[1, heads, T, d]`` in, ``[1, T, heads, d]`` out like every
    transformers attention function. Padded calls are exactly transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    sizes = bounds.diff().tolist()
    out = [nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
           for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2), strict=True)]
    joined = out[0] if len(out) == 1 else torch.cat(out, 2)  # one sequence: no copy
    return joined.transpose(1, 2).contiguous(), None


def enable_packing(model: nn.Module) -> None:
    """Switch a transformers model whose attention goes through ``ALL_ATTENTION_FUNCTIONS`` (and
    passes its keyword arguments on) to :func:`packed_attention`; padded masks stay SDPA's."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, packed_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)
    model.set_attn_implementation(PACKED_ATTENTION)


class TransformerBackbone(Backbone):
    """A transformers encoder (``last_hidden_state``) read through a :class:`ResidueVocabulary`.

    With ``packs`` the family has checked that its model computes each sequence of a packed row
    as if alone, given per-sequence ``position_ids`` and :func:`packed_attention`. ``blocks`` is
    the path of the encoder's block list (``encoder.layer``, T5's ``encoder.block``); the layer
    count is the loaded config's ``num_hidden_layers``, which that list must match. Inner layers
    are transformers' ``hidden_states`` (the last one is ``last_hidden_state``, after any final
    layer norm; inner ones are the blocks' raw outputs).
    """

    def __init__(self, model: nn.Module, vocabulary: ResidueVocabulary, *, name: str, max_length: int | None,
                 adapter_targets: Sequence[str], packs: bool = False, blocks: str = "encoder.layer") -> None:
        super().__init__()
        try:
            found = model.get_submodule(blocks)
        except AttributeError:
            found = None
        if not isinstance(found, nn.ModuleList) or len(found) != model.config.num_hidden_layers:
            raise BenchError(f"backbone {name}: {type(model).__name__} has no list of "
                             f"{model.config.num_hidden_layers} blocks at {blocks!r}; fix the family's blocks")
        self.num_layers = model.config.num_hidden_layers
        self.blocks = blocks
        self.model = model
        self.vocabulary = vocabulary
        self.name = name
        self.max_length = max_length
        self.adapter_targets = tuple(adapter_targets)
        self.hidden_size = model.config.hidden_size
        self.special_tokens = len(vocabulary.prefix) + len(vocabulary.suffix)
        self.positions_limit = getattr(model.config, "position_embedding_type", "absolute") != "rotary"
        self.packs = packs
        if packs:
            enable_packing(model)

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        return {**self.vocabulary.encode(sequences), "lengths": torch.tensor([len(s) for s in sequences])}

    def hidden_states(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The model's final hidden states, or the mean (in fp32) of the ``output_layers`` ones;
        transformers keeps only the states asked for."""
        if not self.output_layers:
            return self.model(**inputs).last_hidden_state
        states = self.model(**inputs, output_hidden_states=list(self.output_layers)).hidden_states
        chosen = [states[i] for i in self.output_layers]
        return chosen[0] if len(chosen) == 1 else torch.stack(chosen).float().mean(0).to(chosen[0].dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: torch.Tensor) -> Residues:
        hidden = self.hidden_states(input_ids=input_ids, attention_mask=attention_mask)
        start, lengths_list = len(self.vocabulary.prefix), lengths.tolist()
        # residue i of every row sits at start + i; suffix and padding fall outside the mask
        return Residues(hidden[:, start:start + max(lengths_list)], residue_mask(lengths_list).to(hidden.device),
                        tokens=hidden, token_mask=attention_mask.bool())

    def forward_packed(self, sequences: Sequence[str]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in self.vocabulary.encode_packed(sequences).items()}
        bounds = inputs["cu_seq_lens"]
        longest = int(bounds.diff().max())
        hidden = self.hidden_states(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"],
                                    cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=longest,
                                    max_length_k=longest)
        return hidden[0, inputs["residues"]]


def synthetic_vocab(specials: Sequence[str], size: int, word_marker: str = "") -> dict[str, int]:
    """A ``size``-token vocabulary for ``--init random`` (no tokenizer files needed): the family's
    special tokens, then residue letters (the 20 standard ones first), then filler tokens.

    With random weights only the vocabulary's size and the 1:1 residue mapping matter.
    """
    letters = [word_marker + c for c in RANDOM_INIT_LETTERS[: size - len(specials)]]
    if len(letters) < len(AMINO_ACIDS):
        raise BenchError(f"vocabulary size {size} leaves no room for the 20 residues next to {len(specials)} "
                         "special tokens; fix architecture.vocab_size in registry.toml")
    tokens = [*specials, *letters]
    tokens += [f"<filler_{i}>" for i in range(size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}
