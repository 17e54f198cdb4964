"""Leaderboard aggregation, paired deltas, Pareto fronts, study reference, exports and plots."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.results import leaderboard as lb
from plm_bench.results.store import Store


def record(backbone, method, task, seed, value, seconds=10.0, memory=2**30):
    config = {"backbone": backbone, "task": task, "method": method, "head": "mlp-protein", "seed": seed,
              "epochs": 1, "lr": 1e-3, "batch_size": 8, "backbone_path": None}
    return {
        "config": config, "config_hash": f"{abs(hash((backbone, method, task, seed))):016x}"[:16],
        "status": "finished", "primary_metric": "spearman",
        "metrics": {"valid": {"spearman": value}, "test": {"spearman": value}},
        "cost": {"train_seconds": seconds, "embed_seconds": 0.0, "eval_seconds": 0.0, "time_to_best_seconds": seconds,
                 "total_seconds": seconds, "train_samples_per_second": 1.0, "train_residues_per_second": 100.0,
                 "peak_memory": {"kind": "cuda", "allocated_bytes": memory, "reserved_bytes": memory},
                 "micro_batch": 8, "oom_backoffs": [], "dtype": "float32"},
        "environment": {}, "finished_at": "2026-11-25T00:00:00+00:00",
    }


RECORDS = [
    record("esm2-8m", "frozen", "gb1", 1, 0.80), record("esm2-8m", "frozen", "gb1", 2, 0.82),
    record("esm2-8m", "frozen", "gb1", 3, 0.84),
    record("esm2-8m", "full", "gb1", 1, 0.86, seconds=100, memory=4 * 2**30),
    record("esm2-8m", "full", "gb1", 2, 0.89, seconds=100, memory=4 * 2**30),
    record("esm2-8m", "full", "gb1", 3, 0.89, seconds=100, memory=4 * 2**30),
    record("onehot", "frozen", "gb1", 1, 0.30, seconds=20, memory=2**29),
]


def test_mean_and_ci_over_seeds_match_hand_computation():
    cell = lb.leaderboard(RECORDS).rows[("esm2-8m", "frozen", "mlp-protein")]["gb1"]
    # values 0.80, 0.82, 0.84: mean 0.82, sample sd 0.02, half-width 1.96 * 0.02 / sqrt(3)
    assert cell.mean == pytest.approx(0.82)
    assert cell.half_width == pytest.approx(1.96 * 0.02 / math.sqrt(3))
    assert cell.n == 3
    single = lb.leaderboard(RECORDS).rows[("onehot", "frozen", "mlp-protein")]["gb1"]
    assert single.half_width is None and "±" not in str(single)


def test_delta_is_paired_over_seeds():
    cell = lb.delta(RECORDS, "frozen").rows[("esm2-8m", "full", "mlp-protein")]["gb1"]
    # paired differences 0.06, 0.07, 0.05: mean 0.06, sd 0.01
    assert cell.mean == pytest.approx(0.06)
    assert cell.half_width == pytest.approx(1.96 * 0.01 / math.sqrt(3))
    assert cell.flag == "gain"


def test_delta_without_a_baseline_is_one_clear_error():
    with pytest.raises(Exception, match="run `bench run --method frozen`"):
        lb.delta([r for r in RECORDS if r["config"]["method"] == "full"], "frozen")


def test_pareto_front_marks_dominated_settings():
    rows = lb.pareto(RECORDS).rows
    assert rows[("esm2-8m", "frozen", "mlp-protein", "gb1")]["on front"] == "yes"  # cheapest
    assert rows[("esm2-8m", "full", "mlp-protein", "gb1")]["on front"] == "yes"  # best
    assert rows[("onehot", "frozen", "mlp-protein", "gb1")]["on front"] == "no"  # worse and slower than frozen esm2


def test_reference_column_flags_results_outside_the_study_ci():
    report = lb.leaderboard(RECORDS, reference=True)
    # the study: ESM2 8M frozen embeddings on GB1 0.818 ± 0.0041; full fine-tuning 0.883 ± 0.0095
    frozen = report.rows[("esm2-8m", "frozen", "mlp-protein")]
    assert frozen["gb1 (study)"] == "0.818 ± 0.004"
    assert frozen["gb1"].flag == ""  # 0.82 is within 0.818 ± 0.0041
    full = report.rows[("esm2-8m", "full", "mlp-protein")]
    assert full["gb1"].flag == ""  # 0.88 within 0.883 ± 0.0095
    onehot = report.rows[("onehot", "frozen", "mlp-protein")]
    assert onehot["gb1 (study)"] is None


def test_exports_render_mean_and_ci():
    report = lb.leaderboard(RECORDS)
    markdown = lb.render(report, "md")
    assert "| esm2-8m | frozen | mlp-protein | 0.820 ± 0.023 (n=3) |" in markdown
    rows = list(csv.reader(io.StringIO(lb.render(report, "csv"))))
    assert rows[0] == ["backbone", "method", "head", "gb1"]
    data = json.loads(lb.render(report, "json"))
    assert data["rows"][0]["gb1"]["mean"] == pytest.approx(0.82)
    assert "<td>0.820 ± 0.023 (n=3)</td>" in lb.render(report, "html")


def test_cli_leaderboard_formats_filters_and_plot(store_path, tmp_path):
    store = Store(store_path)
    for r in RECORDS:
        store.add(r)
    runner = CliRunner()
    md = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--format", "md"])
    assert md.exit_code == 0, md.output
    assert "0.820 ± 0.023 (n=3)" in md.output
    only = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--backbone", "onehot", "--format", "csv"])
    assert "esm2-8m" not in only.output and "onehot" in only.output
    png = tmp_path / "out.png"
    plotted = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--plot", str(png)])
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    for flags in (["--delta", "frozen"], ["--cost"], ["--pareto"], ["--reference"]):
        result = runner.invoke(main, ["leaderboard", "--store", str(store_path), *flags], terminal_width=250)
        assert result.exit_code == 0, (flags, result.output)
