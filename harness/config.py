"""The run configuration: the one owner of every setting that determines a run's result.

Each field carries its help text and the JSON schema of its value in ``metadata`` (peft's config
style), and says where it is set (``role``): on the command line and in a grid's ``[settings]``
(``setting``), as a grid axis (``axis``), or in a grid table of its own (``table``). The
``bench run`` options, a grid's keys and the ``config`` of the run-record schema are all derived
from these fields, so adding a setting is one edit here plus its use.

Nothing here imports torch or the plugins at module level: listing and validating stay fast.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from plm_bench.errors import BenchError

_COUNT = {"type": "integer", "minimum": 1}
_NAME = {"type": "string", "minLength": 1}
_BY_PROTOCOL = " (default: the protocol's)"


def by_protocol(help: str, schema: dict, **kwargs: Any) -> Any:
    """A setting whose default is the run's protocol's (``None`` until resolved)."""
    return setting(None, help + _BY_PROTOCOL, schema, nullable=True, protocol=True, **kwargs)


def setting(default: Any, help: str, schema: dict, *, role: str = "setting", nullable: bool = False,
            cli: str | None = None, protocol: bool = False, as_before: Any = MISSING, fallback: Any = MISSING) -> Any:
    """A RunConfig field: ``help`` for people, ``schema`` for validators, ``role`` for where it is set.

    ``nullable`` fields accept ``None`` (left unset: the run's defaults decide); ``cli`` names the
    option where it is not the field name with dashes; ``protocol`` fields left ``None`` take the
    run's protocol's value (:meth:`RunConfig.resolved`), so a resolved config has them all.

    ``as_before``: every setting added after the first release of the store (identity version 1)
    must declare the value that means "as plm-bench ran before this setting existed"; a run at
    that value leaves the setting out of its hash, so stored runs keep their identity (see
    :attr:`RunConfig.hash` and tests/test_identity.py, which enforces the declaration).

    ``fallback``: a ``protocol`` setting's value where the run's protocol names none (protocols
    need not know it); a newer setting falls back to its ``as_before`` value.
    """
    if nullable and "enum" in schema:
        schema = {**schema, "enum": [*schema["enum"], None]}
    elif nullable:
        schema = {**schema, "type": [schema["type"], "null"]}
    metadata = {"help": help, "schema": schema, "role": role, "cli": cli, "protocol": protocol,
                "as_before": as_before, "fallback": as_before if fallback is MISSING else fallback}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result; its hash identifies the run in the store."""

    backbone: str = setting(MISSING, "Backbone name (see `bench list backbone`).", _NAME, role="axis")
    task: str = setting(MISSING, "Task name (see `bench list task`), or the path of your own task TOML.", _NAME,
                        role="axis")
    method: str = setting("auto", "Adaptation method (see `bench list method`); auto: the default method "
                          "the plugins declare.", _NAME, role="axis")
    head: str = setting("auto", "Prediction head (see `bench list head`); auto: the head declared for the "
                        "task's level.", _NAME, role="axis")
    seed: int = setting(1, "Seed of the run.", {"type": "integer"}, role="axis")
    protocol: str = setting("harness", "Protocol: the defaults of every setting below by task, backbone family and "
                            "method (see `bench list protocol`); explicit settings override it.", _NAME)
    epochs: int | None = by_protocol("Training epochs.", _COUNT)
    lr: float | None = setting(None, "Learning rate (default: the protocol's, else the method's).",
                               {"type": "number", "exclusiveMinimum": 0}, nullable=True)
    batch_size: int | None = by_protocol("Training batch: sequences, or residues with --batch-unit residues.",
                                         _COUNT)
    batch_unit: str | None = by_protocol("What a training batch counts: proteins, or residues (frozen "
                                         "per-residue heads only).", {"enum": ["proteins", "residues"]})
    optimizer: str | None = by_protocol("Optimizer.", {"enum": ["adamw", "adam"]})
    adam_eps: float | None = by_protocol("The optimizer's epsilon.", {"type": "number", "exclusiveMinimum": 0})
    weight_decay: float | None = by_protocol("Weight decay.", {"type": "number", "minimum": 0})
    schedule: str | None = by_protocol("Learning-rate schedule: constant, or linear decay to 0 over training.",
                                       {"enum": ["constant", "linear"]})
    grad_clip: float | None = by_protocol("Clip the gradient norm to this (0: no clipping).",
                                          {"type": "number", "minimum": 0})
    head_dropout: float | None = by_protocol("Dropout of the head.",
                                             {"type": "number", "minimum": 0, "exclusiveMaximum": 1})
    standardize: bool | None = by_protocol("Standardize frozen embeddings with the training split's mean and "
                                           "standard deviation (saved with the head).", {"type": "boolean"})
    max_tokens: int | None = by_protocol("Truncate inputs to this many tokens, special tokens included (0: "
                                         "never; the record counts truncated records).",
                                         {"type": "integer", "minimum": 0})
    backbone_path: str | None = setting(None, "Load the backbone's weights from this local directory instead "
                                        "of its hub id.", _NAME, role="table", nullable=True)
    embeddings: str | None = setting(None, "Frozen runs: read the embeddings from this .h5/.npz file (what `bench "
                                     "embed` writes; entries keyed by record id or sequence md5) instead of computing "
                                     "them; --backbone names the model that wrote them (its hidden size is checked). "
                                     "Recorded with the file's sha256, so a changed file is a new run.", _NAME,
                                     nullable=True)
    dtype: str = setting("auto", "Storage of the backbone's frozen weights (trainable ones are always fp32; families "
                         "enforce their limits; auto: the 16-bit type --precision computes in, else fp32). An explicit "
                         "value with --precision auto also picks the compute: fp32, or bf16/fp16 mixed precision.",
                         {"enum": ["auto", "fp32", "bf16", "fp16"]})
    precision: str = setting("auto", "What training and embedding compute in: fp32, or torch.autocast in bf16/fp16 "
                             "with fp32 trainable weights and optimizer state (fp16 with loss scaling). auto: an "
                             "explicit --dtype's, else the protocol's, else bf16-mixed on GPUs that have bf16 and "
                             "fp32 elsewhere.", {"enum": ["auto", "fp32", "bf16-mixed", "fp16-mixed"]},
                             as_before="auto")
    init: str = setting("pretrained", "random: the architecture with random weights (how much does "
                        "pretraining add?).", {"enum": ["pretrained", "random"]})
    long_policy: str | None = by_protocol("Sequences longer than the backbone's maximum: fail naming them, chunk "
                                          "(overlapping windows), or whole (one pass, where the backbone's positions "
                                          "have no limit: ESM2's rotary ones); protocols that name none: error.",
                                          {"enum": ["error", "chunk", "whole"]}, fallback="error")
    pooling: str | None = by_protocol("Frozen per-protein embeddings: the mean over the residues, or over every "
                                      "token the backbone sees, special tokens included (the study's embedding "
                                      "notebook); frozen methods on protein-level tasks only.",
                                      {"enum": ["residues", "tokens"]}, as_before="residues")
    method_options: dict = setting({}, "Options of the method, e.g. LoRA rank (KEY=VALUE); they override the "
                                   "protocol's.", {"type": "object"}, role="table", cli="method-option")
    val_per_epoch: int | None = by_protocol("Validations per epoch.", _COUNT)
    select_by: str | None = by_protocol("Which validation number picks checkpoints and counts as improvement: "
                                        "the task's primary metric, or the loss.",
                                        {"enum": ["valid-metric", "valid-loss"]})
    patience: int | None = setting(None, "Stop after this many validations without improvement (default: "
                                   "never).", _COUNT, nullable=True)
    min_delta: float = setting(0.0, "Smallest validation gain that counts as an improvement.",
                               {"type": "number", "minimum": 0})
    checkpoint: str | None = by_protocol("Report the early-stopping checkpoint, or train all epochs and "
                                         "report the best (both are recorded when all epochs run).",
                                         {"enum": ["early-stop", "best-of-N"]})
    shuffled_labels: bool = setting(False, "Also train the head on the training labels permuted across proteins "
                                    "(across residues for per-residue tasks) and record its test score among the "
                                    "baselines: frozen methods only, one more head training.", {"type": "boolean"})
    limit_train: int | None = setting(None, "Use only N training examples, drawn at random with --limit-seed "
                                      "(a quick run).", _COUNT, nullable=True)
    limit_eval: int | None = setting(None, "Use only N validation and N test examples, drawn at random with "
                                     "--limit-seed (a quick run).", _COUNT, nullable=True)
    limit_seed: int = setting(0, "Seed of the --limit-train/--limit-eval draw; apart from --seed, so every seed "
                              "and method of a quick run sees the same subset.", {"type": "integer"})
    train_fraction: float = setting(1.0, "Train on this fraction of the training split (a learning curve: subsets "
                                    "drawn with --limit-seed are nested, so a larger one holds every smaller one).",
                                    {"type": "number", "exclusiveMinimum": 0, "maximum": 1})
    dedup: bool = setting(False, "Drop repeated sequences: within a split every copy after the first, and from "
                          "valid and test every sequence already in an earlier split (train, then valid); the "
                          "record counts the repeats either way, and what was dropped.", {"type": "boolean"})
    max_identity: float | None = setting(None, "Score only the test proteins at most this identical to every "
                                         "training protein (global alignment, as `bench data overlap`); "
                                         "validation stays whole. Default: all of test.",
                                         {"type": "number", "exclusiveMinimum": 0, "maximum": 1}, nullable=True)

    def resolved(self) -> RunConfig:
        """Fill the defaults that depend on plugins (method, head by task level, options by method)
        and on the protocol (every ``protocol`` setting left ``None``), so that spelling a default
        out and leaving it implicit hash the same. Explicit values always win."""
        from plm_bench import plugins

        task = plugins.get("task", self.task)
        method = plugins.default_method() if self.method == "auto" else plugins.get("method", self.method)
        chosen = protocol_settings(self, task, method.name)
        head = chosen.get("head", plugins.default_head(task.level).name) if self.head == "auto" else self.head
        lr = float(self.lr if self.lr is not None else chosen.get("lr", method.default_lr))
        options = {k: v for k, v in chosen.get("method_options", {}).items() if k in method.options}
        filled = {}
        for f in config_fields():
            if f.metadata["protocol"] and getattr(self, f.name) is None:
                if chosen.get(f.name) is None and f.metadata["fallback"] is not MISSING:
                    filled[f.name] = f.metadata["fallback"]  # a setting the protocol need not name
                    continue
                if chosen.get(f.name) is None:
                    protocol = plugins.get("protocol", self.protocol)
                    raise BenchError(f"protocol {protocol.name} ({protocol.origin}) sets no {f.name} for task "
                                     f"{task.name}, backbone {self.backbone}, method {method.name}: add it to "
                                     f"the protocol or pass --{f.name.replace('_', '-')}")
                filled[f.name] = chosen[f.name]
        path = str(Path(self.backbone_path).resolve()) if self.backbone_path else None
        if filled.get("pooling", self.pooling) == "tokens" and (method.trains_backbone or task.level != "protein"):
            raise BenchError(f"--pooling tokens averages frozen per-protein embeddings; {task.name} is a "
                             f"{task.level}-level task run with method {method.name}: drop --pooling or use "
                             "--method frozen on a protein-level task")
        check_applies(self, plugins.get("backbone", self.backbone), method)
        if self.shuffled_labels and method.trains_backbone:
            raise BenchError(f"--shuffled-labels trains a second head on frozen embeddings; with method {method.name} "
                             "it would be a second fine-tuning: use --method frozen or drop --shuffled-labels")
        if self.embeddings:
            if method.trains_backbone:
                raise BenchError(f"--embeddings feeds frozen runs; method {method.name} trains the backbone, "
                                 "which needs its weights: drop --embeddings or use --method frozen")
            from plm_bench.models.embedding_paths import identified

            filled["embeddings"] = identified(self.embeddings)
        if self.precision == "auto" and self.dtype == "auto" and chosen.get("precision"):
            filled["precision"] = chosen["precision"]  # explicit --precision or --dtype beat the protocol
        return replace(self, method=method.name, head=head, lr=lr, backbone_path=path, **filled,
                       method_options=method.resolve_options({**options, **self.method_options}))

    @property
    def hash(self) -> str:
        """The run's identity in the store: a digest of :meth:`identity`."""
        canonical = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """The settings that identify the run: every field, except a newer setting left at its
        ``as_before`` value and a method option left at the value its spec declares as before
        it existed; so adding either keeps every stored run's hash (tests/test_identity.py)."""
        values = asdict(self)
        for f in fields(self):
            before = f.metadata["as_before"]
            if before is not MISSING and values[f.name] == before:
                del values[f.name]
        values["method_options"] = _option_identity(self.method, values["method_options"])
        return values

    @property
    def is_smoke(self) -> bool:
        """A quick run on a subset of the data: never comparable with full runs."""
        return self.limit_train is not None or self.limit_eval is not None


def check_applies(config: RunConfig, backbone: Any, method: Any) -> None:
    """Refuse, before any run, a setting that cannot apply to this backbone and method: it would fail
    inside the run, or be recorded without having changed anything."""
    if not 0 <= config.seed < 2**32:
        raise BenchError(f"--seed {config.seed}: seeds run from 0 to {2**32 - 1} (numpy's range); pick one there")
    reason = incompatible(backbone, method)
    if reason:
        raise BenchError(f"{reason}: use --method frozen or full")
    weightless = backbone.parameters == 0
    if config.backbone_path and (weightless or config.init == "random"):
        why = f"backbone {backbone.name} has no weights" if weightless else "--init random loads no weights"
        raise BenchError(f"--backbone-path {config.backbone_path}: {why}, so the folder would be recorded but never "
                         "read; drop --backbone-path")


def incompatible(backbone: Any, method: Any) -> str | None:
    """Why ``method`` cannot run on ``backbone`` (specs), if it cannot: a grid skips the pair, a run refuses it."""
    if backbone.parameters == 0 and method.adapts:
        return f"backbone {backbone.name} has no weights, so method {method.name} has no layers to put adapters on"
    return None


def _option_identity(method: str, options: dict) -> dict:
    """``options`` without those a method added later and left at their ``as_before`` value."""
    if not options:
        return options
    from plm_bench import plugins

    try:
        spec = plugins.get("method", method)
    except BenchError:  # "auto" or a method no plugin serves any more: the options as stored
        return options
    before = spec.as_before
    return {k: v for k, v in options.items() if not (k in before and before[k] == v)}


def protocol_settings(config: RunConfig, task: Any, method: str) -> dict[str, Any]:
    """What ``config``'s protocol sets for its task, backbone (name and family), ``method`` and init."""
    from plm_bench import plugins

    backbone = plugins.get("backbone", config.backbone)
    return plugins.get("protocol", config.protocol).settings_for(
        task=task.name, level=task.level, family=backbone.family, backbone=backbone.name, method=method,
        init=config.init)


def protocol_seeds(config: RunConfig) -> int:
    """How many seeds a (resolved) run's protocol runs when the user names none."""
    from plm_bench import plugins

    return int(protocol_settings(config, plugins.get("task", config.task), config.method).get("seeds", 1))


def config_fields(role: str | None = None) -> list[Field]:
    """RunConfig's fields, in order; only those set in ``role`` if given."""
    return [f for f in fields(RunConfig) if role is None or f.metadata["role"] == role]


def required(f: Field) -> bool:
    """Whether a RunConfig field must be given (it has no default)."""
    return f.default is MISSING and f.default_factory is MISSING


def config_schema() -> dict:
    """JSON schema of a stored config: every field typed; the axes required."""
    return {
        "type": "object",
        "required": [f.name for f in config_fields("axis")],  # older records lack newer settings
        "properties": {f.name: f.metadata["schema"] for f in config_fields()},
    }
