"""RunConfig is the one owner of a run's settings: the CLI, the grid and the record schema derive from it."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.cli.run import run as run_command
from plm_bench.config import RunConfig, config_fields
from plm_bench.results import records
from plm_bench.run.grid import axis_key, grid_schema


def test_every_field_reaches_the_cli_the_grid_and_the_record_schema():
    options = {p.name for p in run_command.params}
    grid = grid_schema()["properties"]
    stored = records.schema()["properties"]["config"]["properties"]
    for f in config_fields():
        assert f.metadata["help"], f.name
        assert f.name in stored, f.name
        role = f.metadata["role"]
        if f.name == "seed":  # bench run spells seeds as --seed S ... / --seeds N
            assert {"seed_list", "seed_count"} <= options
        else:
            assert f.name in options, f.name
        if role == "axis":
            assert axis_key(f.name) in grid, f.name
        elif role == "setting":
            assert f.name in grid["settings"]["properties"], f.name
        else:
            assert f.name in {"method_options", "backbone_path"}, f"{f.name}: add its grid table"


def test_a_new_field_is_one_edit(monkeypatch):
    """A field added to RunConfig alone appears as a CLI option, a grid setting and in the record schema."""
    from plm_bench import config

    extra = dataclasses.make_dataclass(
        "RunConfig", [("warmup", int, config.setting(0, "Warm-up steps.", {"type": "integer", "minimum": 0}))],
        bases=(RunConfig,), frozen=True)
    monkeypatch.setattr(config, "RunConfig", extra)
    assert "warmup" in grid_schema()["properties"]["settings"]["properties"]
    assert "warmup" in config.config_schema()["properties"]
    from plm_bench.cli.common import config_options

    command = config_options(only=("warmup",))(lambda **kw: kw)
    assert [p.name for p in command.__click_params__] == ["warmup"]


def test_stored_config_is_checked_against_the_derived_schema():
    record = records.failed(RunConfig(backbone="onehot", task="gb1", method="frozen", head="mlp-protein"), "x", {})
    records.validate(record)
    record["config"]["epochs"] = 0
    with pytest.raises(Exception, match="config/epochs"):
        records.validate(record)
    jsonschema.Draft202012Validator.check_schema(records.schema())


def test_grid_settings_are_checked_by_the_derived_schema(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\n[settings]\ndtype = "fp64"\n')
    result = CliRunner().invoke(main, ["grid", str(grid), "--dry-run", "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2 and "settings.dtype" in result.output and "fp64" in result.output


def test_defaults_are_declared_by_the_plugins_not_spelled_by_the_core():
    config = RunConfig(backbone="onehot", task="disorder").resolved()
    assert (config.method, config.head) == ("frozen", "mlp-residue")
    assert RunConfig(backbone="onehot", task="gb1", method="frozen", head="mlp-protein").resolved().hash == \
        RunConfig(backbone="onehot", task="gb1").resolved().hash
