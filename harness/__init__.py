"""plm-bench: does fine-tuning this protein language model help on my task, and at what cost?

The core holds the contracts (plugin hook specs, run protocol, results store); every backbone,
task, head, adaptation method and launcher comes from a plugin. The plugin contract is what this
package exports: ``from plm_bench import hookimpl, BackboneSpec, Backbone, Residues, ...``
(docs/plugins.md). The torch-backed names load on first use, so ``bench --help`` stays fast.
"""

from importlib import import_module
from typing import Any

from plm_bench import compat
from plm_bench.errors import BenchError
from plm_bench.plugins.hookspecs import hookimpl
from plm_bench.plugins.specs import BackboneSpec, HeadSpec, LauncherSpec, MethodSpec
from plm_bench.results.provenance import package_version

__version__ = package_version() or "0+unknown"  # one owner: the package metadata (pyproject.toml)
# The plugin contract's version (CHANGELOG.md): a minor bump adds to what plugins may use, a major
# one changes or removes something; moved imports keep a deprecated alias (plm_bench.compat).
CONTRACT_VERSION = "1.1"
compat.install()

_LAZY = {
    "Backbone": "plm_bench.models.backbone", "Residues": "plm_bench.models.backbone",
    "residue_mask": "plm_bench.models.backbone", "resolve_dtype": "plm_bench.models.backbone",
    "Task": "plm_bench.tasks.task", "Example": "plm_bench.tasks.task", "Splits": "plm_bench.tasks.task",
    "RunConfig": "plm_bench.config",
}
__all__ = ["CONTRACT_VERSION", "BackboneSpec", "BenchError", "HeadSpec", "LauncherSpec", "MethodSpec", "__version__",
           "hookimpl",
           *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plm_bench' has no attribute {name!r}")
