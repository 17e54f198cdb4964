"""The plugin contract: hook specs, the declarative specs plugins register, and discovery.

``plugins.get(kind, name)`` and ``plugins.catalog()`` are what the core calls; plugin authors
import the contract from the package top (``from plm_bench import hookimpl, BackboneSpec, ...``).
"""

from plm_bench.plugins.discovery import catalog, default_head, default_method, get, optional_module

__all__ = ["catalog", "default_head", "default_method", "get", "optional_module"]
