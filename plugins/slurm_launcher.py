"""The ``slurm`` launcher: a grid becomes one SLURM job array, submitted through submitit.

Each array task unpickles ``execute`` and its config on a compute node and pickles the record
back into the job folder (which must be on a file system the nodes share); the driver polls
the array and stores records as tasks finish. submitit is the optional extra
``plm-bench[slurm]``, imported only when a grid uses it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plm_bench.errors import BenchError
from plm_bench.plugins import optional_module
from plm_bench.results import records

if TYPE_CHECKING:
    from plm_bench.config import RunConfig


def launch_on_slurm(configs: Sequence[RunConfig], execute: Callable[[RunConfig], dict],
                    partition: str | None = None, time: int | None = None, gpus_per_run: int = 1,
                    cpus_per_run: int | None = None, account: str | None = None, mem_gb: float | None = None,
                    folder: str = "bench-slurm-logs/%j", cluster: str = "slurm", poll_seconds: float = 30,
                    **parameters: Any) -> Iterator[dict]:
    """Submit ``configs`` as one job array; yield records in the order tasks finish.

    ``time`` is each task's limit in minutes. ``cluster`` is submitit's executor: ``slurm``,
    or ``local`` to try the same array as local processes. Any other submitit parameter
    (``slurm_qos``, ``slurm_array_parallelism``, ``slurm_constraint``...) passes through.
    """
    submitit = optional_module("submitit", "slurm")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise BenchError("sbatch not found: run the grid on a SLURM login node, or try the job array "
                         "here with --launcher-option cluster=local")
    executor = submitit.AutoExecutor(folder=Path(folder).absolute(), cluster=cluster)
    try:
        executor.update_parameters(
            name="plm-bench", timeout_min=time, gpus_per_node=gpus_per_run, cpus_per_task=cpus_per_run,
            mem_gb=mem_gb, slurm_partition=partition, slurm_account=account, **parameters,
        )
    except (NameError, AssertionError, ValueError) as exc:  # submitit's ways of refusing a parameter
        raise BenchError(f"slurm launcher: {str(exc).splitlines()[0]}") from None
    configs = list(configs)
    if not configs:
        return
    jobs = executor.map_array(execute, configs)
    config_of = {job.job_id: config for job, config in zip(jobs, configs, strict=True)}
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll_seconds):
            try:
                record = job.result()
            except submitit.core.utils.UncompletedJobError as exc:  # timeout, preemption, killed node
                record = records.failed(config_of[job.job_id], f"{cluster} job {job.job_id}: {exc}", {})
            yield record
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)  # the driver stopped early: free the allocation
