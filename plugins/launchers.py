"""Built-in launcher: runs execute one after another in this process."""

from __future__ import annotations

from plm_bench import hookimpl
from plm_bench.specs import LauncherSpec


def launch_locally(configs, execute):
    for config in configs:
        yield execute(config)


@hookimpl
def register_launchers(register) -> None:
    register(LauncherSpec("local", launch_locally, "Sequentially, in this process."))
