"""`bench run` end to end: onehot and a tiny random ESM2, skip-if-done, offline errors, learning."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.results.store import Store
from plm_bench.run.protocol import RunContext, execute
from plm_bench.tasks.task import Example

QUICK = ["--limit-train", "96", "--limit-eval", "48", "--epochs", "2"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def test_onehot_gb1_runs_and_a_repeat_is_skipped(data_dir, store_path):
    args = ["run", "--backbone", "onehot", "--task", "gb1", "--data-dir", str(data_dir), "--seed", "1",
            "--store", str(store_path), *QUICK]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "test spearman" in first.output and "finished" in first.output
    again = invoke(*args)
    assert again.exit_code == 0
    assert "already done" in again.output
    assert len(Store(store_path).records()) == 1


def test_tiny_esm_runs_frozen_and_full_from_a_local_path(data_dir, store_path, tiny_esm):
    for method in ("frozen", "full"):
        result = invoke("run", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--task", "gb1",
                        "--method", method, "--data-dir", str(data_dir), "--store", str(store_path), *QUICK)
        assert result.exit_code == 0, result.output
    records = Store(store_path).records()
    assert [r["config"]["method"] for r in records] == ["frozen", "full"]
    frozen, full = records
    assert full["parameters"]["trainable"] > frozen["parameters"]["trainable"] > 0
    assert all(np.isfinite(r["metrics"]["test"]["spearman"]) for r in records)


def test_uncached_weights_without_network_fail_fast_in_one_line(tmp_path, data_dir):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", "from plm_bench.cli import main; main()", "run", "--backbone", "esm2-8m",
         "--task", "gb1", "--data-dir", str(data_dir), "--store", str(tmp_path / "s.sqlite")],
        capture_output=True, text=True, env={**env, "COLUMNS": "400"}, timeout=120,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "facebook/esm2_t6_8M_UR50D" in lines[0] and "not in the HF cache" in lines[0]
    assert "--backbone-path" in lines[0]


def test_onehot_gb1_learns_more_than_with_shuffled_labels(data_dir, monkeypatch):
    """Training must learn: real labels beat the same run on permuted training labels."""
    gb1 = plugins.get("task", "gb1")
    splits = gb1.load(data_dir)
    rng = np.random.default_rng(0)

    def shuffled(data_dir):
        labels = rng.permutation([e.label for e in splits["train"]])
        train = [Example(e.id, e.sequence, float(y)) for e, y in zip(splits["train"], labels, strict=True)]
        return {**splits, "train": train}

    monkeypatch.setitem(plugins.catalog().items["task"], "gb1-shuffled", replace(gb1, name="gb1-shuffled",
                                                                                  load=shuffled))
    context = RunContext(data_dir=data_dir, device="cpu")
    config = RunConfig(backbone="onehot", task="gb1", epochs=8).resolved()
    real = execute(config, context)["metrics"]["test"]["spearman"]
    control = execute(replace(config, task="gb1-shuffled"), context)["metrics"]["test"]["spearman"]
    assert real > 0.2
    assert real > control + 0.15, (real, control)
