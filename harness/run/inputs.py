"""Content identity of a run's inputs: the files that decide its result, by what they hold.

A run's config names its inputs by path (task data under ``--data-dir``, ``--backbone-path``), and
paths outlive contents: an edited CSV or swapped weights under the same name would leave the
config's hash as it was. So every run records the digests of what it read (``inputs`` in its
record: the task files, the ``--backbone-path`` files, the loaded weights), computed from the
content once per run (a size+mtime stamp is fooled by an edit that restores both), and

- "already done" holds only while the stored record's digests match the files as they are now
  (:func:`changed`), so changed data reruns instead of serving the stale result;
- a run whose files changed since its command planned it stops with one line (:func:`check_planned`),
  so the seeds of one command never mix two versions of the data.

Digests live in the record, not the config: a stored run whose inputs did not change keeps its
hash (tests/test_identity.py), and records from before this section are taken as they are.
``--embeddings`` needs none of this: its digest is part of the config already.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.tasks import sources
from plm_bench.tasks.task import file_digest

# what each key of a record's ``inputs`` names, for messages
WHAT = {"task": "task data", "backbone_files": "--backbone-path files", "hub_snapshot": "hub snapshot"}


def folder_digest(folder: Path) -> str:
    """``sha256:hex`` over every file under ``folder`` (names and contents): a ``--backbone-path``'s
    weights, config and tokenizer files, read once per run. Hidden files and folders (the lock and
    metadata files of ``hf download --local-dir``) are no part of the checkpoint."""
    import hashlib

    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: --backbone-path is not a directory; point it at the saved weights")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest(path)}\0".encode())
    return "sha256:" + digest.hexdigest()


def snapshot_digest(hub_id: str) -> str | None:
    """``blobs:hex`` over the cached hub snapshot's file names and the blobs they point to. The hub
    cache names each blob by its content (sha256 for weights), so this names the weights without
    reading them; None where the snapshot is not cached (the run fetches it, or says how)."""
    import hashlib
    import os

    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or no usable cache at all
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{Path(os.path.realpath(path)).name}\0".encode())
    return "blobs:" + digest.hexdigest()


def of_run(config: RunConfig, task_digests: dict[str, str],
           backbone: dict[str, Any] | None = None) -> dict[str, Any]:
    """The file digests of one run: ``task_digests`` (what its task's load read, by file), then its
    backbone's (:func:`backbone_files`, or ``backbone`` where the caller digested them already);
    keys left out where there is nothing to name (a code task, onehot, --init random, a snapshot
    not cached yet)."""
    out: dict[str, Any] = {}
    if task_digests:
        out["task"] = dict(sorted(task_digests.items()))
    return {**out, **(backbone_files(config) if backbone is None else backbone)}


def backbone_files(config: RunConfig) -> dict[str, Any]:
    """The digest of a run's ``--backbone-path`` folder or of its cached hub snapshot, if any."""
    from plm_bench import plugins

    if config.backbone_path:
        return {"backbone_files": folder_digest(Path(config.backbone_path))}
    if config.init == "pretrained" and (hub_id := plugins.get("backbone", config.backbone).hub_id):
        snapshot = snapshot_digest(hub_id)
        if snapshot:
            return {"hub_snapshot": snapshot}
    return {}


def planned(configs: Iterable[RunConfig], data_dir: Path, strict: bool = True,
            unreadable: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """config hash -> the digests of its inputs as they are now (:func:`of_run`), each file read
    from its content (once per command: it calls ``sources.forget_hashes()`` before resolving its
    configs, which digests custom task files and ``--embeddings``). Loading each task once here is
    also the check before anything runs: missing, corrupt or unparsable data is one error, and
    nothing is stored. Not ``strict`` (a grid, whose workers may see data this machine does not):
    a task whose data cannot be read here is noted in ``unreadable`` and its configs left out, so
    their stored records are taken as they are and their runs check the data where they run."""
    from plm_bench import plugins

    tasks: dict[str, dict[str, str] | None] = {}
    backbones: dict[tuple, dict[str, Any]] = {}  # one backbone's files are digested once, whatever uses them
    out = {}
    for config in configs:
        if config.task not in tasks:
            sources.read_digests.clear()
            try:
                plugins.get("task", config.task).load(Path(data_dir))
                tasks[config.task] = dict(sources.read_digests)
            except BenchError as exc:
                if strict:
                    raise
                tasks[config.task] = None
                if unreadable is not None:
                    unreadable.append(str(exc))
        if tasks[config.task] is not None:
            key = (config.backbone, config.backbone_path, config.init)
            if key not in backbones:
                backbones[key] = backbone_files(config)
            out[config.hash] = of_run(config, tasks[config.task], backbones[key])
    return out


def changed(record: dict, now: dict[str, Any] | None) -> list[str]:
    """What of a stored record's inputs differs from ``now`` (:func:`planned`'s entry for its
    config), as phrases for a message; empty when nothing did, or when either side does not know
    (a record from before inputs were recorded, a config not planned, a hub snapshot not cached)."""
    before = record.get("inputs")
    if not before or now is None:
        return []
    return [describe(key, before[key], now[key]) for key in sorted(set(WHAT) & set(before) & set(now))
            if before[key] != now[key]]


def describe(key: str, before: Any, now: Any) -> str:
    """One input's change in words: the first task file that differs, or the folder."""
    if key == "task" and isinstance(before, dict) and isinstance(now, dict):
        files = sorted(set(before) | set(now))
        first = next(f for f in files if before.get(f) != now.get(f))
        return f"task file {first} ({short(before.get(first))} then, {short(now.get(first))} now)"
    return f"{WHAT[key]} ({short(before)} then, {short(now)} now)"


def short(digest: Any) -> str:
    if not isinstance(digest, str):
        return "absent"
    kind, _, value = digest.partition(":")
    return f"{kind} {value[:12]}…" if value else digest


def check_planned(config: RunConfig, now: dict[str, Any], planned_inputs: dict[str, Any] | None) -> None:
    """Stop a run whose input files changed since its command planned it (say, between seeds)."""
    if planned_inputs is None:
        return
    differences = changed({"inputs": planned_inputs}, now)
    if differences:
        raise BenchError(f"{config.backbone} {config.task} seed {config.seed}: {differences[0]} changed since "
                         "this command started, so its runs would mix two versions; rerun the command once the "
                         "files stay put")
