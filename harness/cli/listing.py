"""``bench list [KIND]``: what installed plugins registered, and plugins that failed to load."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from plm_bench.cli.common import console, err_console, literal


def singular(ctx: click.Context, param: click.Parameter, kind: str | None) -> str | None:
    """A kind as the plugins register it, named singular or plural (``tasks``, as ``lm-eval ls tasks``)."""
    if kind is None:
        return None
    from plm_bench.plugins.discovery import catalog

    kinds = list(catalog().items)
    name = kind.lower()
    name = name if name in kinds else name.removesuffix("s")
    if name not in kinds:
        from plm_bench.plugins.specs import did_you_mean

        raise click.BadParameter(f"{kind!r}: use one of {', '.join(kinds)} (or their plurals)"
                                 f"{did_you_mean(name, kinds)}")
    return name


@click.command("list")
@click.argument("kind", required=False, metavar="[KIND]", callback=singular)
@click.option("--check", is_flag=True, help="Exit with status 1 if any plugin failed to load (to gate a "
              "plugin's CI).")
def list_(kind: str | None, check: bool) -> None:
    """List registered plugins' items of KIND (backbone, task, head, method, launcher, …; plurals work
    too), and plugins that failed to load. ``bench list method`` shows each method's options."""
    from plm_bench.plugins.discovery import catalog

    cat = catalog()
    table = Table("name", "kind", "distribution", "description")
    if kind == "method":
        table.add_column("options (--method-option KEY=VALUE)")
    for k, items in cat.items.items():
        if kind and k != kind:
            continue
        for name, item in sorted(items.items()):
            description = item.description + (f" (extends {item.extends})" if getattr(item, "extends", "") else "")
            row = [literal(name), k, literal(cat.providers[(k, name)].split(":")[0]), literal(description)]
            if kind == "method":
                row.append(literal("\n".join(f"{key}={option.default!r} ({option.accepts()}) {option.help}".rstrip()
                                              for key, option in sorted(item.options.items()))))
            table.add_row(*row)
    console.print(table)
    for label, error in cat.broken.items():
        err_console.print(literal(("broken plugin", "red"), f" {label}: {error}"), soft_wrap=True)
    if check and cat.broken:
        err_console.print(literal(f"{len(cat.broken)} plugin(s) broken: fix or uninstall them"))
        sys.exit(1)
