"""``bench models fetch NAME``: pre-stage a backbone's weights in the HF cache for offline runs.

Attached to the ``bench`` group by the last line of ``plm_bench.cli``; the hub client is
imported inside the command, so ``bench --help`` stays fast.
"""

from __future__ import annotations

import click

from plm_bench.cli.common import console, literal
from plm_bench.errors import BenchError


@click.group()
def models() -> None:
    """Backbone weights: fetch them on a networked machine, run anywhere from the HF cache."""


@models.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def fetch(names: tuple[str, ...]) -> None:
    """Download the weights of the named backbones into the HF cache ($HF_HOME)."""
    from plm_bench import plugins
    from plm_bench.models.hub import fetch as fetch_weights

    for name in names:
        spec = plugins.get("backbone", name)
        if spec.hub_id is None:
            raise BenchError(f"backbone {name} has no hub_id, so there is nothing to fetch: its weights come with "
                             "its package or plugin, or it has none (see `bench list backbone`)")
        console.print(literal(f"{name}: {spec.hub_id} -> {fetch_weights(spec.hub_id)}"), soft_wrap=True)
