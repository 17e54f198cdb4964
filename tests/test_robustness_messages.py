"""Issue 14, item 7: user text prints literally. Rich markup ate ``[split]`` and ``[[sources]]``
and raised MarkupError on a ``[/x]`` in an error or label."""

from __future__ import annotations

import io

from rich.console import Console
from robustness import (
    TASK_TOML,
    bench,
    clean_environment,  # noqa: F401  (the autouse fixture)
    write_task,
)

from plm_bench.errors import BenchError
from plm_bench.run import protocol
from plm_bench.run.progress import Lines

TRICKY = "bad [split] and [[sources]] and [/x] and [bold]"


def test_a_failed_run_prints_its_error_as_written(tmp_path, monkeypatch):
    def crash(config, context):
        raise RuntimeError(TRICKY)

    monkeypatch.setattr(protocol, "execute", crash)
    result = bench("run", "--backbone", "onehot", "--task", write_task(tmp_path), "--store", tmp_path / "s.sqlite")
    assert result.exit_code == 1, result.output  # a failed run: stored as failed, not a crash of the CLI
    assert f"run 1 failed: RuntimeError: {TRICKY}" in result.output


def test_bench_errors_print_as_written(tmp_path, monkeypatch):
    def refuse(config, context):
        raise BenchError(TRICKY)

    monkeypatch.setattr(protocol, "execute", refuse)
    result = bench("run", "--backbone", "onehot", "--task", write_task(tmp_path), "--store", tmp_path / "s.sqlite")
    assert result.exit_code == 2
    assert result.output == f"error: {TRICKY}\n"


def test_definition_errors_keep_their_brackets(tmp_path):
    toml = TASK_TOML.replace('file = "data.csv"\n', "")
    result = bench("run", "--backbone", "onehot", "--task", write_task(tmp_path, toml), "--store",
                   tmp_path / "s.sqlite")
    assert result.exit_code == 2
    assert "add [[sources]] with `file`" in result.output


def test_grid_lines_keep_user_text():
    out = io.StringIO()
    event = {"time": "2026-01-01T00:00:00+00:00", "event": "end", "config_hash": "abc", "backbone": "onehot",
             "task": "[/x]", "method": "frozen", "head": "mlp-protein", "seed": 1, "metric": "",
             "status": "failed", "error": TRICKY}
    Lines(Console(file=out, width=300)).show(event)  # the line bench grid prints off a terminal
    assert out.getvalue().endswith(f" onehot [/x] frozen mlp-protein seed 1: failed: {TRICKY}\n")
