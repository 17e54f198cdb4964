"""Registers the built-in declarative tasks: those registry.toml names, defined in tasks/*.toml,
through :func:`plm_bench.load_task` as a plugin shipping its own TOML tasks would."""

from __future__ import annotations

import warnings
from typing import Any

from plm_bench import BenchError, hookimpl, load_task, load_toml, shipped_file


@hookimpl
def register_tasks(register) -> None:
    for name, entry in load_toml(shipped_file("plm_bench_registry", "registry.toml"))["tasks"].items():
        task = load_task(shipped_file("plm_bench_tasks", entry["definition"]))
        if task.name != name:
            raise BenchError(f"tasks/{entry['definition']} defines {task.name!r}, "
                             f"but registry.toml lists it as {name!r}")
        register(task)


def __getattr__(name: str) -> Any:
    """``task_from_file`` moved into the core in 0.2 (the core registers the user's task files)."""
    if name == "task_from_file":
        from importlib import import_module

        warnings.warn("plm_bench_plugins.tasks.task_from_file moved to plm_bench.tasks.loading.custom_task",
                      DeprecationWarning, stacklevel=2)
        return import_module("plm_bench.tasks.loading").custom_task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
