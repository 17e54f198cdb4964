"""The small, declarative objects plugins register (peft-style config dataclasses).

They are cheap to build: nothing here imports torch, so listing plugins stays fast. The
heavy work happens in the callables they carry, only when a run needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.config import RunConfig
    from plm_bench.models.backbone import Backbone


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone. ``load(source, device, *, dtype="auto", init="pretrained")`` returns a
    :class:`Backbone`; a loader that cannot build random weights raises BenchError for ``init="random"``.

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
    mapping ``(hidden [B, L, H], mask [B, L])`` to ``[B, out]`` or ``[B, L, out]``.

    ``build`` may also take ``dropout`` (the run's ``head_dropout``). With ``tokens`` the head
    reads the backbone's token-level states (special tokens and padding included, mask = the
    attention mask) instead of the 1:1 residue states, as the study's fine-tuning heads did (notebooks/finetune).
    """

    name: str
    levels: tuple[str, ...]
    build: Callable[..., Any]
    description: str = ""
    default_for: tuple[str, ...] = ()  # levels whose tasks get this head with --head auto
    tokens: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """An adaptation of the backbone.

    Without ``prepare`` the backbone stays frozen: the protocol embeds each split once and
    trains the head on those embeddings. Otherwise ``prepare(backbone, options)`` makes the
    trainable parameters require grad (wrapping the backbone if needed) and returns the module
    to run. ``options`` maps each option the method accepts to its default; users override
    them with ``--method-option KEY=VALUE`` and :meth:`resolve_options` checks what they gave.
    ``configure(backbone, options)``, if given, sets up what the loaded backbone outputs before
    anything runs (the built-in ``frozen`` picks the layers it embeds from); the embedding cache
    keys on the result (``Backbone.output_layers``), so a frozen method's choice never reuses
    another's entries.
    """

    name: str
    default_lr: float
    prepare: Callable[[Backbone, dict[str, Any]], Any] | None = None
    configure: Callable[[Backbone, dict[str, Any]], None] | None = None
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    default: bool = False  # the method of a run that names none (exactly one registered method says so)
    # An option added after runs were stored: the value that means "as before it existed". Runs at
    # it keep their identity (the option is left out of the config hash), so stored runs stay done.
    options_as_before: Mapping[str, Any] = field(default_factory=dict)
    # Refuses option values the method cannot run with (raise BenchError naming the option and the
    # fix), called by resolve_options: a bad value fails before the run, never inside it.
    check: Callable[[dict[str, Any]], None] | None = None
    adapts: bool = False  # wraps the backbone's transformer with adapters (PEFT): a weightless backbone has none


    @property
    def trains_backbone(self) -> bool:
        return self.prepare is not None

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``, each value coerced to its default's type, so that
        ``rank=4`` spelled out and left implicit are the same config."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise BenchError(f"method {self.name} has no option {unknown[0]!r} (its options: {known}); "
                             "fix --method-option")
        options = {key: _coerce(self.name, key, default, given.get(key, default))
                   for key, default in sorted(self.options.items())}
        if self.check:
            self.check(options)
        return options


def _coerce(method: str, key: str, default: Any, value: Any) -> Any:
    """``value`` as the type of ``default``: int, float, bool, str, or a list of names (tuple
    defaults; a comma-separated string is accepted for those)."""
    expected = type(default)
    if isinstance(default, tuple):
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) and n for n in names):
            return [n.strip() for n in names]
    elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool):
        return value
    raise BenchError(f"method {method} option {key}={value!r}: expected "
                     f"{'names, e.g. a,b' if isinstance(default, tuple) else expected.__name__}; "
                     "fix --method-option")


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
    cpu_options: Mapping[str, Any] = field(default_factory=dict)  # options under --device cpu: claim no GPU


@dataclass(frozen=True)
class ProtocolRule:
    """Settings for the runs a rule matches: each ``match`` key (task, level, family, backbone,
    method) lists the values it accepts; a key left out matches everything."""

    match: Mapping[str, tuple[str, ...]]
    settings: Mapping[str, Any]
    source: str = ""  # where the values come from (e.g. the study's table), shown by `bench list`

    def applies(self, run: Mapping[str, str]) -> bool:
        return all(run.get(key) in values for key, values in self.match.items())


@dataclass(frozen=True)
class ProtocolSpec:
    """A named protocol: defaults for every run setting, by task, backbone family and method.

    Rules apply in order, a later one overriding an earlier one, so a file reads from the general
    to the particular. A run's explicit settings override all of them (:meth:`RunConfig.resolved`).
    ``seeds`` in a rule's settings is how many seeds ``bench run`` runs when given none.
    """

    name: str
    rules: tuple[ProtocolRule, ...]
    description: str = ""
    origin: str = ""  # the file it was read from, for error messages

    def settings_for(self, **run: str) -> dict[str, Any]:
        """The protocol's settings for a run with these ``task``, ``level``, ``family``, ``backbone``
        and ``method``; ``method_options`` merge key by key."""
        chosen: dict[str, Any] = {}
        for rule in self.rules:
            if rule.applies(run):
                options = {**chosen.get("method_options", {}), **rule.settings.get("method_options", {})}
                chosen.update(rule.settings)
                if options:
                    chosen["method_options"] = options
        return chosen


KINDS = ("backbone", "task", "head", "method", "launcher", "protocol")


@dataclass
class Catalog:
    """Every registered item by kind and name, with the distribution that provided it."""

    items: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # plugin name -> error
