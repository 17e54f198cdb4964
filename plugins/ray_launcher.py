"""The ``ray`` launcher: each run is one Ray task with its own CPU/GPU request.

Ray schedules the tasks over the cluster (or over a local Ray instance), sets
CUDA_VISIBLE_DEVICES for each, and streams results back as they finish; the driver stores
them. Ray itself is the optional extra ``plm-bench[ray]``, imported only when a grid uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from plm_bench import BenchError, failed_record, optional_module

if TYPE_CHECKING:
    from plm_bench import RunConfig


def run_one(execute: Callable[[RunConfig], dict], config: RunConfig) -> dict:
    """The body of each Ray task (module level, so workers import it rather than unpickle code)."""
    return execute(config)


def launch_on_ray(configs: Sequence[RunConfig], execute: Callable[[RunConfig], dict], address: str | None = None,
                  cpus: int | None = None, cpus_per_run: float = 1, gpus_per_run: float | None = None,
                  runtime_env: dict | None = None) -> Iterator[dict]:
    """Run each config as a Ray task; yield records in the order runs finish.

    ``address``: an existing cluster (``ray://host:10001``, ``auto``); without it, Ray's own
    rules apply (``RAY_ADDRESS``, else a new local instance with ``cpus`` CPUs). A Ray session
    already open in this process is used as it is. ``gpus_per_run`` defaults to one GPU per
    run if the cluster has GPUs. ``runtime_env`` goes to ``ray.init`` (e.g. to pip-install
    plm-bench on the workers of a remote cluster).
    """
    ray = optional_module("ray", "ray")
    if address and cpus:
        raise BenchError("the ray launcher sizes only a local Ray instance (cpus); drop it with --ray-address")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env)
    pending: dict = {}
    try:
        if gpus_per_run is None:
            gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) else 0
        # No retries: a crashed run is recorded failed at once, and rerunning the grid retries
        # it (Ray's default would repeat a deterministic crash three times).
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_one)
        shipped = ray.put(execute)
        pending = {task.remote(shipped, config): config for config in configs}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            config = pending.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc  # a RayTaskError wraps the worker's exception
                record = failed_record(config, f"{type(cause).__name__} on a Ray worker: {cause}")
            yield record
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)  # the driver stopped early: free the cluster
        if started:
            ray.shutdown()
