"""The small, declarative objects plugins register (peft-style config dataclasses).

They are cheap to build: nothing here imports torch, so listing plugins stays fast. The
heavy work happens in the callables they carry, only when a run needs them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
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
    # Raised when a change to the head's code changes what a run computes with the same settings:
    # the runs it served before stop counting as done (plm_bench.results.provenance.changes).
    revision: int = 1


@dataclass(frozen=True)
class Option:
    """One option of a method, declared like a RunConfig setting (peft's config style): its
    ``default``, ``help`` and what it accepts, checked when a run's config resolves, before any
    run starts.

    ``type`` defaults to the default's (a tuple default means a list of names, given as
    ``a,b``; give ``type`` with a ``None`` default, which means unset); ``choices`` lists the
    accepted values; ``min``/``max`` bound a number (inclusive).
    ``as_before``: an option added after runs were stored declares the value that means "as the
    method ran before it existed"; runs at it keep their identity (RunConfig.hash).
    """

    default: Any
    help: str = ""
    type: type | None = None
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    as_before: Any = field(default_factory=lambda: MISSING)  # MISSING: an option since the first release

    @property
    def kind(self) -> type:
        return self.type or type(self.default)

    def coerce(self, where: str, value: Any) -> Any:
        """``value`` as this option's type, within its choices and bounds, or one error naming
        ``where`` (e.g. ``method lora option rank``) and what it accepts."""
        kind = self.kind
        if value is None and self.default is None:  # a None default means "unset": the method decides
            return None
        if kind is tuple:
            names = value.split(",") if isinstance(value, str) else value
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) and n for n in names):
                return [n.strip() for n in names]
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.checked(where, float(value))
        elif isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
            return self.checked(where, value)
        raise BenchError(f"{where}={value!r}: expected {self.accepts()}; fix --method-option")

    def checked(self, where: str, value: Any) -> Any:
        if (self.choices and value not in self.choices) or (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max):
            raise BenchError(f"{where}={value!r}: expected {self.accepts()}; fix --method-option")
        return value

    def accepts(self) -> str:
        """What the option takes, in words: ``int >= 1``, ``one of none, all``, ``names, e.g. a,b``."""
        if self.kind is tuple:
            return "names, e.g. a,b"
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        bounds = [f">= {self.min}" if self.min is not None else "", f"<= {self.max}" if self.max is not None else ""]
        return " ".join([self.kind.__name__, *filter(None, bounds)])


def declared(options: Mapping[str, Any]) -> dict[str, Option]:
    """Options as :class:`Option` declarations; a bare default (how plugins declared options
    before 0.2) becomes an Option of that default's type."""
    return {key: value if isinstance(value, Option) else Option(value) for key, value in options.items()}


@dataclass(frozen=True)
class MethodSpec:
    """An adaptation of the backbone.

    Without ``prepare`` the backbone stays frozen: the protocol embeds each split once and
    trains the head on those embeddings. Otherwise ``prepare(backbone, options)`` makes the
    trainable parameters require grad (wrapping the backbone if needed) and returns the module
    to run. ``options`` declares each option the method accepts (:class:`Option`, or a bare
    default); users override them with ``--method-option KEY=VALUE`` and :meth:`resolve_options`
    checks what they gave. ``configure(backbone, options)``, if given, sets up what the loaded
    backbone outputs before anything runs (the built-in ``frozen`` picks the layers it embeds
    from); the embedding cache keys on the result (``Backbone.output_layers``), so a frozen
    method's choice never reuses another's entries.
    """

    name: str
    default_lr: float
    prepare: Callable[[Backbone, dict[str, Any]], Any] | None = None
    configure: Callable[[Backbone, dict[str, Any]], None] | None = None
    description: str = ""
    options: Mapping[str, Option] = field(default_factory=dict)
    default: bool = False  # the method of a run that names none (exactly one registered method says so)
    # Before 0.2 (options as bare defaults): an option added after runs were stored and the value that
    # means "as before it existed"; Option(as_before=...) says the same.
    options_as_before: Mapping[str, Any] = field(default_factory=dict)
    # Refuses option values the method cannot run with (raise BenchError naming the option and the
    # fix), called by resolve_options: a bad value fails before the run, never inside it.
    check: Callable[[dict[str, Any]], None] | None = None
    adapts: bool = False  # wraps the backbone's transformer with adapters (PEFT): a weightless backbone has none


    def __post_init__(self) -> None:
        object.__setattr__(self, "options", declared(self.options))

    @property
    def trains_backbone(self) -> bool:
        return self.prepare is not None

    @property
    def as_before(self) -> dict[str, Any]:
        """Each option added later and the value that means "as before it existed"."""
        declared_here = {k: o.as_before for k, o in self.options.items() if o.as_before is not MISSING}
        return {**self.options_as_before, **declared_here}

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``, each value coerced to its option's type and checked,
        so that ``rank=4`` spelled out and left implicit are the same config."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise BenchError(f"method {self.name} has no option {unknown[0]!r} (its options: {known})"
                             f"{did_you_mean(unknown[0], self.options)}; fix --method-option")
        options = {key: option.coerce(f"method {self.name} option {key}", given.get(key, option.default))
                   for key, option in sorted(self.options.items())}
        if self.check:
            self.check(options)
        return options


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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
    method, init) lists the values it accepts; a key left out matches everything."""

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
    extends: str = ""  # a protocol whose settings apply first: this one states only what it changes

    def inherited(self, **run: str) -> dict[str, Any]:
        """The settings of the protocol this one ``extends`` for the run (none if it extends none)."""
        if not self.extends:
            return {}
        from plm_bench import plugins

        chain, parent = [self.name], self.extends
        while parent:  # a cycle would recurse forever: refuse it naming the chain
            if parent in chain:
                raise BenchError(f"protocol {self.name} ({self.origin}): extends forms a cycle "
                                 f"{' -> '.join([*chain, parent])}; fix `extends`")
            chain.append(parent)
            parent = plugins.get("protocol", parent).extends
        return plugins.get("protocol", self.extends).settings_for(**run)

    def settings_for(self, **run: str) -> dict[str, Any]:
        """The protocol's settings for a run with these ``task``, ``level``, ``family``, ``backbone``,
        ``method`` and ``init``; ``method_options`` merge key by key."""
        chosen: dict[str, Any] = self.inherited(**run)
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
