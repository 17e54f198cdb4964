"""The profile entry: what ``bench profile`` measured, as the store keeps it and the report reads it.

A profile is not a run (no task, seed or metrics), so it has its own schema
(``profile.schema.json``, whose backbone/method/init fields are RunConfig's) and its own table in
the store. Every profile is kept: measurements are not deduplicated, and readers take the
latest per backbone, method, precision and device (:func:`latest`). Torch-free, like ``records``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from functools import cache
from typing import TYPE_CHECKING

import jsonschema

from plm_bench.config import RunConfig, config_schema
from plm_bench.results import records

if TYPE_CHECKING:
    from plm_bench.measure.profiler import Envelope, Rate

GIB = 1024**3
CONFIG_FIELDS = ("backbone", "backbone_path", "method", "method_options", "init")  # RunConfig's, as it has them
# An envelope's ``memory`` (MemoryMeter.kind) in words.
MEMORY_KINDS = {"cuda_reserved": "peak reserved GPU memory",
                "process_rss": "peak resident memory of model and step"}


@cache
def schema() -> dict:
    """The profile schema shipped with the package, its config fields taken from RunConfig's."""
    document = records.schema_file("profile.schema.json")
    fields = config_schema()["properties"]
    for name in CONFIG_FIELDS:
        document["properties"][name] = fields[name]
    return document


@cache
def validator() -> jsonschema.protocols.Validator:
    return records.compile_schema(schema())


def validate(profile: dict) -> None:
    """Raise BenchError if ``profile`` does not match the schema."""
    records.check(validator(), profile, "profile")


def entry(config: RunConfig, *, dtype: str, device: str, parameters: dict, rates: Sequence[Rate],
          peak_flops: float | None, envelope: Envelope | None, environment: dict, precision: str | None = None) -> dict:
    """The stored profile of ``config``'s model: its throughput per step kind and, unless
    profiled without one, its memory envelope (budgets and peaks as lists: JSON keys are text);
    ``precision``: what its steps computed in (``bench profile`` always says)."""
    profile = {name: getattr(config, name) for name in CONFIG_FIELDS}
    profile.update(**({"precision": precision} if precision else {}), dtype=dtype, device=device,
                   parameters=dict(parameters), peak_flops_per_second=peak_flops,
                   rates=[asdict(rate) for rate in rates], environment=environment, profiled_at=records.now())
    profile["envelope"] = None if envelope is None else {
        "step": envelope.step, "memory": envelope.memory, "max_length": envelope.max_length,
        "resolution": envelope.resolution,
        "budgets": [{"bytes": budget, "longest": n} for budget, n in sorted(envelope.longest.items())],
        "peaks": [{"length": n, "bytes": peak} for n, peak in sorted(envelope.peaks.items())],
    }
    validate(profile)
    return profile


def key(profile: dict) -> tuple[str, str, str, str, str]:
    """What makes two profiles measurements of the same thing: backbone (and its weights),
    method, precision (with the backbone's dtype) and device."""
    return (profile["backbone"], profile["backbone_path"] or "", profile["method"], compute(profile),
            profile["device"])


def compute(profile: dict) -> str:
    """The precision a profile computed in and the dtype its backbone's weights were in (a profile
    of a release before mixed precision computed in that dtype)."""
    return f"{profile['precision']} ({profile['dtype']})" if "precision" in profile else profile["dtype"]


def latest(profiles: Sequence[dict]) -> list[tuple[dict, int]]:
    """Per :func:`key`, the latest stored profile with an envelope (else the latest) and how many
    are stored; ``profiles`` oldest first, as the store returns them."""
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for profile in profiles:
        by_key[key(profile)].append(profile)
    out = []
    for found in by_key.values():
        with_envelope = [p for p in found if p["envelope"] is not None]
        out.append(((with_envelope or found)[-1], len(found)))
    return sorted(out, key=lambda pair: key(pair[0]))


def budgets(profile: dict) -> dict[int, int]:
    """Budget bytes -> longest length of a profile's envelope ({} without one)."""
    envelope = profile["envelope"]
    return {} if envelope is None else {b["bytes"]: b["longest"] for b in envelope["budgets"]}


def longest_text(longest: int, max_length: int, resolution: int, cap: str = "the length cap, not memory") -> str:
    """A longest length as measured: at the cap it is a lower bound (``cap`` says why), 0 means
    below the resolution."""
    if longest >= max_length:
        return f"≥ {max_length} ({cap})"
    return f"< {resolution}" if longest == 0 else str(longest)


def ratio_text(ours: int, theirs: int, envelope: dict, baseline: dict) -> str:
    """``ours / theirs`` (two longest lengths, of ``envelope`` and ``baseline``) with the bound a
    capped or zero length leaves: ≥ where ours hit its cap, ≤ where theirs did, ``—`` where both
    did or neither fits any length tried."""
    ours_capped, theirs_capped = ours >= envelope["max_length"], theirs >= baseline["max_length"]
    if theirs == 0:
        return "—" if ours == 0 else f"> {ours / baseline['resolution']:.2g}×"
    if ours == 0:
        return f"< {envelope['resolution'] / theirs:.2g}×"
    if ours_capped and theirs_capped:
        return "—"
    bound = "≥ " if ours_capped else "≤ " if theirs_capped else ""
    return f"{bound}{ours / theirs:.2g}×"

