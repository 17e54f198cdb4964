"""plm-bench: does fine-tuning this protein language model help on my task, and at what cost?

The core holds the contracts (plugin hook specs, run protocol, results store); every backbone,
task, head, adaptation method and launcher comes from a plugin.
"""

from plm_bench.plugins.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
