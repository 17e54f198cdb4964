"""TOML task definitions becoming tasks: one a plugin ships (:func:`load_task`, part of the plugin
contract) and one a user passes by path (:func:`custom_task`, ``bench run --task ./my_task.toml``).

Both read the format of tasks/*.toml (docs/plugins.md, "Tasks in TOML"). They differ in identity:
a shipped task keeps its declared name, so its files must carry checksums (a changed file is an
error, never a stale result); a user's task is named by the digest of its files instead.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.tasks.formats import FORMATS
from plm_bench.tasks.task import TASK_FILES, Task, custom_task_definition, custom_task_name, declarative_task

DATA = ("data-dir", "beside")


def load_task(path: Path | str, *, data: str = "data-dir") -> Task:
    """The task a TOML definition at ``path`` declares, checked (every error names the file).

    ``data`` says where its files are: ``data-dir`` under ``<--data-dir>/<folder or name>/``,
    where ``bench data fetch`` downloads each source's ``url`` (how the built-in tasks work);
    ``beside`` relative to the TOML file's folder (files shipped inside your package). Either way
    each source names its ``sha256`` (or ``git_blob``/``git_tree``) and is verified when read.
    """
    if data not in DATA:
        raise BenchError(f"load_task({path}): data={data!r}; use one of {', '.join(DATA)}")
    path = Path(path)
    definition = load_toml(path)
    if data == "data-dir":
        return declarative_task(definition, FORMATS, where=str(path))
    return declarative_task(definition, FORMATS, where=str(path), base=path.resolve().parent, verified=True)


def custom_task(path: Path) -> Task:
    """A user's own task file: its data files are relative to the file and need no checksum, its
    name carries their digest (see :func:`plm_bench.tasks.task.custom_task_name`)."""
    path, definition = custom_task_definition(path)
    task = declarative_task(definition, FORMATS, where=str(path), base=path.parent)  # checks the definition
    return replace(task, name=custom_task_name(path, definition))


def task_files() -> list[Path]:
    """The user's task files this process and its workers use (``$PLM_BENCH_TASK_FILES``)."""
    return [Path(f) for f in dict.fromkeys(os.environ.get(TASK_FILES, "").split(os.pathsep)) if f]
