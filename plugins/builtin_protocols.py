"""Registers the built-in protocols, declarative TOML files in ``plugins/protocols/``.

``harness`` is plm-bench's own uniform protocol (the default); ``study`` is Schmirler et al.
2024's, each value citing the study's file it comes from.
"""

from __future__ import annotations

from plm_bench import hookimpl, load_protocol, shipped_file

BUILT_IN = ("harness", "study")


@hookimpl
def register_protocols(register) -> None:
    for name in BUILT_IN:
        register(load_protocol(shipped_file("plm_bench_plugins", f"protocols/{name}.toml")))
