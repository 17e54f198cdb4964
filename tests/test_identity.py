"""Run identity stays put across upgrades: stored runs keep their hashes when settings are added.

tests/fixtures/identities.json holds configs exactly as records of plm-bench 0.1.0 stored them
(identity version 1) with their hashes; tests/fixtures/store-v1.sqlite is a store that version
wrote. Neither is ever regenerated: a change that alters a fixture identity breaks every user's
store, and a new setting must declare ``as_before`` instead.
"""

import json
from dataclasses import MISSING, asdict, fields, make_dataclass, replace
from pathlib import Path

import pytest

from plm_bench.config import RunConfig, setting
from plm_bench.results import records

FIXTURES = Path(__file__).parent / "fixtures"
IDENTITIES = json.loads((FIXTURES / "identities.json").read_text())


@pytest.mark.parametrize("case", IDENTITIES["cases"], ids=lambda c: c["hash"])
def test_stored_configs_keep_their_hash(case):
    assert records.config_of({"config": case["config"]}).hash == case["hash"]


def test_every_newer_setting_declares_the_value_that_means_as_before():
    first = set(IDENTITIES["fields"])
    undeclared = [f.name for f in fields(RunConfig) if f.name not in first and f.metadata["as_before"] is MISSING]
    assert not undeclared, f"settings added since identity version 1 must declare as_before: {undeclared}"


def test_a_new_defaulted_setting_keeps_every_identity_and_a_changed_one_is_a_new_run():
    """What a scratch commit adding a setting would do, without the scratch commit: a RunConfig
    with one more field, declared the way config.py asks."""
    grown = make_dataclass("Grown", [("scaling", str, setting("residue-mean", "Scaling.", {"type": "string"},
                                                              as_before="residue-mean"))],
                           bases=(RunConfig,), frozen=True)
    for case in IDENTITIES["cases"]:
        config = records.config_of({"config": case["config"]})
        assert grown(**asdict(config)).hash == case["hash"]
        assert grown(**asdict(config), scaling="all-tokens").hash != case["hash"]


def test_an_undeclared_setting_would_have_changed_every_identity():
    """The failure the declaration guards against (the hash of 0.1.0 took every field)."""
    grown = make_dataclass("Grown", [("scaling", str, setting("residue-mean", "Scaling.", {"type": "string"}))],
                           bases=(RunConfig,), frozen=True)
    case = IDENTITIES["cases"][0]
    assert grown(**case["config"]).hash != case["hash"]


def test_a_new_method_option_at_its_as_before_value_keeps_the_identity(monkeypatch):
    from plm_bench import plugins

    lora = plugins.get("method", "lora")
    case = next(c for c in IDENTITIES["cases"] if c["config"]["method"] == "lora" and c["config"]["method_options"])
    grown = replace(lora, options={**lora.options, "scaling": "plain"}, options_as_before={"scaling": "plain"})
    monkeypatch.setitem(plugins.catalog().items["method"], "lora", grown)
    config = records.config_of({"config": case["config"]})
    options = grown.resolve_options(config.method_options)
    assert options["scaling"] == "plain"
    assert replace(config, method_options=options).hash == case["hash"]
    assert replace(config, method_options={**options, "scaling": "rslora"}).hash != case["hash"]
