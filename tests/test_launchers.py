"""The launchers on real engines: a local Ray instance (2 CPUs), submitit's local executor and
local worker processes give the same records as a sequential run; a run that raises or a worker
that dies fails only its own run; rerunning the grid runs only what failed."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

import pytest
import ray
import torch
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.models.embeddings import CACHE_ENV
from plm_bench.results.store import Store
from plm_bench.run.driver import attempt, drive, split_done
from plm_bench.run.protocol import RunContext
from plm_bench_plugins import launchers

TESTS = Path(__file__).resolve().parent
COMPUTED = ("metrics", "test_ci", "checkpoints", "history")  # what a run computes, timings aside
QUICK = {"epochs": 2, "limit_train": 48, "limit_eval": 24}
LAUNCHERS = ["local-2-workers", "ray", "slurm-local"]  # local with one worker is the reference


@pytest.fixture(scope="module", autouse=True)
def worker_environment(tmp_path_factory):
    """Worker processes (Ray's, submitit's, local ones) unpickle ``die_on_seed_3`` by reference,
    and keep frozen embeddings in a cache of this module rather than the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("embedding-cache")))
        yield


@pytest.fixture(scope="module")
def ray_instance(worker_environment) -> Path:
    """One local Ray instance for the module (the ray launcher uses a session already open);
    its workers keep the environment of this moment, so it returns their embedding cache."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield Path(os.environ[CACHE_ENV])
    ray.shutdown()


def launch(name: str, folder: Path, request: pytest.FixtureRequest) -> tuple:
    """(launcher spec, options, the workers' embedding cache) for a test id of LAUNCHERS or "local".

    Except on Ray, whose workers already run, each test gets an empty cache in ``folder``.
    """
    if name == "ray":
        cache = request.getfixturevalue("ray_instance")
    else:
        cache = folder / "embedding-cache"
        request.getfixturevalue("monkeypatch").setenv(CACHE_ENV, str(cache))
    options = {
        "local": {},
        "local-2-workers": {"workers": 2},
        "ray": {},
        "slurm-local": {"cluster": "local", "gpus_per_run": 0, "time": 10, "poll_seconds": 0.5,
                        "folder": str(folder / "submitit" / "%j")},
    }[name]
    return plugins.get("launcher", name.split("-")[0]), options, cache


@pytest.fixture(scope="module")
def context(data_dir) -> RunContext:
    return RunContext(data_dir=data_dir, device="cpu")


@pytest.fixture(scope="module")
def grid() -> list[RunConfig]:
    """A 4-run grid: onehot on GB1, frozen and full, two seeds."""
    return [RunConfig(backbone="onehot", task="gb1", method=method, seed=seed, **QUICK).resolved()
            for method in ("frozen", "full") for seed in (1, 2)]


@pytest.fixture(scope="module")
def sequential(grid, context, tmp_path_factory) -> dict[str, dict]:
    """The grid run one after another in this process: the reference records, by config hash."""
    folder = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder / "embedding-cache"))
        records = drive(grid, plugins.get("launcher", "local"), functools.partial(attempt, context=context),
                        Store(folder / "results.sqlite"))
    assert [r["status"] for r in records] == ["finished"] * 4
    return {r["config_hash"]: r for r in records}


def computed(records) -> dict[str, dict]:
    return {r["config_hash"]: {key: r[key] for key in COMPUTED} for r in records}


DEATH = {"local-2-workers": "worker process exited with status 3", "ray": "WorkerCrashedError",
         "slurm-local": "local job"}  # how each launcher reports a worker that vanished


def die_on_seed_3(config: RunConfig, context: RunContext) -> dict:
    """An ``execute`` whose worker process dies outright on seed 3 (no exception to catch)."""
    if config.seed == 3:
        os._exit(3)
    return attempt(config, context)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_stores_the_records_of_a_sequential_run_and_a_dead_worker_fails_alone(
        name, grid, context, sequential, tmp_path, request):
    """The grid plus a run whose worker dies. The two frozen runs of the grid start at once
    and both write the same embedding cache entries. (Local workers, a fresh process per run,
    take only the frozen half of the grid, to keep the test short.)"""
    runs = grid[:2] if name == "local-2-workers" else grid
    dead = RunConfig(backbone="onehot", task="gb1", seed=3, **QUICK).resolved()
    launcher, options, cache = launch(name, tmp_path, request)
    store = Store(tmp_path / "results.sqlite")
    drive([*runs, dead], launcher, functools.partial(die_on_seed_3, context=context), store, options)
    assert computed(store.records()) == computed(sequential[c.hash] for c in runs)  # identical, not merely close
    [failed] = store.records("failed")
    assert failed["config_hash"] == dead.hash and DEATH[name] in failed["error"]
    assert split_done([*runs, dead], store) == ([dead], runs)  # a rerun retries only the dead one
    assert list(cache.rglob("*.npy")) and not list(cache.rglob("*.tmp"))  # whole entries only


@pytest.mark.parametrize("name", ["local", "ray"])  # attempt() in the worker: the same on any launcher
def test_a_run_that_raises_fails_alone_and_a_rerun_retries_only_it(name, context, tiny_esm, tmp_path, request):
    weights = tmp_path / "weights"
    weights.mkdir()  # no weights yet: loading the backbone raises in the worker
    broken = RunConfig(backbone="esm2-8m", task="gb1", backbone_path=str(weights), **QUICK).resolved()
    configs = [RunConfig(backbone="onehot", task="gb1", seed=s, **QUICK).resolved() for s in (1, 2, 3)] + [broken]
    launcher, options, _ = launch(name, tmp_path, request)
    execute = functools.partial(attempt, context=context)
    store = Store(tmp_path / "results.sqlite")

    drive(configs, launcher, execute, store, options)
    assert len(store.records("finished")) == 3
    [failed] = store.records("failed")
    assert failed["config_hash"] == broken.hash and str(weights) in failed["error"]

    shutil.copytree(tiny_esm, weights, dirs_exist_ok=True)  # fix the cause, rerun the grid
    todo, done = split_done(configs, store)
    assert todo == [broken] and len(done) == 3
    rerun = drive(todo, launcher, execute, store, options)
    assert [(r["config_hash"], r["status"]) for r in rerun] == [(broken.hash, "finished")]
    assert len(store.records("finished")) == 4 and not store.records("failed")


def report_gpus(config: RunConfig) -> dict:
    """An ``execute`` that reports which GPUs its worker process was given."""
    return {"config_hash": config.hash, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_local_workers_default_to_one_per_gpu_each_pinned_to_its_own(monkeypatch):
    monkeypatch.setattr(launchers, "visible_gpus", lambda: ["3", "5"])
    configs = [RunConfig(backbone="onehot", task="gb1", seed=s) for s in (1, 2)]
    assert sorted(r["gpus"] for r in launchers.launch_locally(configs, report_gpus)) == ["3", "5"]


@pytest.mark.parametrize(("mask", "count", "expected"), [
    (None, 2, ["0", "1"]), ("2,7", 2, ["2", "7"]), ("GPU-a1,GPU-b2", 1, ["GPU-a1"]), ("", 0, [])])
def test_visible_gpus_honour_an_existing_mask(monkeypatch, mask, count, expected):
    if mask is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert launchers.visible_gpus() == expected


def test_bench_grid_runs_on_ray(data_dir, ray_instance, tmp_path):
    """The command line end to end on the open Ray session (its flags: tests/test_grid.py)."""
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\n'
                    + "".join(f"{key} = {value}\n" for key, value in QUICK.items()))
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(main, ["grid", str(grid), "--launcher", "ray", "--device", "cpu",
                                       "--store", str(store), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "1 finished, 0 failed" in result.output
    assert len(Store(store).records()) == 1


@pytest.mark.parametrize(("module", "name", "extra"), [("ray", "ray", "ray"), ("submitit", "slurm", "slurm")])
def test_a_missing_engine_is_one_line_naming_its_extra(monkeypatch, module, name, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(BenchError, match=rf"^{module} is not importable .*: pip install 'plm-bench\[{extra}\]'$"):
        next(plugins.get("launcher", name).launch([], None))
