"""Registers the declarative tasks: those registry.toml names (definitions in tasks/) and the
user's own TOML files listed in ``$PLM_BENCH_TASK_FILES`` (see :func:`plm_bench.tasks.task.use_task_file`)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from plm_bench import hookimpl
from plm_bench.errors import BenchError
from plm_bench.files import load_toml, registry, task_definition_path
from plm_bench.tasks.task import TASK_FILES, Task, custom_task_definition, custom_task_name, declarative_task
from plm_bench_plugins.formats import FORMATS


@hookimpl
def register_tasks(register) -> None:
    for name, entry in registry()["tasks"].items():
        path = task_definition_path(entry["definition"])
        definition = load_toml(path)
        if definition.get("name") != name:
            raise BenchError(f"tasks/{entry['definition']} defines {definition.get('name')!r}, "
                             f"but registry.toml lists it as {name!r}")
        register(declarative_task(definition, FORMATS, where=f"tasks/{entry['definition']}"))
    for path in filter(None, os.environ.get(TASK_FILES, "").split(os.pathsep)):
        register(task_from_file(Path(path)))


def task_from_file(path: Path) -> Task:
    """A custom task from the user's TOML file; its data files are relative to the file, its name
    carries their digest (see :func:`plm_bench.tasks.task.custom_task_name`)."""
    path, definition = custom_task_definition(path)
    task = declarative_task(definition, FORMATS, where=str(path), base=path.parent)  # checks the definition
    return replace(task, name=custom_task_name(path, definition))
