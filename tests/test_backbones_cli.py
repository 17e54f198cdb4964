"""The backbone options of `bench run` and `bench models fetch`, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.store import Store

QUICK = ["--limit-train", "32", "--limit-eval", "16", "--epochs", "1"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def test_fetch_without_network_fails_fast_in_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "400"}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", "from plm_bench.cli import main; main()", "models", "fetch",
                             "esm2-8m"], capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot fetch facebook/esm2_t6_8M_UR50D" in lines[0] and "networked machine" in lines[0]


def test_fetch_names_backbones_without_hub_weights():
    result = invoke("models", "fetch", "antiberty")
    assert result.exit_code == 2
    assert "antiberty has no hub_id, so there is nothing to fetch" in result.output


def test_random_init_runs_offline_and_is_recorded(data_dir, store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    result = invoke("run", "--backbone", "esm2-8m", "--init", "random", "--task", "gb1", "--data-dir", str(data_dir),
                    "--store", str(store_path), "--limit-train", "8", "--limit-eval", "8", "--epochs", "1")
    assert result.exit_code == 0, result.output
    (record,) = Store(store_path).records()
    assert record["status"] == "finished" and record["config"]["init"] == "random"
    assert record["parameters"]["total"] > 7_000_000  # the full ESM2-8M architecture, not a stub


def test_fp16_on_a_t5_backbone_is_refused_in_one_line(data_dir, store_path, tiny_prott5):
    result = invoke("run", "--backbone", "prott5", "--backbone-path", str(tiny_prott5), "--dtype", "fp16",
                    "--task", "gb1", "--data-dir", str(data_dir), "--store", str(store_path), *QUICK)
    assert result.exit_code == 2
    assert "backbone prott5 cannot run in fp16 (it supports fp32, bf16); use --dtype bf16" in result.output
