"""Pluggy hook specifications: one hook per plugin kind.

Each hook receives a ``register`` callback (the simonw/llm pattern), so one plugin module can
register any number of named items. Built-ins use exactly these hooks through the same
``plm_bench`` entry-point group a third-party package would use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from plm_bench.plugins.specs import BackboneSpec, HeadSpec, LauncherSpec, MethodSpec, ProtocolSpec
    from plm_bench.tasks.task import Task

PROJECT = "plm_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register :class:`~plm_bench.BackboneSpec` objects."""


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Register :class:`~plm_bench.Task` objects (or anything with its interface), e.g. from TOML
    with :func:`plm_bench.load_task`."""


@hookspec
def register_heads(register: Callable[[HeadSpec], None]) -> None:
    """Register :class:`~plm_bench.HeadSpec` objects."""


@hookspec
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register :class:`~plm_bench.MethodSpec` objects."""


@hookspec
def register_launchers(register: Callable[[LauncherSpec], None]) -> None:
    """Register :class:`~plm_bench.LauncherSpec` objects."""


@hookspec
def register_protocols(register: Callable[[ProtocolSpec], None]) -> None:
    """Register :class:`~plm_bench.ProtocolSpec` objects (e.g. from TOML with
    :func:`plm_bench.load_protocol`)."""
