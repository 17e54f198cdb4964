"""Registers the backbones named in registry.toml whose family is built in.

Family modules import torch/transformers, so they are imported only when a backbone loads;
registering reads registry.toml only, which keeps ``bench list`` fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from importlib import import_module
from typing import Any

from plm_bench import BackboneSpec, BenchError, hookimpl, load_toml, shipped_file

FAMILIES = {  # family -> module with ``load(spec, entry, source, device, *, dtype, init)``
    "onehot": "plm_bench_plugins.onehot",
    "esm2": "plm_bench_plugins.esm",
    "t5-encoder": "plm_bench_plugins.t5",
    "bert": "plm_bench_plugins.bert",
}
DTYPE_NAMES = ("fp32", "bf16", "fp16")


def load_family(spec: BackboneSpec, entry: Mapping[str, Any], source: str | None, device: str, *,
                dtype: str = "auto", init: str = "pretrained"):
    return import_module(FAMILIES[spec.family]).load(spec, entry, source, device, dtype=dtype, init=init)


def spec_from_entry(name: str, entry: Mapping[str, Any]) -> BackboneSpec:
    """A :class:`BackboneSpec` from a ``[backbones.NAME]`` table, checked so that a typo in
    registry.toml is reported naming the entry instead of failing mid-run."""
    where = f"registry.toml [backbones.{name}]"
    architecture = entry.get("architecture", {})
    for key in ("family", "parameters", "dtypes"):
        if key not in entry:
            raise BenchError(f"{where} lacks {key!r}; add it")
    for key in ("layers", "hidden_size"):
        if key not in architecture:
            raise BenchError(f"{where} lacks architecture.{key}; add it")
    dtypes = tuple(entry["dtypes"])
    if "fp32" not in dtypes or not set(dtypes) <= set(DTYPE_NAMES):
        raise BenchError(f"{where}: dtypes {list(dtypes)} must include fp32 and come from {', '.join(DTYPE_NAMES)}")
    facts = BackboneSpec(
        name=name, family=entry["family"], load=load_family, hub_id=entry.get("hub_id"),
        description=entry.get("description", ""), parameters=int(entry["parameters"]),
        hidden_size=int(architecture["hidden_size"]), layers=int(architecture["layers"]),
        max_length=entry.get("max_length"), dtypes=dtypes,
        adapter_targets=tuple(entry.get("adapter_targets", ())), ffn_targets=tuple(entry.get("ffn_targets", ())),
    )
    # families read the checked facts and, from the raw entry, the architecture and conventions
    return replace(facts, load=partial(load_family, facts, entry))


@hookimpl
def register_backbones(register) -> None:
    for name, entry in load_toml(shipped_file("plm_bench_registry", "registry.toml"))["backbones"].items():
        if entry.get("family") in FAMILIES:
            register(spec_from_entry(name, entry))
