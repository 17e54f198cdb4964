"""The backbone contract: sequences in, per-residue hidden states out, aligned 1:1.

Everything downstream (heads, metrics, embedding caches) relies on position ``i`` of the output
being residue ``i`` of the sequence: families strip their special tokens here. The contract also
owns what every family needs the same way: the check that a sequence is made of residues, the
long-sequence policy (fail naming the record, or embed overlapping windows and stitch them),
the precision rules, and a stop on non-finite activations.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plm_bench.alphabet import AMINO_ACIDS, RARE_RESIDUES, check_sequence
from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.plugins.specs import BackboneSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LONG_POLICIES = ("error", "chunk")
RANDOM_INIT_LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO"  # ESM2's order: the 20 standard residues, then X and rare ones


@dataclass
class Residues:
    """Per-residue hidden states ``[B, L, H]`` and the mask ``[B, L]`` of real residues.

    Transformer backbones also give the token-level states ``tokens`` ``[B, T, H]`` (special
    tokens and padding included) and their attention mask ``token_mask`` ``[B, T]``, for heads
    that read them as the study's did (``HeadSpec(tokens=True)``; notebooks/finetune/*.ipynb);
    ``None`` where there are none.
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None


class Backbone(nn.Module):
    """Base class of loaded backbones.

    Subclasses set ``hidden_size`` and implement :meth:`tokenize` and :meth:`forward`.
    ``max_length`` is the most residues one forward pass may hold (``None``: no architectural
    limit); ``long_policy`` says what :meth:`embed` does with longer sequences. Backbones that
    PEFT methods can adapt keep the wrapped transformer as ``model`` and name its attention
    projections in ``adapter_targets`` and its feed-forward layers in ``ffn_targets`` (module-name
    suffixes, peft's ``target_modules`` rule); :func:`load_backbone` fills both from the spec.

    Backbones with layers say how many in ``num_layers`` (hidden states 0..num_layers, 0 being the
    embedding output), honour ``output_layers`` (set by :meth:`select_layers`) in ``forward`` and
    ``forward_packed``, and name the ``nn.ModuleList`` of their blocks inside ``model`` in
    ``blocks`` (for :meth:`top_blocks`). The defaults (none of these) are a backbone whose final
    output is all it gives, which every method's default options accept.
    """

    name: str = ""
    hidden_size: int
    model: nn.Module  # only backbones PEFT can adapt have one
    adapter_targets: tuple[str, ...] = ()
    ffn_targets: tuple[str, ...] = ()
    max_length: int | None = None
    long_policy: str = "error"
    special_tokens: int = 0  # tokens a sequence gets besides its residues (for --max-tokens)
    packs: bool = False  # offers forward_packed; the padded tokenize + forward is the fallback
    num_layers: int | None = None  # transformer blocks; None: no layers to choose from
    blocks: str = ""  # where in ``model`` the blocks' nn.ModuleList sits (e.g. ``encoder.layer``)
    output_layers: tuple[int, ...] = ()  # hidden states averaged into the output; (): the final output

    def tokenize(self, sequences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch, padded to the longest sequence in *this* batch."""
        raise NotImplementedError

    def forward(self, **inputs: torch.Tensor) -> Residues:
        raise NotImplementedError

    def forward_packed(self, sequences: Sequence[str]) -> torch.Tensor:
        """Optional (set ``packs``): the sequences' per-residue states back to back,
        ``[sum(lengths), H]``, computed without padding.

        Packing runs the token-wise layers (most of the FLOPs) on real residues only and attends
        within each sequence, so no compute goes to padding and no attention mask is needed.
        """
        raise NotImplementedError

    def select_layers(self, layer: int = -1, last_k: int = 1) -> None:
        """Make the output the mean of hidden states ``layer - last_k + 1 .. layer`` (the
        ``frozen`` method's options): states are numbered 0 (the embedding output) to
        ``num_layers`` (the final output); a negative ``layer`` counts from the end, -1 being the
        final output. The default, the final output alone, is what every backbone gives.
        """
        if (layer, last_k) == (-1, 1):
            self.output_layers = ()
            return
        if self.num_layers is None:
            raise BenchError(f"method options layer={layer} last_k={last_k}: backbone {self.name} has no layers to "
                             "choose from (only transformer backbones do); drop the options")
        states = self.num_layers + 1
        if not -states <= layer < states:
            raise BenchError(f"method option layer={layer}: backbone {self.name} has {self.num_layers} layers, so "
                             f"layer is 0..{self.num_layers} (0: the embedding output) or -1..-{states} from the "
                             "end; fix --method-option layer")
        top = layer % states
        if not 1 <= last_k <= top + 1:
            raise BenchError(f"method option last_k={last_k}: the mean of the {last_k} layers up to layer {top} of "
                             f"backbone {self.name} ({self.num_layers} layers, 0 the embedding output) needs "
                             f"last_k in 1..{top + 1}; fix --method-option last_k")
        chosen = tuple(range(top - last_k + 1, top + 1))
        self.output_layers = () if chosen == (self.num_layers,) else chosen  # the last state is the final output

    def top_blocks(self, count: int, method: str) -> list[nn.Module]:
        """The modules option ``top_layers=count`` trains: the last ``count`` blocks and the modules
        their stack runs after them (e.g. a final layer norm); the embeddings and lower blocks stay
        frozen. Call it before a PEFT wrapper moves ``model``."""
        if self.num_layers is None or not self.blocks:
            raise BenchError(f"method {method} option top_layers={count}: backbone {self.name} has no transformer "
                             "blocks; drop the option (0 trains every layer)")
        if not 1 <= count <= self.num_layers:
            raise BenchError(f"method {method} option top_layers={count}: backbone {self.name} has "
                             f"{self.num_layers} blocks; use 1..{self.num_layers}, or 0 for every layer")
        stack_name, _, name = self.blocks.rpartition(".")
        children = list(self.model.get_submodule(stack_name).named_children())
        after = [module for _, module in children[[n for n, _ in children].index(name) + 1:]]
        return [*self.model.get_submodule(self.blocks)[-count:], *after]

    @property
    def device(self) -> torch.device:
        tensors = (*self.parameters(), *self.buffers())
        return tensors[0].device if tensors else torch.device("cpu")

    def embed(self, sequences: Sequence[str], ids: Sequence[str] | None = None, tokens: bool = False) -> Residues:
        """Tokenize and run on the backbone's device; ``ids`` name the records in errors.
        ``tokens``: the caller reads the token-level states, which only the padded forward gives.

        Sequences longer than ``max_length`` fail naming their record (policy ``error``) or are
        cut into overlapping windows whose per-residue outputs are stitched back into one
        sequence-long output (policy ``chunk``), so per-protein pooling still sees the whole
        protein. Nothing is ever truncated silently.
        """
        names = list(ids) if ids is not None else [f"#{i + 1} of the batch" for i in range(len(sequences))]
        for sequence, name in zip(sequences, names, strict=True):
            check_sequence(sequence, f"record {name}")
        self.check_lengths(sequences, names)
        limit = self.max_length
        if limit is not None and any(len(s) > limit for s in sequences):
            residues = self._run_chunked(sequences, limit)
        else:
            residues = self._run(sequences, packed=self.packs and not tokens)
        check_finite(residues, names, self.name)
        return residues

    def check_lengths(self, sequences: Sequence[str], names: Sequence[str]) -> None:
        """Under policy ``error``, fail on a sequence longer than ``max_length``, naming its record.

        Callers about to embed a whole split call this first, so the error comes before the work.
        """
        if self.long_policy == "chunk" or self.max_length is None:
            return
        for sequence, name in zip(sequences, names, strict=True):
            if len(sequence) > self.max_length:
                raise BenchError(
                    f"record {name} has {len(sequence)} residues, more than backbone {self.name or 'this'}'s "
                    f"maximum of {self.max_length}: rerun with --long-policy chunk (overlapping windows) or "
                    "leave the record out"
                )

    def _run(self, sequences: Sequence[str], packed: bool | None = None) -> Residues:
        if self.packs if packed is None else packed:
            return unpack(self.forward_packed(sequences), [len(s) for s in sequences])
        device = self.device
        return self(**{k: v.to(device) for k, v in self.tokenize(sequences).items()})

    def _run_chunked(self, sequences: Sequence[str], window: int) -> Residues:
        pieces: list[str] = []
        plan: list[list[tuple[int, int, int]]] = []  # per sequence: (piece, keep_from, keep_to) in piece coordinates
        for sequence in sequences:
            parts = []
            for start, end, keep_from, keep_to in chunk_spans(len(sequence), window, window // 4):
                parts.append((len(pieces), keep_from - start, keep_to - start))
                pieces.append(sequence[start:end])
            plan.append(parts)
        out = self._run(pieces)
        rows = [torch.cat([out.hidden[p, a:b] for p, a, b in parts]) for parts in plan]
        hidden = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        return Residues(hidden, residue_mask([len(s) for s in sequences]).to(hidden.device))


def check_finite(residues: Residues, names: Sequence[str], backbone: str) -> None:
    """Stop on NaN/inf activations instead of training on them."""
    finite = torch.isfinite(residues.hidden.detach()).all(-1) | ~residues.mask.to(residues.hidden.device)
    bad = (~finite.all(-1)).nonzero().flatten().tolist()
    if bad:
        dtype = str(residues.hidden.dtype).removeprefix("torch.")
        raise BenchError(
            f"backbone {backbone} produced NaN/inf activations in {dtype} for record(s) "
            f"{', '.join(names[i] for i in bad[:5])}: rerun with --precision fp32 (or bf16-mixed instead of fp16-mixed)"
        )


def unpack(flat: torch.Tensor, lengths: Sequence[int]) -> Residues:
    """Back-to-back rows ``[sum(lengths), H]`` as the padded :class:`Residues` heads consume."""
    mask = residue_mask(lengths).to(flat.device)
    hidden = flat.new_zeros((*mask.shape, flat.shape[-1]))
    return Residues(hidden.masked_scatter(mask.unsqueeze(-1), flat), mask)


def residue_mask(lengths: Sequence[int]) -> torch.Tensor:
    """``[B, max(lengths)]`` boolean mask of real residues."""
    lengths_t = torch.as_tensor(list(lengths))
    return torch.arange(int(lengths_t.max())).unsqueeze(0) < lengths_t.unsqueeze(1)


def chunk_spans(length: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(start, end, keep_from, keep_to)`` over ``range(length)``.

    Windows are at most ``window`` long, evenly spaced, and neighbours overlap by at least
    ``overlap - 1`` residues. ``[keep_from, keep_to)`` is the part of the sequence a window
    contributes: overlaps are split in the middle, so every residue is taken from a window where
    it has context on both sides, and the kept parts tile the sequence exactly.
    """
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be in [0, window={window})")
    if length <= window:
        return [(0, length, 0, length)]
    n = math.ceil((length - overlap) / (window - overlap))
    starts = [i * (length - window) // (n - 1) for i in range(n)]
    cuts = [0, *((starts[i] + window + starts[i + 1]) // 2 for i in range(n - 1)), length]
    return [(s, s + window, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def resolve_dtype(requested: str, supported: Sequence[str], device: torch.device | str, backbone: str) -> torch.dtype:
    """The torch dtype for ``--dtype``, within the family's limits and the hardware's.

    ``auto`` is fp32 on CPU and bf16 on GPUs that have it (when the family runs in bf16).
    """
    device = torch.device(device)
    has_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return torch.bfloat16 if has_bf16 and "bf16" in supported else torch.float32
    if requested not in DTYPES:
        raise BenchError(f"--dtype {requested}: unknown; use one of auto, {', '.join(DTYPES)}")
    if requested not in supported:
        raise BenchError(f"backbone {backbone} cannot run in {requested} (it supports {', '.join(supported)}); "
                         f"use --dtype {'bf16' if 'bf16' in supported else 'fp32'}")
    if requested == "bf16" and device.type == "cuda" and not has_bf16:
        raise BenchError(f"--dtype bf16: {torch.cuda.get_device_name(device)} has no bf16; use --dtype fp32")
    return DTYPES[requested]


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


def load_backbone(spec: BackboneSpec, source: str | None, device: torch.device | str, *, dtype: str = "auto",
                  init: str = "pretrained", long_policy: str = "error") -> Backbone:
    """Load a registered backbone for one run: weights, precision, init and long-sequence policy.

    Every plugin's ``load(source, device, *, dtype, init)`` gets the same call; the backbone is
    then cast to the resolved precision (a no-op for loaders that loaded in it) and given the
    spec's facts it does not set itself.
    """
    if long_policy not in LONG_POLICIES:
        raise BenchError(f"--long-policy {long_policy}: unknown; use one of {', '.join(LONG_POLICIES)}")
    torch_dtype = resolve_dtype(dtype, spec.dtypes, device, spec.name)
    try:
        inspect.signature(spec.load).bind(source, str(device), dtype=dtype, init=init)
    except TypeError:
        raise BenchError(f"backbone {spec.name}: its plugin's load() does not take (source, device, *, dtype, "
                         "init); update the plugin to the loader signature in docs/plugins.md") from None
    backbone = spec.load(source, str(device), dtype=dtype, init=init)
    backbone.name = backbone.name or spec.name
    backbone.adapter_targets = backbone.adapter_targets or spec.adapter_targets
    backbone.ffn_targets = backbone.ffn_targets or spec.ffn_targets
    backbone.long_policy = long_policy
    return backbone.to(device=device, dtype=torch_dtype)


def architecture(entry: Mapping[str, Any], keys: Sequence[str], backbone: str) -> dict[str, Any]:
    """The registry entry's architecture table, checked to hold ``keys`` (for ``--init random``)."""
    table = entry.get("architecture", {})
    missing = [k for k in keys if k not in table]
    if missing:
        raise BenchError(f"registry.toml [backbones.{backbone}] lacks architecture.{missing[0]}, needed to build "
                         "the architecture for --init random; add it")
    return dict(table)


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


def weights_source(spec: BackboneSpec, source: str | None) -> str:
    """Where pretrained weights come from: ``--backbone-path`` or the registry's hub id."""
    if source is None:
        raise BenchError(f"backbone {spec.name} has no hub_id in registry.toml; pass --backbone-path DIR")
    return source
