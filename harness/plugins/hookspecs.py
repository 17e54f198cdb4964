"""Pluggy hook specifications: one hook per plugin kind.

Each hook receives a ``register`` callback (the simonw/llm pattern), so one plugin module can
register any number of named items. Built-ins use exactly these hooks through the same
``plm_bench`` entry-point group a third-party package would use.
"""

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "plm_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[Any], None]


@hookspec
def register_backbones(register: Register) -> None:
    """Register :class:`plm_bench.plugins.specs.BackboneSpec` objects."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register task objects (:class:`plm_bench.tasks.task.Task` or anything with its interface)."""


@hookspec
def register_heads(register: Register) -> None:
    """Register :class:`plm_bench.plugins.specs.HeadSpec` objects."""


@hookspec
def register_methods(register: Register) -> None:
    """Register :class:`plm_bench.plugins.specs.MethodSpec` objects."""


@hookspec
def register_launchers(register: Register) -> None:
    """Register :class:`plm_bench.plugins.specs.LauncherSpec` objects."""


@hookspec
def register_protocols(register: Register) -> None:
    """Register :class:`plm_bench.plugins.specs.ProtocolSpec` objects (e.g. from TOML with
    :func:`plm_bench.protocols.load_protocol`)."""
