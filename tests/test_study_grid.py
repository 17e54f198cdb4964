"""The study's whole grid as one file: its plan reconciles with the study's training logs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.run.grid import load_grid

GRID = Path(__file__).resolve().parent.parent / "benchmarks" / "grids" / "study.toml"


def test_the_study_grid_plans_the_studys_runs(tmp_path):
    plan = load_grid(GRID)
    counts = Counter((c.method, c.init) for c in plan.configs)
    # training_logs.zip: 320 embedding runs; 198 LoRA and 97 full runs, less 7 extra seeds (see the file)
    assert counts == {("frozen", "pretrained"): 320, ("lora", "pretrained"): 192, ("full", "pretrained"): 96,
                      ("full", "random"): 48}
    assert {c.protocol for c in plan.configs} == {"study"}
    assert {c.seed for c in plan.configs if c.method == "frozen"} == {95, 96, 97, 98, 99}
    assert {c.seed for c in plan.configs if c.method != "frozen"} == {97, 98, 99}
    result = CliRunner().invoke(main, ["grid", str(GRID), "--dry-run", "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    assert "656 runs in" in result.output and not (tmp_path / "s.sqlite").exists()
