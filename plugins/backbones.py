"""Registers the backbones named in registry.toml whose family is built in.

Family modules import torch/transformers, so they are imported only when a backbone loads.
"""

from __future__ import annotations

from importlib import import_module

from plm_bench import hookimpl
from plm_bench.resources import registry
from plm_bench.specs import BackboneSpec

FAMILIES = {  # family -> "module:class" with a ``load(source, device)`` classmethod
    "onehot": "plm_bench_plugins.onehot:OneHot",
    "esm2": "plm_bench_plugins.esm:Esm2",
}


def family_loader(family: str):
    def load(source: str | None, device: str):
        module, cls = FAMILIES[family].split(":")
        return getattr(import_module(module), cls).load(source, device)

    return load


@hookimpl
def register_backbones(register) -> None:
    for name, entry in registry()["backbones"].items():
        if entry["family"] in FAMILIES:
            register(BackboneSpec(
                name=name, family=entry["family"], load=family_loader(entry["family"]),
                hub_id=entry.get("hub_id"), description=entry.get("description", ""),
            ))
