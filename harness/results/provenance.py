"""Which code produced a result: plm-bench's version and commit, and every plugin that served the run.

Every record carries this (``provenance``), so a number in a store can always be traced to its
code, and a run whose code changed is never taken for done (:func:`changes`). What counts as a
change of *result* is narrower than a change of version:

- plm-bench itself: :data:`RESULT_VERSION`, bumped by hand (CHANGELOG.md says when) whenever a
  release changes what a run computes for the same config. A release that only fixes a message
  or adds a command keeps it, so stored runs stay done; the package version and the checkout's
  commit are recorded as well, for the record, not compared.
- a third-party plugin: its distribution's version (its code is not ours to judge): any bump of
  the package that served a run's backbone, task, head, method or protocol makes it not done.
- one item (a head, say) whose code changed a result: its spec's ``revision``, so only the runs it
  served stop counting as done, not every run of the release.

Torch-free; the commit is read once per process (the code a process runs is the code it loaded).
"""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "plm-bench"
RESULT_VERSION = 1
# The plugins whose code decides a result; the launcher (also recorded) only decides where it ran.
DECIDING = ("backbone", "task", "head", "method", "protocol")


def package_version(distribution: str = DISTRIBUTION) -> str | None:
    """The installed version of ``distribution`` (its package metadata: the one owner)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@functools.cache
def checkout() -> dict:
    """The git commit of the checkout plm-bench runs from and whether tracked files differ from it;
    empty for an installed wheel (no checkout) or where git is missing."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not (root / "harness").is_dir():
        return {}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(status.strip())}


def serving(names: dict[str, str]) -> dict[str, dict]:
    """For each plugin kind in ``names`` (kind -> item name), the distribution that registered the
    item and its version; a name no plugin serves (now) is left out."""
    from plm_bench import plugins

    catalog = plugins.catalog()
    out = {}
    for kind, name in names.items():
        label = catalog.providers.get((kind, name))
        if label:
            distribution = label.split(":")[0]
            out[kind] = {"name": name, "distribution": distribution, "version": package_version(distribution),
                         "revision": getattr(catalog.items[kind][name], "revision", 1)}
    return out


def of(config: dict, schema_version: int) -> dict:
    """The provenance section of a record of ``config`` (a stored config: a dict)."""
    return {
        "schema_version": schema_version,
        "plm_bench": {"version": package_version(), "result_version": RESULT_VERSION, **checkout()},
        "plugins": serving({kind: config[kind] for kind in DECIDING if kind in config}),
    }


def code(record: dict) -> str:
    """The code a record's result depends on, in one comparable line: plm-bench's result version,
    each third-party plugin's ``distribution==version`` and each item past its first revision
    (records from before provenance: result version 1, revisions 1, third-party plugins unknown)."""
    provenance = record.get("provenance") or {}
    result = provenance.get("plm_bench", {}).get("result_version", 1)
    plugins = {kind: p for kind, p in provenance.get("plugins", {}).items() if kind in DECIDING}
    third = sorted({f"{p['distribution']}=={p['version']}" for p in plugins.values()
                    if p["distribution"] != DISTRIBUTION})
    revised = sorted(f"{kind} {p['name']} rev {p['revision']}" for kind, p in plugins.items()
                     if p.get("revision", 1) > 1)
    return " + ".join([f"plm-bench r{result}", *third, *revised])


def stepped_16bit_weights(record: dict) -> bool:
    """Whether a record is of a fine-tuning run from before the precision policy (no ``precision``
    section) whose backbone sat in bf16/fp16: its optimizer stepped those weights directly, so most
    updates rounded away (CHANGELOG 0.2.0). Only GPU runs under --dtype auto, or --dtype bf16/fp16."""
    if "precision" in record or record.get("cost", {}).get("backbone_dtype") not in ("bfloat16", "float16"):
        return False
    from plm_bench import plugins
    from plm_bench.errors import BenchError

    try:
        return plugins.get("method", record["config"]["method"]).trains_backbone
    except BenchError:  # a method no plugin serves now: its code is unknown, nothing to say about it
        return False


def changes(stored: dict, current: dict) -> list[str]:
    """What changed between the code of a ``stored`` record and the ``current`` provenance of the
    same config, for people; empty when nothing that decides the result did (or the record is
    from before provenance, which has nothing to compare)."""
    before = stored.get("provenance") or {"plm_bench": {"result_version": 1}, "plugins": {}}  # 0.1.0: r1, rev. 1
    out = []
    old, new = before["plm_bench"].get("result_version"), current["plm_bench"]["result_version"]
    if old != new:
        out.append(f"plm-bench result version {old} -> {new} (see CHANGELOG.md)")
    if stepped_16bit_weights(stored):
        out.append(f"it fine-tuned {stored['cost']['backbone_dtype']} weights directly, before plm-bench kept fp32 "
                   "master weights (0.2.0), so most updates were lost")
    for kind in DECIDING:
        was, now = before["plugins"].get(kind), current["plugins"].get(kind)
        if was is None and (now is None or now["distribution"] != DISTRIBUTION):
            continue  # a record of 0.1.0 names no plugin: only plm-bench's own are known (at revision 1)
        was = was or {**now, "revision": 1}
        if now is None:
            out.append(f"{kind} {was['name']}: {was['distribution']} {was['version']} no longer serves it")
            continue
        if was["distribution"] != now["distribution"] or (was["version"] != now["version"]
                                                          and now["distribution"] != DISTRIBUTION):
            out.append(f"{kind} {was['name']}: {was['distribution']} {was['version']} -> "
                       f"{now['distribution']} {now['version']}")  # plm-bench's own: its result version decides
        elif was.get("revision", 1) != now["revision"]:
            out.append(f"{kind} {was['name']}: revision {was.get('revision', 1)} -> {now['revision']}")
    return out
