"""Deprecated: the task formats moved into the core (``plm_bench.tasks.formats``) in 0.2, where
every TOML task, built-in, shipped by a plugin or the user's own, is read. This alias goes in 0.3."""

import warnings
from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # the import system's probes (__path__, ...): not a moved name
        raise AttributeError(name)
    warnings.warn(f"plm_bench_plugins.formats.{name} moved to plm_bench.tasks.formats.{name}; a plugin ships a "
                  "TOML task with `from plm_bench import load_task` (docs/plugins.md)", DeprecationWarning,
                  stacklevel=2)
    return getattr(import_module("plm_bench.tasks.formats"), name)
