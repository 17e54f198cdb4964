"""Grids: a GRID.toml expands to run configs, and a driver runs them through a launcher.

A grid is the unit of scale-out: its runs are independent, so a launcher may execute them
anywhere (this process, one per GPU, Ray tasks, a SLURM job array). Records always flow back
to this driver, and only the driver writes the store: SQLite does not survive concurrent
writers on the network file systems that clusters share.

Nothing here imports torch at module level, so `bench --help` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import jsonschema

from plm_bench import plugins
from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.plugins.specs import LauncherSpec
from plm_bench.results.store import Store, failed_record

if TYPE_CHECKING:
    from plm_bench.run.protocol import RunConfig

# The axes a grid multiplies, in the order runs are listed, and their defaults.
AXES = ("backbones", "tasks", "methods", "heads", "seeds")
DEFAULT_AXES = {"methods": ["frozen"], "heads": ["auto"], "seeds": [1]}

_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True}
_COUNT = {"type": "integer", "minimum": 1}
# Types of the RunConfig fields a grid sets for all its runs under [settings]; a field missing
# here is still accepted (RunConfig grows), only unchecked.
SETTING_TYPES = {
    "epochs": _COUNT,
    "lr": {"type": "number", "exclusiveMinimum": 0},
    "batch_size": _COUNT,
    "dtype": {"enum": ["auto", "fp32", "bf16", "fp16"]},
    "init": {"enum": ["pretrained", "random"]},
    "long_policy": {"enum": ["error", "chunk"]},
    "val_per_epoch": _COUNT,
    "patience": _COUNT,
    "min_delta": {"type": "number", "minimum": 0},
    "checkpoint": {"enum": ["early-stop", "best-of-N"]},
    "limit_train": _COUNT,
    "limit_eval": _COUNT,
}
# RunConfig fields a grid sets elsewhere than [settings]
NOT_SETTINGS = {"backbone", "task", "method", "head", "seed", "backbone_path", "method_options"}


def grid_schema() -> dict:
    """JSON schema of GRID.toml; [settings] takes every RunConfig field the axes do not set."""
    from plm_bench.run.protocol import RunConfig

    settings = {f.name: SETTING_TYPES.get(f.name, {}) for f in fields(RunConfig) if f.name not in NOT_SETTINGS}
    return {
        "type": "object",
        "required": ["backbones", "tasks"],
        "additionalProperties": False,
        "properties": {
            "backbones": _NAMES,
            "tasks": _NAMES,
            "methods": _NAMES,
            "heads": _NAMES,
            "seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "uniqueItems": True},
            "settings": {"type": "object", "additionalProperties": False, "properties": settings},
            "method_options": {"type": "object", "additionalProperties": {"type": "object"}},
            "backbone_paths": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        },
    }


@dataclass(frozen=True)
class Grid:
    """The distinct runs of one GRID.toml in file order, and the head × task pairs it skips
    because the head cannot serve the task's level (a grid may mix protein and residue tasks)."""

    configs: tuple[RunConfig, ...]
    skipped: tuple[str, ...] = ()


def load_grid(path: Path) -> Grid:
    """Read and check GRID.toml; every error names the file and the offending key."""
    path = Path(path)
    spec = load_toml(path)
    try:
        jsonschema.validate(spec, grid_schema())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "top level"
        raise BenchError(f"{path}: {where}: {exc.message}; fix the file (examples/grid.toml shows every key)") from None
    try:
        return expand(spec, path.parent)
    except BenchError as exc:
        raise BenchError(f"{path}: {exc}") from None


def expand(spec: dict, folder: Path) -> Grid:
    """Multiply the axes of a checked grid ``spec``; relative paths are relative to ``folder``."""
    from plm_bench.run.protocol import RunConfig

    axes = {**DEFAULT_AXES, **{axis: spec[axis] for axis in AXES if axis in spec}}
    for table, axis in (("method_options", "methods"), ("backbone_paths", "backbones")):
        for name in spec.get(table, {}):
            if name not in axes[axis]:
                raise BenchError(f"[{table}.{name}]: {name} is not in {axis}; add it there or drop the table")
    paths = {name: (folder / p).resolve() for name, p in spec.get("backbone_paths", {}).items()}
    for name, p in paths.items():
        if not p.is_dir():
            raise BenchError(f"backbone_paths.{name}: {p} is not a directory; point it at the saved weights")
    for name in axes["backbones"]:
        plugins.get("backbone", name)
    settings = dict(spec.get("settings", {}))
    if "lr" in settings:
        settings["lr"] = float(settings["lr"])  # lr = 1 and lr = 1.0 are one run (and one hash)
    configs: dict[str, RunConfig] = {}
    skipped: dict[str, None] = {}
    for backbone, task, method, head, seed in itertools.product(*(axes[axis] for axis in AXES)):
        config = RunConfig(
            backbone=backbone, task=task, method=method, head=head, seed=seed,
            backbone_path=str(paths[backbone]) if backbone in paths else None,
            method_options=spec.get("method_options", {}).get(method, {}), **settings,
        ).resolved()
        level = plugins.get("task", task).level
        if level not in plugins.get("head", config.head).levels:
            skipped[f"head {config.head} × task {task} ({level} level)"] = None
            continue
        configs.setdefault(config.hash, config)  # e.g. heads "auto" and "mlp-protein" on gb1 are one run
    if not configs:
        raise BenchError("no head in heads serves any task in tasks; use heads = [\"auto\"]")
    return Grid(tuple(configs.values()), tuple(skipped))


def split_done(configs: Sequence[RunConfig], store: Store | None, force: bool = False
               ) -> tuple[list[RunConfig], list[RunConfig]]:
    """(to run, already finished). Failed runs are run again; ``force`` reruns everything."""
    if force or store is None:
        return list(configs), []
    done = [c for c in configs if store.finished(c.hash)]
    hashes = {c.hash for c in done}
    return [c for c in configs if c.hash not in hashes], done


def check_options(launcher: LauncherSpec, options: dict) -> None:
    """Fail in one line, before anything runs, on an option the launcher does not take."""
    try:
        inspect.signature(launcher.launch).bind([], None, **options)
    except TypeError as exc:
        raise BenchError(f"launcher {launcher.name}: {exc}; drop that option or pick another --launcher") from None


def drive(configs: Sequence[RunConfig], launcher: LauncherSpec, execute: Callable[[RunConfig], dict],
          store: Store, options: dict | None = None,
          on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Launch ``configs`` and store each record as it arrives; return the stored records.

    A record the store refuses (say, a NaN metric) is stored as a failed run instead, so one
    bad run never stops a grid and a rerun retries it.
    """
    options = options or {}
    check_options(launcher, options)
    expected = {c.hash: c for c in configs}
    stored: list[dict] = []
    stream = launcher.launch(list(configs), execute, **options)
    try:
        for record in stream:
            config = expected.pop(record.get("config_hash"), None)
            if config is None:
                raise BenchError(f"launcher {launcher.name} returned a record for a run it was not given "
                                 f"({record.get('config_hash')}); fix the launcher plugin")
            try:
                run_id = store.add(record)
            except BenchError as exc:
                record = failed_record(config, str(exc), {})  # no worker environment here
                run_id = store.add(record)
            stored.append({**record, "run_id": run_id})
            if on_record:
                on_record(stored[-1])
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()  # a launcher cancels its outstanding work when the driver stops early
    if expected:
        raise BenchError(f"launcher {launcher.name} returned no record for {len(expected)} runs; "
                         "rerun the grid to retry them")
    return stored


def optional_module(name: str, extra: str) -> ModuleType:
    """Import an optional dependency of a launcher, or say which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BenchError(f"{name} is not importable ({exc}): pip install 'plm-bench[{extra}]'") from None
