"""The small, declarative objects plugins register (peft-style config dataclasses).

They are cheap to build: nothing here imports torch, so listing plugins stays fast. The
heavy work happens in the callables they carry, only when a run needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plm_bench.backbone import Backbone
    from plm_bench.protocol import RunConfig


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone. ``load(source, device, *, dtype="auto", init="pretrained")`` returns a
    :class:`Backbone` (loaders taking only ``(source, device)`` still work, without ``--init random``).

    ``source`` is ``hub_id`` or a local directory given with ``--backbone-path``. The facts below
    come from registry.toml for built-ins, so tools can read them without loading weights:
    ``dtypes`` the precisions the family runs in, ``max_length`` residues per forward pass
    (``None``: no architectural limit), ``adapter_targets`` the attention projections PEFT
    methods wrap (q, k, v, o) and ``ffn_targets`` the feed-forward layers to add for FFN adapters
    (module-name suffixes, PEFT's ``target_modules`` semantics).
    """

    name: str
    family: str
    load: Callable[..., Backbone]
    hub_id: str | None = None
    description: str = ""
    parameters: int | None = None
    hidden_size: int | None = None
    layers: int | None = None
    max_length: int | None = None
    dtypes: tuple[str, ...] = ("fp32",)
    adapter_targets: tuple[str, ...] = ()
    ffn_targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeadSpec:
    """A prediction head: ``build(hidden_size, out_dim, level)`` returns an ``nn.Module``
    mapping ``(hidden [B, L, H], mask [B, L])`` to ``[B, out]`` or ``[B, L, out]``."""

    name: str
    levels: tuple[str, ...]
    build: Callable[[int, int, str], Any]
    description: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """An adaptation of the backbone.

    Without ``prepare`` the backbone stays frozen: the protocol embeds each split once and
    trains the head on those embeddings. Otherwise ``prepare(backbone)`` makes the trainable
    parameters require grad (wrapping the backbone if needed) and returns the module to run.
    """

    name: str
    default_lr: float
    prepare: Callable[[Backbone], Any] | None = None
    description: str = ""

    @property
    def trains_backbone(self) -> bool:
        return self.prepare is not None


@dataclass(frozen=True)
class LauncherSpec:
    """Where runs execute: ``launch(configs, execute, **options)`` yields one record per config.

    ``execute(config)`` runs one config in the current process and returns its record; a
    launcher may call it remotely (it pickles), but records always flow back to the caller,
    which alone writes the store. ``options`` are the launcher's own keyword arguments
    (``bench grid --launcher-option KEY=VALUE``), checked against ``launch``'s signature
    before anything runs.
    """

    name: str
    launch: Callable[[Iterable[RunConfig], Callable[[RunConfig], dict]], Iterator[dict]]
    description: str = ""


KINDS = ("backbone", "task", "head", "method", "launcher")


@dataclass
class Catalog:
    """Every registered item by kind and name, with the distribution that provided it."""

    items: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # plugin name -> error
