"""What every ``bench`` command shares: the consoles, option parsing and common options.

Messages are user text, so they print literally (``markup=False``): a ``[split]`` in an error or a
label never disappears into rich markup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from plm_bench.errors import BenchError

console = Console()  # tables keep rich markup for their own colours; user text goes in as Text
err_console = Console(stderr=True, markup=False, highlight=False)


def literal(*parts: str | tuple[str, str]) -> Text:
    """Text printed exactly as written (``(text, style)`` pairs coloured): a ``[split]`` or a
    ``[/x]`` in a name, path or error is never read as markup."""
    return Text.assemble(*parts)


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; values parse as JSON where they can (numbers, lists, booleans)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BenchError(f"--method-option {pair!r}: write it as KEY=VALUE, e.g. rank=8")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def store_option(help: str = "Results store (default $PLM_BENCH_STORE or ./bench-results.sqlite).") -> click.Option:
    return click.option("--store", type=click.Path(dir_okay=False, path_type=Path), help=help)


def data_dir_option(help: str = "Task data folder laid out <task>/<file> (default $PLM_BENCH_DATA).") -> click.Option:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help=help)


def allow_unverified_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--allow-unverified``: use task files that have no checksum (set for this process and its workers)."""
    def allow(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        from plm_bench.tasks.sources import ALLOW_UNVERIFIED

        if value:
            os.environ[ALLOW_UNVERIFIED] = "1"
        return value

    return click.option("--allow-unverified", is_flag=True, expose_value=False, callback=allow,
                        help="Accept task files whose definition gives no checksum (runs list them in their "
                             "record).")(command)


device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to run (auto: CUDA when torch sees it).")
