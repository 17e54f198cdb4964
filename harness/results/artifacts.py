"""A run's trained weights on disk, so that it can predict new sequences later.

Only what training changed is saved: the trainable tensors at the reported checkpoint (the
adapter and the head; every backbone weight for ``full``). The rest comes back by rebuilding
the run's model from its config, which loads the same backbone weights. Files are safetensors
named by config hash and content in a folder next to the results store (``runs.sqlite`` keeps
them in ``runs.artifacts/``); the record names the file and its sha256.

A rerun never touches the weights the stored record names: it writes a new file (its name
carries its own digest) and the store deletes the superseded one only after the new row is
committed, so a kill at any point leaves the old run whole.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file
from plm_bench.tasks.sources import sha256_of

FORMAT = "plm-bench-trainable/1"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that requires grad, by its name in ``model``, and the buffers of its
    ``head``: a fresh head's buffers are learned from the training split too (e.g. the input
    standardization of frozen-embedding heads)."""
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        state.update({f"head.{name}": b.detach() for name, b in head.named_buffers()})
    return state


def save(model: nn.Module, folder: Path, config_hash: str) -> dict[str, Any]:
    """Write the trainable weights as a new file ``<config hash>-<digest>.safetensors`` (temp
    file in ``folder``, then rename), leaving any earlier run's file alone; returns the
    record's ``artifact`` entry."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.to("cpu", copy=True).contiguous() for name, t in trainable_state(model).items()}
    with atomic_file(folder / f"{config_hash}.safetensors", prefix=config_hash) as replacement:
        # one metadata key: safetensors writes a map's keys in a random order, so two would make
        # equal weights differ in sha256 from run to run
        save_file(tensors, replacement.path,
                  metadata={"plm_bench": json.dumps({"format": FORMAT, "config_hash": config_hash})})
        digest = sha256_of(replacement.path)
        # named by content: a rerun's new file sits beside the old run's until its row commits (same
        # digest: the same bytes, so replacing an old file changes nothing)
        replacement.target = path = folder / f"{config_hash}-{digest[:16]}.safetensors"
    return {"file": path.name, "sha256": digest, "tensors": len(tensors),
            "parameters": sum(t.numel() for t in tensors.values())}


def prune(folder: Path, config_hash: str, keep: str) -> None:
    """Delete the weights files of ``config_hash`` other than ``keep`` (the stored record's),
    once the store has committed the record naming ``keep``."""
    for path in [*Path(folder).glob(f"{config_hash}-*.safetensors"), Path(folder) / f"{config_hash}.safetensors"]:
        if path.name != keep:
            path.unlink(missing_ok=True)


def verified_path(folder: Path, artifact: dict[str, Any]) -> Path:
    """The run's weights file, refusing one that is gone or was changed since the run wrote it
    (checked before any model is built, so the error comes at once)."""
    path = Path(folder) / artifact["file"]
    if not path.is_file():
        raise BenchError(f"{path} is missing: the run's weights were moved or deleted; "
                         "rerun it with `bench run ... --force`")
    if sha256_of(path) != artifact["sha256"]:
        raise BenchError(f"{path} differs from the file its run wrote (sha256); it was overwritten or "
                         "corrupted: rerun the run with --force")
    return path


def load_into(model: nn.Module, path: Path) -> None:
    """Copy saved weights into ``model`` (rebuilt from the run's config); they must fit it exactly."""
    try:
        tensors = load_file(path)
    except SafetensorError as exc:
        raise BenchError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        copy_trainable(model, tensors)
    except ValueError as exc:
        raise BenchError(f"{path} does not fit the rebuilt model ({exc}); the plugins changed since the run: "
                         "rerun it with --force") from None


@torch.no_grad()
def copy_trainable(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (a :func:`trainable_state`) into ``model`` in place. They must fit exactly:
    a ``ValueError`` saying what differs, before anything is copied, if they do not."""
    for name, parameter in model.named_parameters():  # lazy layers (e.g. probe-flat) learn their width in training
        if isinstance(parameter, nn.parameter.UninitializedParameter) and name in tensors:
            parameter.materialize(tensors[name].shape)
    expected = trainable_state(model)
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, parameter in expected.items():
        if tensors[name].shape != parameter.shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, the rebuilt model "
                             f"{tuple(parameter.shape)}")
    for name, parameter in expected.items():
        parameter.copy_(tensors[name])


def adapter_config(model: nn.Module) -> dict[str, Any] | None:
    """The peft adapter configuration inside ``model`` as plain JSON, or None without one."""
    from peft import PeftModel

    for module in model.modules():
        if isinstance(module, PeftModel):
            config = module.peft_config[module.active_adapter].to_dict()
            return json.loads(json.dumps(config, default=_plain))
    return None


def _plain(value: Any) -> Any:
    """JSON for what peft configs hold besides JSON types: sets of module names and enums."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
