"""A run's trained weights on disk, so that it can predict new sequences later.

Only what training changed is saved: the trainable tensors at the reported checkpoint (the
adapter and the head; every backbone weight for ``full``). The rest comes back by rebuilding
the run's model from its config, which loads the same backbone weights. Files are safetensors
named by config hash in a folder next to the results store (``runs.sqlite`` keeps them in
``runs.artifacts/``); the record names the file and its sha256.
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.tasks.sources import current_umask, sha256_of

FORMAT = "plm-bench-trainable/1"


def folder_for(store_path: Path) -> Path:
    """Where the runs of the store at ``store_path`` keep their weights."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.artifacts")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that requires grad, by its name in ``model``."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save(model: nn.Module, folder: Path, config_hash: str) -> dict[str, Any]:
    """Write the trainable weights atomically (temp file in ``folder``, then rename); returns
    the record's ``artifact`` entry."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.to("cpu", copy=True).contiguous() for name, t in trainable_state(model).items()}
    path = folder / f"{config_hash}.safetensors"
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=path.stem, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"format": FORMAT, "config_hash": config_hash})
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes it private; a store may be shared
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return {"file": path.name, "sha256": sha256_of(path), "tensors": len(tensors),
            "parameters": sum(t.numel() for t in tensors.values())}


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


@torch.no_grad()
def load_into(model: nn.Module, path: Path) -> None:
    """Copy saved weights into ``model`` (rebuilt from the run's config); they must fit it exactly."""
    try:
        tensors = load_file(path)
    except SafetensorError as exc:
        raise BenchError(f"{path}: not a readable safetensors file ({exc})") from None
    for name, parameter in model.named_parameters():  # lazy layers (e.g. probe-flat) learn their width in training
        if isinstance(parameter, nn.parameter.UninitializedParameter) and name in tensors:
            parameter.materialize(tensors[name].shape)
    expected = trainable_state(model)
    if set(tensors) != set(expected):
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise BenchError(f"{path} does not fit the rebuilt model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); the plugins changed since the run: rerun it with --force")
    for name, parameter in expected.items():
        if tensors[name].shape != parameter.shape:
            raise BenchError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, the rebuilt model "
                             f"{tuple(parameter.shape)}; rerun the run with --force")
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
