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

# Names, paths, settings and errors are user text, printed as written: a `[red]` or `[/]` in them is
# never read as markup, in tables as in lines (colours come as Text styles, never as markup).
console = Console(markup=False)
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


accept_changed_option = click.option(
    "--accept-changed", is_flag=True,
    help="Count finished runs as done even where the code that produced them has changed since (plm-bench's "
         "result version or a serving plugin's version; without it such runs stop the command, naming the change).")

log_json_option = click.option(
    "--log-json", type=click.Path(dir_okay=False, path_type=Path),
    help="Also append every run event (start, validations, early stop, end) to FILE as JSON lines; "
         "each run's events go to <store>.events/ in any case.")

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


def click_type(schema: dict) -> click.ParamType | type:
    """The click type that accepts what a RunConfig field's JSON schema allows."""
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if "enum" in schema:
        return click.Choice([value for value in schema["enum"] if value is not None])
    if kind == "boolean":
        return click.BOOL
    if kind == "integer":
        return click.IntRange(min=schema["minimum"]) if "minimum" in schema else int
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        high = schema.get("exclusiveMaximum", schema.get("maximum"))
        return click.FloatRange(min=low, min_open="exclusiveMinimum" in schema, max=high,
                                max_open="exclusiveMaximum" in schema)
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
                kwargs: dict = {"multiple": True, "metavar": "KEY=VALUE [KEY=VALUE ...]", "callback": options_callback,
                                "cls": PairsOption}
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


class PairsOption(click.Option):
    """A repeatable option that also takes several ``KEY=VALUE`` after one flag
    (``--method-option rank=8 alpha=2``): the words after it that hold ``=`` and are not options."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            take = option.process

            def process(value: str, state: Any, take: Callable = take) -> None:
                take(value, state)
                while state.rargs and "=" in state.rargs[0] and not state.rargs[0].startswith("-"):
                    take(state.rargs.pop(0), state)

            option.process = process


def options_callback(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs of a repeatable option as a dict; a malformed pair is a usage error."""
    try:
        return parse_options(pairs)
    except BenchError as exc:
        raise click.BadParameter(str(exc)) from None

