"""Grids: a GRID.toml expands to run configs for the driver (harness/run/driver.py).

A grid is the unit of scale-out: its runs are independent, so a launcher may execute them
anywhere (this process, one per GPU, Ray tasks, a SLURM job array). Its keys are derived from
:class:`~plm_bench.config.RunConfig`: each axis field is a list (``backbones``, ``tasks``, …),
every setting a key of ``[settings]``, and the two per-name tables ``[method_options.METHOD]``
and ``[backbone_paths]``. A grid whose parts differ in their axes (the study ran 5 seeds of
frozen embeddings but 3 of fine-tuning) lists them as ``[[part]]`` tables: each part is a grid of
its own whose keys fall back to the top level's (its tables, e.g. ``[part.settings]``, add to the
top level's), and the plan is their union in file order.
``[sweep]`` turns settings into axes (``lr = [1e-4, 3e-4]``) and ``[sweep.method_options.METHOD]``
a method's options (``rank = [4, 8]``; ``targets = [["query", "key"], ["key", "value"]]``), so a
sensitivity study is one grid (``bench leaderboard --by`` shows it).

Nothing here imports torch at module level, so `bench --help` stays fast.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from plm_bench import plugins
from plm_bench.config import RunConfig, config_fields, incompatible, required
from plm_bench.errors import BenchError
from plm_bench.files import load_toml

AXES = tuple(f.name for f in config_fields("axis"))  # the order runs are listed in
TABLES = {"method_options": "methods", "backbone_paths": "backbones"}  # per-name tables and their axis


def axis_key(name: str) -> str:
    return f"{name}s"


def grid_schema() -> dict:
    """JSON schema of GRID.toml, derived from RunConfig's fields."""
    axes = {axis_key(f.name): {"type": "array", "items": f.metadata["schema"], "minItems": 1, "uniqueItems": True}
            for f in config_fields("axis")}
    settings = {f.name: f.metadata["schema"] for f in config_fields("setting")}
    keys = {
        **axes,
        "settings": {"type": "object", "additionalProperties": False, "properties": settings},
        "method_options": {"type": "object", "additionalProperties": {"type": "object"}},
        "backbone_paths": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        "sweep": {"type": "object", "additionalProperties": False, "properties": {
            **{name: {"type": "array", "items": schema, "minItems": 1, "uniqueItems": True}
               for name, schema in settings.items()},
            "method_options": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": {"type": "array", "minItems": 1}}},
        }},
    }
    part = {"type": "object", "additionalProperties": False, "properties": keys,
            "required": [axis_key(f.name) for f in config_fields("axis") if required(f)]}
    return {**part, "properties": {**keys, "part": {"type": "array", "minItems": 1}}, "required": []}


def part_schema() -> dict:
    """JSON schema of one part with the top level's keys filled in: a complete grid."""
    schema = grid_schema()
    return {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "part"},
            "required": [axis_key(f.name) for f in config_fields("axis") if required(f)]}


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
    check(spec, grid_schema(), path, "")
    top = {k: v for k, v in spec.items() if k != "part"}
    parts = [{**top, **part, **{k: {**top[k], **v} for k, v in part.items() if isinstance(v, dict) and k in top}}
             for part in spec.get("part", [{}])]  # a part's tables add to the top level's
    configs: dict[str, RunConfig] = {}
    skipped: dict[str, None] = {}
    for number, part in enumerate(parts, 1):
        where = f"part {number}: " if "part" in spec else ""
        check(part, part_schema(), path, where)
        try:
            grid = expand(part, path.parent)
        except BenchError as exc:
            raise BenchError(f"{path}: {where}{exc}") from None
        for config in grid.configs:
            configs.setdefault(config.hash, config)  # parts may overlap: one run each
        skipped.update(dict.fromkeys(grid.skipped))
    return Grid(tuple(configs.values()), tuple(skipped))


def combinations(lists: dict[str, list]) -> list[dict]:
    """Every choice of one value per key (one empty choice when there are no keys)."""
    return [dict(zip(lists, values, strict=True)) for values in itertools.product(*lists.values())]


def check(spec: dict, schema: dict, path: Path, where: str) -> None:
    """One line naming the file, the part and the key, or nothing."""
    try:
        jsonschema.validate(spec, schema)
    except jsonschema.ValidationError as exc:
        key = ".".join(str(p) for p in exc.absolute_path) or "top level"
        raise BenchError(f"{path}: {where}{key}: {exc.message}; fix the file (examples/grid.toml shows every key)"
                         ) from None


def task_name(task: str, folder: Path) -> str:
    """A task named in a grid: a registered name, or the path of a task TOML (relative to the grid
    file's folder) made available as ``bench run --task PATH`` does."""
    if not task.endswith(".toml"):
        return task
    from plm_bench.tasks.task import use_task_file

    return use_task_file(folder / task)


def expand(spec: dict, folder: Path) -> Grid:
    """Multiply the axes of a checked grid ``spec``; relative paths are relative to ``folder``."""
    defaults = {axis_key(f.name): [f.default] for f in config_fields("axis") if not required(f)}
    axes = {**defaults, **{axis_key(a): spec[axis_key(a)] for a in AXES if axis_key(a) in spec}}
    for table, axis in TABLES.items():
        for name in spec.get(table, {}):
            if name not in axes[axis]:
                raise BenchError(f"[{table}.{name}]: {name} is not in {axis}; add it there or drop the table")
    paths = {name: (folder / p).resolve() for name, p in spec.get("backbone_paths", {}).items()}
    for name, p in paths.items():
        if not p.is_dir():
            raise BenchError(f"backbone_paths.{name}: {p} is not a directory; point it at the saved weights")
    for name in axes["backbones"]:
        plugins.get("backbone", name)
    axes["tasks"] = [task_name(task, folder) for task in axes["tasks"]]
    sweep = dict(spec.get("sweep", {}))
    option_sweeps = sweep.pop("method_options", {})
    for method in option_sweeps:
        if method not in axes["methods"]:
            raise BenchError(f"[sweep.method_options.{method}]: {method} is not in methods; add it there or drop it")
    configs: dict[str, RunConfig] = {}
    skipped: dict[str, None] = {}
    for values, swept in itertools.product(itertools.product(*(axes[axis_key(a)] for a in AXES)),
                                           combinations(sweep)):
        axis = dict(zip(AXES, values, strict=True))
        method = plugins.default_method() if axis["method"] == "auto" else plugins.get("method", axis["method"])
        reason = incompatible(plugins.get("backbone", axis["backbone"]), method)
        if reason:
            skipped[f"method {method.name} × backbone {axis['backbone']} ({reason})"] = None
            continue
        for options in combinations(option_sweeps.get(axis["method"], {})):
            config = RunConfig(
                **axis, backbone_path=str(paths[axis["backbone"]]) if axis["backbone"] in paths else None,
                method_options={**spec.get("method_options", {}).get(axis["method"], {}), **options},
                **{**spec.get("settings", {}), **swept},
            ).resolved()
            task = axis["task"]
            level = plugins.get("task", task).level
            if level not in plugins.get("head", config.head).levels:
                skipped[f"head {config.head} × task {task} ({level} level)"] = None
                continue
            configs.setdefault(config.hash, config)  # e.g. heads "auto" and "mlp-protein" on gb1 are one run
    if not configs and all(reason.startswith("head ") for reason in skipped):
        raise BenchError("no head in heads serves any task in tasks; use heads = [\"auto\"]")
    if not configs:
        raise BenchError(f"nothing to run: every combination is skipped ({'; '.join(skipped)}); "
                         "change the grid's axes")
    return Grid(tuple(configs.values()), tuple(skipped))
