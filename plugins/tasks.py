"""Registers the declarative tasks that registry.toml names (definitions in tasks/)."""

from __future__ import annotations

from plm_bench import hookimpl
from plm_bench.errors import BenchError
from plm_bench.resources import load_toml, registry, task_definition_path
from plm_bench.task import declarative_task
from plm_bench_plugins.formats import FORMATS


@hookimpl
def register_tasks(register) -> None:
    for name, entry in registry()["tasks"].items():
        definition = load_toml(task_definition_path(entry["definition"]))
        if definition.get("name") != name:
            raise BenchError(f"tasks/{entry['definition']} defines {definition.get('name')!r}, "
                             f"but registry.toml lists it as {name!r}")
        register(declarative_task(definition, FORMATS[definition["format"]]))
