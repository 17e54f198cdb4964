"""Built-in launchers: where a grid's runs execute.

``local`` runs in this machine: one run after another in this process, or — with several
GPUs — one run per GPU at once, each in its own process that sees only its GPU (a crash there
fails only that run). ``ray`` and ``slurm`` live in their own modules; their engines are
optional extras imported only when a grid uses them.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from plm_bench import LauncherSpec, atomic_file, failed_record, hookimpl, split_cores
from plm_bench_plugins.ray_launcher import launch_on_ray
from plm_bench_plugins.slurm_launcher import launch_on_slurm

if TYPE_CHECKING:
    from plm_bench import RunConfig

CORES_ENV = "PLM_BENCH_WORKER_CORES"  # the cores a local worker keeps to, set by the launcher


def visible_gpus() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entry of each GPU this process sees (honouring a mask already set)."""
    import torch

    count = torch.cuda.device_count()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (mask.split(",") if mask else [str(i) for i in range(count)])[:count]


def launch_locally(configs: Sequence[RunConfig], execute: Callable[[RunConfig], dict],
                   workers: int | None = None) -> Iterator[dict]:
    """Run ``configs`` on this machine, ``workers`` at a time (default: one per visible GPU).

    With one worker, runs execute in this process. With more, each run gets a fresh process
    pinned round-robin to one GPU and to its worker's slice of this process's CPU cores (so
    workers do not oversubscribe the cores: :mod:`plm_bench.run.threads`), and records come back
    in the order runs finish. Workers die with the driver: stopped early, it terminates them; killed,
    they notice within a second (see :func:`worker_main`).
    """
    gpus = visible_gpus()
    workers = workers or max(len(gpus), 1)
    if workers == 1:
        for config in configs:
            yield execute(config)
        return
    slots: queue.Queue[tuple[str | None, set[int]]] = queue.Queue()
    for i, cores in enumerate(split_cores(workers)):
        slots.put((gpus[i % len(gpus)] if gpus else None, cores))
    live: set[subprocess.Popen] = set()
    with tempfile.TemporaryDirectory(prefix="plm-bench-local-") as folder, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_in_subprocess, execute, config, slots, Path(folder), live) for config in configs]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()  # the driver stopped early: start no further runs
            for process in list(live):
                process.kill()  # ... and end those running (a finished one has journaled its record)


def run_in_subprocess(execute: Callable[[RunConfig], dict], config: RunConfig, slots: queue.Queue,
                      folder: Path, live: set[subprocess.Popen]) -> dict:
    """Run one config in a fresh Python process on a free slot (a GPU, CPU cores); its death fails only this run."""
    gpu, cores = slot = slots.get()
    try:
        job = folder / config.hash
        job.with_suffix(".in").write_bytes(pickle.dumps((execute, config)))
        env = {**os.environ, CORES_ENV: ",".join(map(str, sorted(cores)))}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        with open(job.with_suffix(".err"), "w+") as stderr:
            process = subprocess.Popen([sys.executable, "-m", __name__, str(job), str(os.getpid())], env=env,
                                       stderr=stderr)
            live.add(process)
            try:
                code = process.wait()
            finally:
                live.discard(process)
            if code != 0:
                stderr.seek(0)
                lines = [line for line in stderr.read().splitlines() if line.strip()] or ["no output"]
                return failed_record(config, f"worker process exited with status {code}: {lines[-1]}")
        return json.loads(job.with_suffix(".out").read_text())
    finally:
        slots.put(slot)


def exit_with(driver: int, interval_s: float = 0.5) -> None:
    """End this process as soon as the process ``driver`` is gone (a daemon thread polls it):
    a killed driver must not leave its workers computing results nobody collects."""
    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != driver:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-driver").start()


def worker_main(job: Path, driver: int) -> None:
    """Entry point of a local worker process: keep to its cores, read (execute, config), write the record as JSON."""
    exit_with(driver)
    if os.environ.get(CORES_ENV) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core) for core in os.environ[CORES_ENV].split(",")})
    execute, config = pickle.loads(job.with_suffix(".in").read_bytes())
    record = execute(config)
    with atomic_file(job.with_suffix(".out")) as replacement:  # the driver never reads half a record
        replacement.path.write_text(json.dumps(record))


@hookimpl
def register_launchers(register) -> None:
    register(LauncherSpec("local", launch_locally,
                          "This machine: sequentially, or one run per GPU at once (--workers).",
                          cpu_options={"workers": 1}))
    register(LauncherSpec("ray", launch_on_ray,
                          "Each run a Ray task: an existing cluster (--ray-address) or a local Ray instance.",
                          cpu_options={"gpus_per_run": 0}))
    register(LauncherSpec("slurm", launch_on_slurm, "A SLURM job array through submitit.",
                          cpu_options={"gpus_per_run": 0}))


if __name__ == "__main__":
    worker_main(Path(sys.argv[1]), int(sys.argv[2]))
