"""``bench list KIND`` takes a kind singular or plural, and refuses others naming what exists."""

from __future__ import annotations

from click.testing import CliRunner

from plm_bench.cli import main


def listed(*args: str):
    return CliRunner().invoke(main, ["list", *args], terminal_width=200)


def test_plural_kinds_list_the_same_as_singular():
    for singular in ("task", "backbone", "method", "head", "launcher"):
        one, many = listed(singular), listed(singular + "s")
        assert one.exit_code == many.exit_code == 0, many.output
        assert one.output == many.output and f" {singular} " in one.output
    assert "gb1" in listed("Tasks").output


def test_unknown_kind_names_the_kinds():
    result = listed("nosuch")
    assert result.exit_code == 2
    assert "use one of backbone, task, head, method, launcher" in result.output
