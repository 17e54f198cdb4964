"""The ``bench`` command line, wired top-down: one module per command, attached here.

Imports of torch and the plugins happen inside the commands, so ``bench --help`` stays fast.
Every :class:`BenchError` is printed as one line, with exit status 2 — no traceback.
"""

from __future__ import annotations

import sys

import click

from plm_bench.cli import data, embed, grid, leaderboard, listing, models, predict, profile, report, run, runs
from plm_bench.cli.common import err_console
from plm_bench.errors import BenchError


class BenchGroup(click.Group):
    """Turns user-fixable errors into one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            err_console.print(f"error: {exc}", style="bold red", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=BenchGroup)
@click.version_option(package_name="plm-bench")
def main() -> None:
    """plm-bench: does fine-tuning this protein language model help, and at what cost?"""


for command in (listing.list_, run.run, grid.grid, leaderboard.leaderboard, report.report, runs.runs, runs.show,
                predict.predict, embed.embed, profile.profile, data.data, models.models):
    main.add_command(command)
