"""Declarative protocols: a TOML file of rules, each setting defaults for the runs it matches.

A protocol file has a ``name``, a ``description``, optionally ``extends`` (a protocol whose
settings apply first, so the file states only what it changes) and ``[[rules]]``; a rule's ``match`` table
lists accepted values per key (task, level, family, backbone, method, init) and its ``settings``
table holds values of RunConfig fields (plus ``seeds``, how many seeds ``bench run`` runs when
given none). ``source`` says where a rule's values come from. Every value is checked against
the field's JSON schema here, so a typo is reported naming the file, not mid-run.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema

from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.plugins.specs import ProtocolRule, ProtocolSpec, did_you_mean

TOP_KEYS = ("name", "description", "extends", "rules")
MATCH_KEYS = ("task", "level", "family", "backbone", "method", "init")
SEEDS = {"type": "integer", "minimum": 1}
NOT_SET_BY_PROTOCOLS = ("backbone", "task", "method", "seed", "protocol", "backbone_path", "limit_train",
                        "limit_eval")


def settable() -> dict[str, dict]:
    """The settings a protocol may hold and the JSON schema of each."""
    from plm_bench.config import config_fields

    fields = {f.name: f.metadata["schema"] for f in config_fields() if f.name not in NOT_SET_BY_PROTOCOLS}
    return {**fields, "seeds": SEEDS}


def load_protocol(path: Path) -> ProtocolSpec:
    """Read and check a protocol file; every error names the file and the rule."""
    definition = load_toml(path)
    allowed = settable()
    if not isinstance(definition.get("name"), str) or not definition["name"]:
        raise BenchError(f"{path}: give the protocol a name = \"...\"")
    rules = []
    for number, rule in enumerate(definition.get("rules", []), start=1):
        where = f"{path}: rule {number}"
        unknown = sorted(set(rule) - {"match", "settings", "source"})
        if unknown:
            raise BenchError(f"{where}: unknown key {unknown[0]!r}; a rule holds match, settings and source")
        match = rule.get("match", {})
        for key, values in match.items():
            if key not in MATCH_KEYS or not isinstance(values, list) or not values:
                raise BenchError(f"{where}: match.{key} must be one of {', '.join(MATCH_KEYS)} with a non-empty "
                                 "list of values; fix the file")
        for key, value in rule.get("settings", {}).items():
            if key not in allowed:
                raise BenchError(f"{where}: {key!r} is not a setting a protocol holds (settable: "
                                 f"{', '.join(sorted(allowed))}); fix the file")
            try:
                jsonschema.validate(value, allowed[key])
            except jsonschema.ValidationError as exc:
                raise BenchError(f"{where}: {key} = {value!r}: {exc.message}; fix the file") from None
        rules.append(ProtocolRule({k: tuple(v) for k, v in match.items()}, dict(rule.get("settings", {})),
                                  rule.get("source", "")))
    extends = definition.get("extends", "")
    if not isinstance(extends, str):
        raise BenchError(f"{path}: extends = {extends!r}: name one protocol, e.g. extends = \"harness\"")
    unknown = sorted(set(definition) - set(TOP_KEYS))
    if unknown:
        raise BenchError(f"{path}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], TOP_KEYS)}; a protocol "
                         f"holds {', '.join(TOP_KEYS)}")
    return ProtocolSpec(definition["name"], tuple(rules), definition.get("description", ""), str(path), extends)


def settings_table() -> str:
    """The Markdown table of every setting a protocol may hold (docs/plugins.md carries it;
    tests/test_contract.py checks it is current)."""
    from plm_bench.config import config_fields

    helps = {f.name: f.metadata["help"] for f in config_fields()}
    helps["seeds"] = "How many seeds `bench run` runs when given none."
    rows = ["| setting | accepts | meaning |", "|---|---|---|"]
    for name, schema in settable().items():
        kind = schema.get("type", "")
        kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
        accepts = ", ".join(f"`{v}`" for v in schema["enum"] if v is not None) if "enum" in schema else (
            " ".join(filter(None, [kind, bounds(schema)])))
        rows.append(f"| `{name}` | {accepts} | {helps[name].replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def bounds(schema: dict) -> str:
    marks = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    return " ".join(f"{mark} {schema[key]}" for key, mark in marks.items() if key in schema)
