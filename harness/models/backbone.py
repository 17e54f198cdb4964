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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plm_bench.alphabet import check_sequence
from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.plugins.specs import BackboneSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LONG_POLICIES = ("error", "chunk", "whole")
MAX_RESIDUES = 40_000  # longest sequence embedded in windows (--long-policy chunk) or by window-free backbones


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
    # whether max_length is a limit of the architecture (a table of absolute positions) rather than the
    # length it was trained on (rotary positions), which policy "whole" may exceed
    positions_limit: bool = True
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
        if limit is not None and any(len(s) > limit for s in sequences) and self.long_policy != "whole":
            residues = self._run_chunked(sequences, limit)
        else:
            residues = self._run(sequences, packed=self.packs and not tokens)
        check_finite(residues, names, self.name)
        return residues

    def check_lengths(self, sequences: Sequence[str], names: Sequence[str]) -> None:
        """Under policy ``error`` (or ``whole`` on a backbone whose positions stop at ``max_length``),
        fail on a sequence longer than ``max_length``, naming its record.

        Callers about to embed a whole split call this first, so the error comes before the work.
        """
        if self.long_policy == "chunk" or self.max_length is None:
            longest = max(range(len(sequences)), key=lambda i: len(sequences[i]), default=None)
            if longest is not None and len(sequences[longest]) > MAX_RESIDUES:
                raise BenchError(f"record {names[longest]} has {len(sequences[longest])} residues, more than the "
                                 f"{MAX_RESIDUES} a sequence may have here (the longest known proteins, titins, "
                                 "have about 36,000; its embeddings alone would take GBs): leave the record out")
            return
        if self.long_policy == "whole" and not self.positions_limit:
            return
        for sequence, name in zip(sequences, names, strict=True):
            if len(sequence) > self.max_length and self.long_policy == "whole":
                raise BenchError(f"record {name} has {len(sequence)} residues; backbone {self.name or 'this'}'s "
                                 f"absolute positions stop at {self.max_length}, so --long-policy whole cannot take "
                                 "it in one pass: use --long-policy chunk or leave the record out")
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


def load_backbone(spec: BackboneSpec, source: str | None, device: torch.device | str, *, dtype: str = "auto",
                  init: str = "pretrained", long_policy: str | None = "error") -> Backbone:
    """Load a registered backbone for one run: weights, precision, init and long-sequence policy.

    Every plugin's ``load(source, device, *, dtype, init)`` gets the same call; the backbone is
    then cast to the resolved precision (a no-op for loaders that loaded in it) and given the
    spec's facts it does not set itself.
    """
    long_policy = long_policy or "error"  # unset (a config no protocol resolved): the harness's policy
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


MOVED = {  # 0.2: TransformerBackbone got its own module; the registry helpers went to the family plugin
    **{name: "plm_bench.models.transformer" for name in (
        "ResidueVocabulary", "TransformerBackbone", "PACKED_ATTENTION", "packed_attention", "enable_packing",
        "synthetic_vocab", "RANDOM_INIT_LETTERS")},
    "architecture": "plm_bench_plugins.transformer_family", "weights_source": "plm_bench_plugins.transformer_family",
}


def __getattr__(name: str) -> Any:
    """Names that moved keep working for a minor version, with a warning naming the new path."""
    if name in MOVED:
        import importlib

        warnings.warn(f"plm_bench.models.backbone.{name} moved to {MOVED[name]}.{name} (or `from plm_bench "
                      f"import {name}`); the old path goes in plm-bench 0.3", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
