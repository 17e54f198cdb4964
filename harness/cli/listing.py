"""``bench list [KIND]``: what installed plugins registered, and plugins that failed to load."""

from __future__ import annotations

import click
from rich.table import Table

from plm_bench.cli.common import console, err_console
from plm_bench.plugins.specs import KINDS


@click.command("list")
@click.argument("kind", required=False,
                type=click.Choice(KINDS))
def list_(kind: str | None) -> None:
    """List registered plugins' items (and plugins that failed to load)."""
    from plm_bench.plugins.discovery import catalog

    cat = catalog()
    table = Table("name", "kind", "distribution", "description")
    for k, items in cat.items.items():
        if kind and k != kind:
            continue
        for name, item in sorted(items.items()):
            table.add_row(name, k, cat.providers[(k, name)].split(":")[0], item.description)
    console.print(table)
    for label, error in cat.broken.items():
        err_console.print(f"[red]broken plugin[/] {label}: {error}", highlight=False)
