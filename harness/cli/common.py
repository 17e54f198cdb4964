"""What every ``bench`` command shares: the consoles, option parsing and common options.

Messages are user text, so they print literally (``markup=False``): a ``[split]`` in an error or a
label never disappears into rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from plm_bench.errors import BenchError

console = Console()
err_console = Console(stderr=True)


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


device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to run (auto: CUDA when torch sees it).")


def click_type(schema: dict) -> click.ParamType | type:
    """The click type that accepts what a RunConfig field's JSON schema allows."""
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if "enum" in schema:
        return click.Choice(schema["enum"])
    if kind == "integer":
        return click.IntRange(min=schema.get("minimum"))
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        return click.FloatRange(min=low, min_open="exclusiveMinimum" in schema)
    return str


def config_options(only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                   overrides: dict[str, dict] | None = None) -> Callable[[Callable], Callable]:
    """Click options for RunConfig's fields (``only`` these, or all but ``exclude``), derived from
    each field's help and schema; ``overrides`` changes an option's click arguments (e.g. its default)."""
    from plm_bench.config import config_fields, required

    chosen = [f for f in config_fields() if (only is None or f.name in only) and f.name not in exclude]

    def decorate(command: Callable) -> Callable:
        for f in reversed(chosen):
            name = f"--{f.metadata['cli'] or f.name.replace('_', '-')}"
            if f.name == "method_options":
                kwargs: dict = {"multiple": True, "metavar": "KEY=VALUE", "callback": options_callback}
            elif f.name == "backbone_path":
                kwargs = {"type": click.Path(exists=True, file_okay=False)}
            else:
                kwargs = {"type": click_type(f.metadata["schema"]), "required": required(f)}
                if not required(f) and f.default is not None:
                    kwargs.update(default=f.default, show_default=True)
            kwargs = {"help": f.metadata["help"], **kwargs, **(overrides or {}).get(f.name, {})}
            command = click.option(name, f.name, **kwargs)(command)
        return command

    return decorate


def options_callback(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs of a repeatable option as a dict; a malformed pair is a usage error."""
    try:
        return parse_options(pairs)
    except BenchError as exc:
        raise click.BadParameter(str(exc)) from None


def progress_bar() -> Progress:
    """The progress display of long commands: a transient bar that leaves the printed lines."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
