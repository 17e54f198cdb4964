"""Plugin discovery: load every ``plm_bench`` entry point and collect what it registers.

One policy for a failing plugin: whatever it raises, at import or in a hook, it is recorded as
broken (``bench list`` shows it) and the rest work. Two plugins registering the same name is an
error naming both, since no choice between them would be right. ``$PLM_BENCH_LOAD_PLUGINS``
(comma-separated distribution names, as simonw/llm's ``LLM_LOAD_PLUGINS``) limits which
third-party distributions load; plm-bench's own built-ins always do.
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from plm_bench.errors import BenchError
from plm_bench.plugins import hookspecs
from plm_bench.plugins.specs import KINDS, Catalog, did_you_mean

HOOKS = {kind: f"register_{kind}s" for kind in KINDS}
LOAD_PLUGINS = "PLM_BENCH_LOAD_PLUGINS"
BUILT_IN = "plm-bench"
TASK_FILES = "PLM_BENCH_TASK_FILES"  # the user's task files (os.pathsep-separated), registered as tasks


def wanted(dist: str) -> bool:
    """Whether distribution ``dist``'s plugins load under ``$PLM_BENCH_LOAD_PLUGINS``."""
    chosen = os.environ.get(LOAD_PLUGINS)
    return dist == BUILT_IN or chosen is None or dist in {d.strip() for d in chosen.split(",")}


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str]]:
    """A plugin manager with every importable entry point registered, and the broken ones."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    broken: dict[str, str] = {}
    for ep in entry_points(group=hookspecs.PROJECT):
        dist = ep.dist.name if ep.dist else "?"
        label = f"{dist}:{ep.name}"
        if pm.has_plugin(label) or not wanted(dist):
            continue  # the same distribution seen twice on sys.path, or left out by the user
        try:
            pm.register(ep.load(), name=label)
        except Exception as exc:  # any import-time failure of third-party code
            broken[label] = f"{type(exc).__name__}: {exc}"
            continue
        try:
            pm.check_pending()  # a misspelled hook name would otherwise register nothing, silently
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=label)
            broken[label] = f"PluginValidationError: {exc}"
    return pm, broken


@functools.cache
def catalog() -> Catalog:
    """Everything registered by installed plugins and the user's task files (cached for the process).

    Each plugin's items are collected first and committed only if all its hooks returned, so a
    plugin that raises half-way registers nothing and is listed broken."""
    pm, broken = plugin_manager()
    result = Catalog(broken=broken)
    clashes: list[str] = []
    plugins = dict(pm.list_name_plugin())
    for label, _plugin in plugins.items():
        others = [p for name, p in plugins.items() if name != label]
        collected: list[tuple[str, Any]] = []
        try:
            for kind, hook in HOOKS.items():
                caller = pm.subset_hook_caller(hook, remove_plugins=others)
                caller(register=functools.partial(_collect, collected, kind))
        except Exception as exc:  # third-party code: recorded as broken, never fatal
            result.broken[label] = f"{type(exc).__name__} in {hook}: {exc}"
            continue
        for kind, item in collected:
            _add(result, clashes, kind, label, item)
    _add_task_files(result, clashes)
    if clashes:
        raise BenchError(clashes[0])
    return result


def _collect(collected: list[tuple[str, Any]], kind: str, item: Any) -> None:
    if not isinstance(getattr(item, "name", None), str):  # raised inside the hook: that plugin is broken
        raise TypeError(f"register() got {item!r}, which has no name: register a {kind} spec")
    collected.append((kind, item))


def _add_task_files(result: Catalog, clashes: list[str]) -> None:
    """The user's own task files (``bench run --task ./my_task.toml``), each on its own: a bad one
    is listed broken under ``task file PATH`` and the others still register."""
    if not os.environ.get(TASK_FILES):
        return  # spares importing the task machinery when there are none
    from plm_bench.tasks.loading import custom_task, task_files

    for path in task_files():
        try:
            task = custom_task(path)
        except Exception as exc:
            result.broken[f"task file {path.resolve()}"] = f"{type(exc).__name__}: {exc}"
            continue
        _add(result, clashes, "task", f"task file:{path}", task)


def _add(result: Catalog, clashes: list[str], kind: str, label: str, item: Any) -> None:
    name = item.name
    if name in result.items[kind]:
        clashes.append(f"{kind} {name!r} is registered by two plugins: {result.providers[(kind, name)]} and "
                       f"{label}; uninstall one of them or rename its item")
        return
    result.items[kind][name] = item
    result.providers[(kind, name)] = label


def get(kind: str, name: str) -> Any:
    """The registered item, or a one-line error listing what exists, the closest name, and the
    broken plugins that might have provided it."""
    cat = catalog()
    items = cat.items[kind]
    if name not in items:
        known = ", ".join(sorted(items)) or "none"
        hint = ""
        if cat.broken:
            hint = (f"; {len(cat.broken)} plugin(s) failed to load and may provide it "
                    f"({', '.join(sorted(cat.broken))}): see `bench list --check`")
        raise BenchError(f"unknown {kind} {name!r}{did_you_mean(name, items)}; known: {known} "
                         f"(see `bench list {kind}`){hint}")
    return items[name]


def default_method() -> Any:
    """The method a run uses when none is named: the one whose spec declares ``default``."""
    return _the_default("method", lambda spec: spec.default, "declares default=True")


def default_head(level: str) -> Any:
    """The head a ``level``-level task gets with ``--head auto``: the one declaring that level default."""
    return _the_default("head", lambda spec: level in spec.default_for, f"declares default_for {level!r}")


def _the_default(kind: str, is_default: Any, what: str) -> Any:
    chosen = [spec for _, spec in sorted(catalog().items[kind].items()) if is_default(spec)]
    if len(chosen) != 1:
        names = ", ".join(spec.name for spec in chosen) or "none"
        raise BenchError(f"exactly one {kind} must be the default, but {len(chosen)} {what} ({names}); "
                         f"name the {kind} explicitly or uninstall the plugin that clashes")
    return chosen[0]


def optional_module(name: str, extra: str) -> ModuleType:
    """Import an optional dependency of a plugin, or say which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BenchError(f"{name} is not importable ({exc}): pip install 'plm-bench[{extra}]'") from None
