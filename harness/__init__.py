"""plm-bench: does fine-tuning this protein language model help on my task, and at what cost?

The core holds the contracts (plugin hook specs, run protocol, results store); every backbone,
task, head, adaptation method and launcher comes from a plugin. The plugin contract is what this
package exports: ``from plm_bench import hookimpl, BackboneSpec, Backbone, Residues, ...``
(docs/plugins.md); the built-in plugins import nothing else (tests/test_contract.py). The
torch-backed names load on first use, so ``bench --help`` stays fast.
"""

from importlib import import_module
from typing import Any

from plm_bench import compat
from plm_bench.errors import BenchError
from plm_bench.plugins.hookspecs import hookimpl
from plm_bench.plugins.specs import (
    BackboneSpec,
    HeadSpec,
    LauncherSpec,
    MethodSpec,
    Option,
    ProtocolRule,
    ProtocolSpec,
)
from plm_bench.results.provenance import package_version

__version__ = package_version() or "0+unknown"  # one owner: the package metadata (pyproject.toml)
# The plugin contract's version (CHANGELOG.md): a minor bump adds to what plugins may use, a major
# one changes or removes something; moved imports keep a deprecated alias (plm_bench.compat).
CONTRACT_VERSION = "1.1"
compat.install()

_LAZY = {  # name -> the module that owns it
    "Backbone": "plm_bench.models.backbone", "Residues": "plm_bench.models.backbone",
    "residue_mask": "plm_bench.models.backbone", "resolve_dtype": "plm_bench.models.backbone",
    "TransformerBackbone": "plm_bench.models.transformer", "ResidueVocabulary": "plm_bench.models.transformer",
    "synthetic_vocab": "plm_bench.models.transformer",
    "from_pretrained": "plm_bench.models.hub", "load_model": "plm_bench.models.hub",
    "AMINO_ACIDS": "plm_bench.alphabet",
    "Task": "plm_bench.tasks.task", "Example": "plm_bench.tasks.task", "Splits": "plm_bench.tasks.task",
    "load_task": "plm_bench.tasks.loading",
    "load_protocol": "plm_bench.plugins.protocols",
    "optional_module": "plm_bench.plugins.discovery",
    "load_toml": "plm_bench.files", "shipped_file": "plm_bench.files", "atomic_file": "plm_bench.files",
    "failed_record": "plm_bench.results.records", "split_cores": "plm_bench.run.threads",
    "RunConfig": "plm_bench.config",
}
__all__ = ["CONTRACT_VERSION", "BackboneSpec", "BenchError", "HeadSpec", "LauncherSpec", "MethodSpec", "Option",
           "ProtocolRule", "ProtocolSpec", "__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'plm_bench' has no attribute {name!r}")
