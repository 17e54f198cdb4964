"""GRID.toml expansion, its one-line errors, and `bench grid` end to end on CPU (local launcher)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.models.embeddings import CACHE_ENV
from plm_bench.plugins.specs import LauncherSpec
from plm_bench.run.grid import load_grid

REPO = Path(__file__).resolve().parent.parent
QUICK = "[settings]\nepochs = 2\nlimit_train = 48\nlimit_eval = 24\n"
ISSUE_TASKS = ["gb1", "disorder"]  # issue 6's acceptance grid: onehot × tasks × {frozen, full} × 2 seeds


@pytest.fixture(autouse=True)
def embedding_cache(tmp_path, monkeypatch):
    """Frozen runs cache embeddings here, not in the user's cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "embedding-cache"))


def write(folder: Path, text: str) -> Path:
    path = folder / "grid.toml"
    path.write_text(text)
    return path


def stored(store: Path) -> dict[str, tuple[int, dict]]:
    """config hash -> (row id, record) of every row in the store."""
    rows = sqlite3.connect(store).execute("SELECT id, record FROM runs").fetchall()
    return {json.loads(text)["config_hash"]: (row_id, json.loads(text)) for row_id, text in rows}


def test_axes_multiply_in_order_with_shared_settings(tmp_path):
    grid = load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\nmethods = ["frozen", "full"]\n'
                                     'seeds = [1, 2]\n' + QUICK))
    assert [(c.method, c.seed) for c in grid.configs] == [("frozen", 1), ("frozen", 2), ("full", 1), ("full", 2)]
    expected = RunConfig(backbone="onehot", task="gb1", method="full", seed=2, epochs=2, limit_train=48,
                         limit_eval=24).resolved()
    assert grid.configs[3] == expected  # so `bench run` with the same options finds the grid's runs done
    assert {c.head for c in grid.configs} == {"mlp-protein"}
    assert grid.configs[0].lr != grid.configs[2].lr  # each method keeps its own default


def test_defaults_dedup_and_integer_lr(tmp_path):
    grid = load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\nheads = ["auto", "mlp-protein"]\n'
                                     '[settings]\nlr = 1\n'))
    # auto resolves to mlp-protein on gb1: one run, with the defaults (frozen, seed 1)
    assert grid.configs == (RunConfig(backbone="onehot", task="gb1", lr=1.0).resolved(),)


def test_heads_that_cannot_serve_a_task_are_skipped_and_named(tmp_path):
    grid = load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\nheads = ["mlp-residue", "auto"]\n'))
    assert [c.head for c in grid.configs] == ["mlp-protein"]
    assert grid.skipped == ("head mlp-residue × task gb1 (protein level)",)
    with pytest.raises(BenchError, match=r"grid.toml: no head in heads serves any task"):
        load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\nheads = ["mlp-residue"]\n'))


def test_method_options_and_backbone_paths_apply_to_their_runs_only(tmp_path, tiny_esm):
    shutil.copytree(tiny_esm, tmp_path / "weights")
    grid = load_grid(write(tmp_path, 'backbones = ["onehot", "esm2-8m"]\ntasks = ["gb1"]\n'
                                     'methods = ["frozen", "lora"]\n[method_options.lora]\nrank = 8\n'
                                     '[backbone_paths]\nesm2-8m = "weights"\n'))
    runs = {(c.backbone, c.method): c for c in grid.configs}
    assert runs[("esm2-8m", "lora")] == RunConfig(backbone="esm2-8m", task="gb1", method="lora",
                                                  backbone_path=str(tmp_path / "weights"),
                                                  method_options={"rank": 8}).resolved()
    assert runs[("esm2-8m", "lora")].method_options["rank"] == 8
    assert ("onehot", "lora") not in runs  # no weights to adapt: skipped at plan time, never a failed record
    assert any("method lora × backbone onehot" in skipped for skipped in grid.skipped)
    assert runs[("esm2-8m", "frozen")].method_options == {"last_k": 1, "layer": -1}  # its defaults


@pytest.mark.parametrize(("text", "message"), [
    ('backbones = ["onehot"]\n', "top level: 'tasks' is a required property"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\nepoch = 2\n',
     r"settings: Additional properties are not allowed \('epoch' was unexpected\)"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\nepochs = 0\n', "settings.epochs: 0 is less than"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\nseeds = 3\n', "seeds: 3 is not of type 'array'"),
    ('backbones = ["onehot", "onehot"]\ntasks = ["gb1"]\n', "backbones: .* has non-unique elements"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\nbackbone = "x"\n', "top level: Additional .*'backbone' was unexpected"),
    ('backbones = ["nope"]\ntasks = ["gb1"]\n', "unknown backbone 'nope'; known: .*esm2-8m"),
    ('backbones = ["onehot"]\ntasks = ["nope"]\n', "unknown task 'nope'"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\nmethods = ["nope"]\n', "unknown method 'nope'"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\n[method_options.full]\nx = 1\n',
     r"\[method_options.full\]: full is not in methods"),
    ('backbones = ["onehot"]\ntasks = ["gb1"]\n[backbone_paths]\nonehot = "missing"\n',
     "backbone_paths.onehot: .*missing is not a directory"),
    ('backbones = ["onehot"\n', "cannot read TOML"),
], ids=["no-tasks", "unknown-setting", "zero-epochs", "seeds-not-list", "duplicate", "unknown-key",
        "unknown-backbone", "unknown-task", "unknown-method", "options-of-absent-method", "missing-path", "toml"])
def test_bad_grid_files_fail_in_one_line_naming_file_and_key(tmp_path, text, message):
    with pytest.raises(BenchError, match="grid.toml: " + message) as error:
        load_grid(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_the_documented_example_is_a_valid_grid():
    grid = load_grid(REPO / "examples" / "grid.toml")
    assert len(grid.configs) == 2 * 2 * 2 * 1 * 3
    result = CliRunner().invoke(main, ["grid", str(REPO / "examples" / "grid.toml"), "--dry-run",
                                       "--store", "/nonexistent/store.sqlite"])
    assert result.exit_code == 0, result.output
    assert "24 runs in" in result.output and "0 already finished, 24 to run on local" in result.output


def test_bench_grid_runs_the_issue_grid_on_cpu_and_a_rerun_runs_nothing(tmp_path, data_dir, store_path):
    grid = write(tmp_path, f'backbones = ["onehot"]\ntasks = {json.dumps(ISSUE_TASKS)}\n'
                           f'methods = ["frozen", "full"]\nseeds = [1, 2]\n{QUICK}')
    cli = ["grid", str(grid), "--store", str(store_path), "--data-dir", str(data_dir), "--device", "cpu"]
    runs = 2 * len(ISSUE_TASKS) * 2

    plan = CliRunner().invoke(main, [*cli, "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert f"{runs} runs in" in plan.output and f"0 already finished, {runs} to run on local" in plan.output
    assert not store_path.exists()  # a dry run creates nothing

    result = CliRunner().invoke(main, cli)
    assert result.exit_code == 0, result.output
    assert f"{runs} finished, 0 failed, 0 already finished" in result.output
    records = stored(store_path)
    assert sorted((r["config"]["task"], r["config"]["method"], r["config"]["seed"]) for _, r in records.values()) \
        == sorted((t, m, s) for t in ISSUE_TASKS for m in ("frozen", "full") for s in (1, 2))
    assert all(r["status"] == "finished" for _, r in records.values())

    again = CliRunner().invoke(main, cli)
    assert again.exit_code == 0 and f"{runs} already finished, 0 to run" in again.output
    assert stored(store_path) == records


def test_a_failed_run_is_recorded_the_grid_goes_on_and_a_rerun_runs_only_it(tmp_path, data_dir, tiny_esm,
                                                                            store_path):
    weights = tmp_path / "weights"
    weights.mkdir()  # empty for now: the esm2-8m runs fail to load their weights
    grid = write(tmp_path, 'backbones = ["esm2-8m", "onehot"]\ntasks = ["gb1"]\nseeds = [1, 2]\n'
                           f'[backbone_paths]\nesm2-8m = "weights"\n{QUICK}')
    cli = ["grid", str(grid), "--store", str(store_path), "--data-dir", str(data_dir), "--device", "cpu"]

    first = CliRunner().invoke(main, cli)
    assert first.exit_code == 1, first.output  # some runs failed
    assert "2 finished, 2 failed, 0 already finished" in first.output
    records = stored(store_path)
    assert {(r["config"]["backbone"], r["config"]["seed"]): r["status"] for _, r in records.values()} == {
        ("esm2-8m", 1): "failed", ("esm2-8m", 2): "failed", ("onehot", 1): "finished", ("onehot", 2): "finished"}
    assert all(str(weights) in r["error"] for _, r in records.values() if r["status"] == "failed")

    shutil.copytree(tiny_esm, weights, dirs_exist_ok=True)  # the user fixes the cause and reruns
    second = CliRunner().invoke(main, cli)
    assert second.exit_code == 0, second.output
    assert "2 already finished, 2 to run on local" in second.output
    again = stored(store_path)
    assert len(again) == 4 and all(r["status"] == "finished" for _, r in again.values())
    for config_hash, (row_id, record) in records.items():
        if record["status"] == "finished":
            assert again[config_hash][0] == row_id  # finished runs were not run again


def test_force_reruns_finished_runs_with_the_same_result(tmp_path, data_dir, store_path):
    grid = write(tmp_path, f'backbones = ["onehot"]\ntasks = ["gb1"]\n{QUICK}')
    cli = ["grid", str(grid), "--store", str(store_path), "--data-dir", str(data_dir), "--device", "cpu"]
    assert CliRunner().invoke(main, cli).exit_code == 0
    [(first_id, first)] = stored(store_path).values()
    forced = CliRunner().invoke(main, [*cli, "--force"])
    assert forced.exit_code == 0 and "1 finished, 0 failed" in forced.output
    [(second_id, second)] = stored(store_path).values()
    assert second_id != first_id and second["metrics"] == first["metrics"]  # same seed, same result


def test_launcher_options_are_checked_before_anything_runs(tmp_path, store_path):
    grid = write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\n')
    result = CliRunner().invoke(main, ["grid", str(grid), "--store", str(store_path), "--partition", "gpu"])
    assert result.exit_code == 2
    assert "launcher local: got an unexpected keyword argument 'partition'" in result.output
    assert not store_path.exists()
    bad = CliRunner().invoke(main, ["grid", str(grid), "--launcher-option", "cluster"])
    assert bad.exit_code == 2 and "write it as KEY=VALUE" in bad.output


@pytest.mark.parametrize(("flags", "expected"), [
    (["--launcher", "slurm", "--partition", "gpu", "--time", "90", "--account", "lab", "--cpus-per-run", "4",
      "--gpus-per-run", "2", "--launcher-option", "slurm_qos=high", "--launcher-option", "mem_gb=32"],
     {"partition": "gpu", "time": 90, "account": "lab", "cpus_per_run": 4, "gpus_per_run": 2,
      "slurm_qos": "high", "mem_gb": 32}),
    (["--launcher", "ray", "--ray-address", "ray://head:10001", "--gpus-per-run", "0.5"],
     {"address": "ray://head:10001", "gpus_per_run": 0.5}),
    (["--launcher", "ray", "--device", "cpu"], {"gpus_per_run": 0}),  # CPU runs claim no GPU
    (["--launcher", "ray", "--device", "cpu", "--gpus-per-run", "1"], {"gpus_per_run": 1}),
    (["--launcher", "local", "--device", "cpu"], {"workers": 1}),
    (["--launcher", "local", "--workers", "3"], {"workers": 3}),
])
def test_flags_reach_the_launcher_as_options(tmp_path, store_path, monkeypatch, flags, expected):
    seen = {}

    def spy(configs, execute, **options):
        seen.update(options)
        return iter(())

    real = plugins.get
    # the spy keeps the real launcher's declared CPU options (what --device cpu applies)
    monkeypatch.setattr(plugins, "get", lambda kind, name: LauncherSpec(name, spy, cpu_options=real(kind, name)
                                                                        .cpu_options) if kind == "launcher"
                        else real(kind, name))
    grid = write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\n')
    CliRunner().invoke(main, ["grid", str(grid), "--store", str(store_path), *flags])
    assert seen == expected
    assert type(seen.get("gpus_per_run", 0)) is type(expected.get("gpus_per_run", 0))  # SLURM counts whole GPUs


def test_parts_of_a_grid_differ_in_their_axes_and_fall_back_to_the_top(tmp_path):
    grid = write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\nepochs = 2\nlr = 0.01\n'
                           '[[part]]\nmethods = ["frozen"]\nseeds = [1, 2, 3]\n'
                           '[[part]]\nmethods = ["full"]\nseeds = [1]\n[part.settings]\nepochs = 3\n'
                           '[[part]]\nmethods = ["frozen"]\nseeds = [3]\n')  # overlaps the first: one run
    plan = load_grid(grid)
    assert [(c.method, c.seed, c.epochs, c.lr) for c in plan.configs] == [
        ("frozen", 1, 2, 0.01), ("frozen", 2, 2, 0.01), ("frozen", 3, 2, 0.01), ("full", 1, 3, 0.01)]


def test_a_part_missing_a_required_axis_is_named(tmp_path):
    grid = write(tmp_path, '[[part]]\nbackbones = ["onehot"]\ntasks = ["gb1"]\n[[part]]\nbackbones = ["onehot"]\n')
    with pytest.raises(BenchError, match="tasks"):
        load_grid(grid)


def test_sweeps_turn_settings_and_method_options_into_axes(tmp_path):
    grid = write(tmp_path, 'backbones = ["esm2-8m"]\ntasks = ["gb1"]\nmethods = ["frozen", "lora"]\n'
                           '[sweep]\nlr = [1e-3, 1e-4]\n[sweep.method_options.lora]\nrank = [4, 8]\n'
                           'targets = [["query", "key"], ["key", "value"]]\n')
    plan = load_grid(grid)
    frozen = [c for c in plan.configs if c.method == "frozen"]
    lora = [c for c in plan.configs if c.method == "lora"]
    assert sorted(c.lr for c in frozen) == [1e-4, 1e-3]
    assert len(lora) == 2 * 2 * 2
    assert {(c.lr, c.method_options["rank"], tuple(c.method_options["targets"])) for c in lora} == {
        (lr, r, t) for lr in (1e-3, 1e-4) for r in (4, 8) for t in (("query", "key"), ("key", "value"))}


def test_leakage_settings_are_grid_settings_and_sweep_axes(tmp_path):
    plan = load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["disorder"]\n[settings]\ndedup = true\n'
                                     '[sweep]\nmax_identity = [0.3, 0.9]\n'))
    assert [(c.dedup, c.max_identity) for c in plan.configs] == [(True, 0.3), (True, 0.9)]
    with pytest.raises(BenchError, match=r"settings.max_identity: 1.5 is greater than the maximum of 1"):
        load_grid(write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\nmax_identity = 1.5\n'))


def test_a_sweep_of_a_method_not_in_the_grid_is_named(tmp_path):
    grid = write(tmp_path, 'backbones = ["onehot"]\ntasks = ["gb1"]\n[sweep.method_options.lora]\nrank = [4, 8]\n')
    with pytest.raises(BenchError, match=r"\[sweep.method_options.lora\]: lora is not in methods"):
        load_grid(grid)
