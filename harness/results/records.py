"""The run record: its schema, how finished and failed records are built, and how they are read.

A record is one JSON document per run (``run_record.schema.json``, whose ``config`` part is
derived from :class:`~plm_bench.config.RunConfig`). Everything that writes or reads records goes
through here, so the shape of a record has one owner. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema

from plm_bench.config import RunConfig, config_schema
from plm_bench.errors import BenchError


def schema_file(name: str) -> dict:
    """A JSON schema shipped in this package (``run_record.schema.json``, ``profile.schema.json``)."""
    return json.loads(files("plm_bench.results").joinpath(name).read_text())


def compile_schema(document: dict) -> jsonschema.protocols.Validator:
    """``document`` compiled once, for a store that validates every row it reads
    (``jsonschema.validate`` would check the schema itself on each call, ~70 ms)."""
    return jsonschema.validators.validator_for(document)(document, format_checker=jsonschema.FormatChecker())


def check(validator: jsonschema.protocols.Validator, document: dict, what: str) -> None:
    """Raise BenchError naming ``what`` and the first place where ``document`` breaks its schema."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "record"
        raise BenchError(f"invalid {what} at {where}: {error.message}")


@cache
def schema() -> dict:
    """The record schema shipped with the package, its ``config`` derived from RunConfig."""
    document = schema_file("run_record.schema.json")
    document["properties"]["config"] = config_schema()
    return document


@cache
def validator() -> jsonschema.protocols.Validator:
    return compile_schema(schema())


def validate(record: dict) -> None:
    """Raise BenchError if ``record`` does not match the schema."""
    check(validator(), record, "run record")


def sealed(record: dict) -> dict:
    """``record`` with its ``record_digest``: what the store writes, so a reader can tell a record
    changed after it was stored (a flipped digit in the file would otherwise show as a result)."""
    return {**record, "record_digest": _digest(record)}


def validate_stored(record: dict) -> None:
    """:func:`validate`, and a record that carries a digest must match it (older ones carry none)."""
    validate(record)
    if "record_digest" in record and record["record_digest"] != _digest(record):
        raise BenchError("its content differs from the digest it was stored with, so it was changed after it "
                         "was stored")


def _digest(record: dict) -> str:
    import hashlib

    body = {k: v for k, v in record.items() if k not in ("record_digest", "run_id")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def finished(config: RunConfig, **sections: Any) -> dict:
    """The record of a run that finished: the config and its hash, then the measured ``sections``
    (metrics, test_ci, checkpoints, history, cost, …: the schema's properties)."""
    unknown = sorted(set(sections) - set(schema()["properties"]))
    if unknown:
        raise ValueError(f"run record sections not in the schema: {unknown}")
    return {"config": asdict(config), "config_hash": config.hash, "status": "finished", **sections,
            "finished_at": now()}


def failed(config: RunConfig, error: str, environment: dict, error_type: str = "") -> dict:
    """The record of a run that did not finish, so the store shows it and a rerun retries it.

    ``environment`` is that of the process that ran it; a driver whose worker died knows none
    and passes ``{}``. ``error_type`` is the exception's class name (``BenchError``: a problem
    the user can fix, e.g. missing weights).
    """
    return {
        "config": asdict(config),
        "config_hash": config.hash,
        "status": "failed",
        "error": error,
        **({"error_type": error_type} if error_type else {}),
        "primary_metric": "",
        "metrics": {},
        "environment": environment,
        "finished_at": now(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def config_of(record: dict) -> RunConfig:
    """The RunConfig a record was run with (fields newer than the record take their defaults)."""
    known = {f.name for f in fields(RunConfig)}
    return RunConfig(**{k: v for k, v in record["config"].items() if k in known})


def test_score(record: dict, metric: str | None = None) -> float | None:
    """The test value of ``metric`` (default: the task's primary metric), if the record has it."""
    return record["metrics"].get("test", {}).get(metric or record["primary_metric"])


def valid_score(record: dict) -> float | None:
    return record["metrics"].get("valid", {}).get(record["primary_metric"])


def user_error(record: dict) -> bool:
    """Whether a failed run failed on something the user can fix (a BenchError), not a crash."""
    return record.get("error_type") == BenchError.__name__
