"""Plugin discovery: load every ``plm_bench`` entry point and collect what it registers.

A plugin that fails to import is recorded as broken (``bench list`` shows it) instead of
taking the CLI down; two plugins registering the same name is an error naming both.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

import pluggy

from plm_bench.errors import BenchError
from plm_bench.plugins import hookspecs
from plm_bench.plugins.specs import KINDS, Catalog

HOOKS = {kind: f"register_{kind}s" for kind in KINDS}


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str]]:
    """A plugin manager with every importable entry point registered, and the broken ones."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    for ep in entry_points(group=hookspecs.PROJECT):
        dist = ep.dist.name if ep.dist else "?"
        label = f"{dist}:{ep.name}"
        if pm.has_plugin(label):
            continue  # the same distribution seen twice on sys.path
        try:
            pm.register(ep.load(), name=label)
        except Exception as exc:  # any import-time failure of third-party code
            broken[label] = f"{type(exc).__name__}: {exc}"
    return pm, broken


@functools.cache
def catalog() -> Catalog:
    """Everything registered by installed plugins (cached for the process)."""
    pm, broken = plugin_manager()
    result = Catalog(broken=broken)
    plugins = dict(pm.list_name_plugin())
    for label, _plugin in plugins.items():
        others = [p for name, p in plugins.items() if name != label]
        for kind, hook in HOOKS.items():
            caller = pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=functools.partial(_add, result, kind, label))
            except BenchError:
                raise
            except Exception as exc:
                result.broken[label] = f"{type(exc).__name__} in {hook}: {exc}"
    return result


def _add(result: Catalog, kind: str, label: str, item: Any) -> None:
    name = item.name
    if name in result.items[kind]:
        first = result.providers[(kind, name)]
        raise BenchError(
            f"{kind} {name!r} is registered by two plugins: {first} and {label}; "
            "uninstall one of them or rename its item"
        )
    result.items[kind][name] = item
    result.providers[(kind, name)] = label


def get(kind: str, name: str) -> Any:
    """The registered item, or a one-line error listing what exists."""
    items = catalog().items[kind]
    if name not in items:
        known = ", ".join(sorted(items)) or "none"
        raise BenchError(f"unknown {kind} {name!r}; known: {known} (see `bench list {kind}`)")
    return items[name]
