"""Import paths that moved, kept working with a deprecation warning naming the new place.

A published plugin must not break on upgrade: when a module moves, its old dotted path goes in
:data:`MOVED` (old -> new) and keeps importing, for at least one minor version after the move
(CHANGELOG.md says when each goes). Plugins should import from the package top (``from plm_bench
import ...``, docs/plugins.md), which never moves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

# Old path -> new path. The modules of plm-bench's first layout (moved before 0.1.0 without an
# alias; added in 0.2.0, to be kept at least until 0.3.0).
MOVED = {
    "plm_bench.specs": "plm_bench.plugins.specs",
    "plm_bench.hookspecs": "plm_bench.plugins.hookspecs",
    "plm_bench.backbone": "plm_bench.models.backbone",
    "plm_bench.embeddings": "plm_bench.models.embeddings",
    "plm_bench.hub": "plm_bench.models.hub",
    "plm_bench.task": "plm_bench.tasks.task",
    "plm_bench.metrics": "plm_bench.tasks.metrics",
    "plm_bench.fasta": "plm_bench.tasks.fasta",
    "plm_bench.data": "plm_bench.tasks.sources",
    "plm_bench.resources": "plm_bench.files",
    "plm_bench.statistics": "plm_bench.results.intervals",
    "plm_bench.store": "plm_bench.results.store",
    "plm_bench.leaderboard": "plm_bench.results.leaderboard",
    "plm_bench.artifacts": "plm_bench.results.artifacts",
    "plm_bench.protocol": "plm_bench.run.protocol",
    "plm_bench.training": "plm_bench.run.training",
    "plm_bench.batching": "plm_bench.run.batching",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and makes it a module that forwards to the new one."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a fresh module; exec_module points it at the new one

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}: import from there, or better from plm_bench itself "
                      "(the published plugin contract); the old path goes in a later minor version",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__getattr__ = lambda name: getattr(target, name)  # type: ignore[method-assign]
        module.__all__ = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
