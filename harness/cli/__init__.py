"""The ``bench`` command line, wired top-down: one module per command, attached here.

Imports of torch and the plugins happen inside the commands, so ``bench --help`` stays fast.
Every :class:`BenchError` is printed as one line, with exit status 2 — no traceback.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from plm_bench.cli import (
    data,
    embed,
    grid,
    leaderboard,
    listing,
    models,
    pilot,
    predict,
    profile,
    reference,
    report,
    run,
    runs,
    status,
)
from plm_bench.cli.common import err_console, literal
from plm_bench.errors import BenchError


class BenchGroup(click.Group):
    """Turns user-fixable errors into one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            # SIGTERM (timeout, SLURM) unwinds like Ctrl-C, so temporary files are removed on the way out
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            err_console.print(literal((f"error: {exc}", "bold red")), soft_wrap=True)
            sys.exit(2)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)  # a host process (a test) keeps its own handling


@click.group(cls=BenchGroup)
@click.version_option(package_name="plm-bench")
def main() -> None:
    """plm-bench: does fine-tuning this protein language model help, and at what cost?"""


for command in (listing.list_, run.run, grid.grid, status.status, leaderboard.leaderboard, report.report, runs.runs,
                runs.show, predict.predict, embed.embed, profile.profile, data.data, models.models,
                 reference.reference, pilot.pilot):
    main.add_command(command)
