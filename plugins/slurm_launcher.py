"""The ``slurm`` launcher: a grid becomes one SLURM job array, submitted through submitit.

Each array task unpickles ``execute`` and its config on a compute node and pickles the record
back into the job folder (which must be on a file system the nodes share); the driver polls
the array and stores records as tasks finish. submitit is the optional extra
``plm-bench[slurm]``, imported only when a grid uses it.

A task that SLURM preempts or that reaches its time limit is requeued (submitit signals it
shortly before and calls :meth:`Requeueable.checkpoint`): the requeued task runs the same config
again, and since the run saved its training state beside the store after each validation
(:mod:`plm_bench.run.resume`), it goes on from there. A task that keeps running out of time is
requeued at most ``requeues`` times (``--launcher-option requeues=N``; submitit's default, 3).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plm_bench import BenchError, failed_record, optional_module

if TYPE_CHECKING:
    from plm_bench import RunConfig


class Requeueable:
    """``execute`` as submitit requeues it: a task preempted or out of time is resubmitted with
    the same config (submitit calls ``checkpoint`` with the task's arguments when it signals the
    task). What ``submitit.helpers.Checkpointable`` gives its subclasses, duck-typed as submitit
    checks it, so that this module still imports submitit only when a grid uses it."""

    def __init__(self, execute: Callable[[RunConfig], dict]) -> None:
        self.execute = execute

    def __call__(self, config: RunConfig) -> dict:
        return self.execute(config)

    def checkpoint(self, config: RunConfig) -> Any:
        """The same call again (a ``DelayedSubmission``): the run's training state is on disk
        already, so nothing of this process goes with it."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config)


def launch_on_slurm(configs: Sequence[RunConfig], execute: Callable[[RunConfig], dict],
                    partition: str | None = None, time: int | None = None, gpus_per_run: int = 1,
                    cpus_per_run: int | None = None, account: str | None = None, mem_gb: float | None = None,
                    folder: str = "bench-slurm-logs/%j", cluster: str = "slurm", poll_seconds: float = 30,
                    requeues: int = 3, **parameters: Any) -> Iterator[dict]:
    """Submit ``configs`` as one job array; yield records in the order tasks finish.

    ``time`` is each task's limit in minutes. ``cluster`` is submitit's executor: ``slurm``,
    or ``local`` to try the same array as local processes. ``requeues``: how many times a task
    that reaches its time limit is requeued to resume (see above). Any other submitit parameter
    (``slurm_qos``, ``slurm_array_parallelism``, ``slurm_constraint``...) passes through.
    """
    submitit = optional_module("submitit", "slurm")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise BenchError("sbatch not found: run the grid on a SLURM login node, or try the job array "
                         "here with --launcher-option cluster=local")
    executor = submitit.AutoExecutor(folder=Path(folder).absolute(), cluster=cluster,  # each takes its own
                                     slurm_max_num_timeout=requeues, local_max_num_timeout=requeues)
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
    jobs = executor.map_array(Requeueable(execute), configs)
    config_of = {job.job_id: config for job, config in zip(jobs, configs, strict=True)}
    try:
        for job in submitit.helpers.as_completed(jobs, poll_frequency=poll_seconds):
            try:
                record = job.result()
            except submitit.core.utils.UncompletedJobError as exc:  # out of requeues, a killed node
                record = failed_record(config_of[job.job_id], f"{cluster} job {job.job_id}: {exc}")
            yield record
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)  # the driver stopped early: free the allocation
