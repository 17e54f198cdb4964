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

_COUNT = {"type": "integer", "minimum": 1}
_NAME = {"type": "string", "minLength": 1}


def setting(default: Any, help: str, schema: dict, *, role: str = "setting", nullable: bool = False,
            cli: str | None = None) -> Any:
    """A RunConfig field: ``help`` for people, ``schema`` for validators, ``role`` for where it is set.

    ``nullable`` fields accept ``None`` (left unset: the run's defaults decide); ``cli`` names the
    option where it is not the field name with dashes.
    """
    if nullable:
        schema = {**schema, "type": [schema["type"], "null"]}
    metadata = {"help": help, "schema": schema, "role": role, "cli": cli}
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
    epochs: int = setting(10, "Training epochs.", _COUNT)
    lr: float | None = setting(None, "Learning rate (default: the method's).",
                               {"type": "number", "exclusiveMinimum": 0}, nullable=True)
    batch_size: int = setting(8, "Sequences per training batch.", _COUNT)
    backbone_path: str | None = setting(None, "Load the backbone's weights from this local directory instead "
                                        "of its hub id.", _NAME, role="table", nullable=True)
    dtype: str = setting("auto", "Precision of the backbone (families enforce their limits; auto: fp32 on CPU, "
                         "bf16 on GPUs that have it).", {"enum": ["auto", "fp32", "bf16", "fp16"]})
    init: str = setting("pretrained", "random: the architecture with random weights (how much does "
                        "pretraining add?).", {"enum": ["pretrained", "random"]})
    long_policy: str = setting("error", "Sequences longer than the backbone's maximum: fail naming them, or "
                               "chunk.", {"enum": ["error", "chunk"]})
    method_options: dict = setting({}, "Options of the method, e.g. LoRA rank (KEY=VALUE).", {"type": "object"},
                                   role="table", cli="method-option")
    val_per_epoch: int = setting(1, "Validations per epoch.", _COUNT)
    patience: int | None = setting(None, "Stop after this many validations without improvement (default: "
                                   "never).", _COUNT, nullable=True)
    min_delta: float = setting(0.0, "Smallest validation gain that counts as an improvement.",
                               {"type": "number", "minimum": 0})
    checkpoint: str = setting("early-stop", "Report the early-stopping checkpoint, or train all epochs and "
                              "report the best (both are recorded when all epochs run).",
                              {"enum": ["early-stop", "best-of-N"]})
    limit_train: int | None = setting(None, "Use only the first N training examples (a quick run).", _COUNT,
                                      nullable=True)
    limit_eval: int | None = setting(None, "Use only the first N validation and test examples (a quick run).",
                                     _COUNT, nullable=True)

    def resolved(self) -> RunConfig:
        """Fill the defaults that depend on plugins (method, head by task level, lr and options by
        method), so that spelling a default out and leaving it implicit hash the same."""
        from plm_bench import plugins

        task = plugins.get("task", self.task)
        method = plugins.default_method() if self.method == "auto" else plugins.get("method", self.method)
        head = plugins.default_head(task.level).name if self.head == "auto" else self.head
        lr = method.default_lr if self.lr is None else float(self.lr)
        path = str(Path(self.backbone_path).resolve()) if self.backbone_path else None
        return replace(self, method=method.name, head=head, lr=lr, backbone_path=path,
                       method_options=method.resolve_options(self.method_options))

    @property
    def hash(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def is_smoke(self) -> bool:
        """A quick run on a subset of the data: never comparable with full runs."""
        return self.limit_train is not None or self.limit_eval is not None


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
