"""The one run driver: ``bench run`` and ``bench grid`` both go through it.

Skip what finished, launch the rest, store each record as it arrives. A run that raises becomes
a failed record whichever command started it (stored, so the store shows it; a rerun retries
it); the commands differ only in how they report. Only the driver writes the store: records
flow back from wherever a launcher ran them, and SQLite does not survive concurrent writers on
the network file systems that clusters share.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.plugins.specs import LauncherSpec
from plm_bench.results import provenance, records
from plm_bench.results.store import NotStored, Store, journal
from plm_bench.run import inputs
from plm_bench.run.progress import Progress

if TYPE_CHECKING:
    from plm_bench.run.protocol import RunContext

TOGETHER = "trained_together_records"  # where a group's first record carries the others' on their way to the driver


def attempt(config: RunConfig, context: RunContext, together: Sequence[RunConfig] = ()) -> dict:
    """Run one config; a run that raises becomes a ``failed`` record, so the driver goes on.

    ``together``: the other seeds of ``config``'s frozen condition (:func:`seed_groups`), run with
    it as one stacked model (:func:`~plm_bench.run.protocol.execute_together`); their records
    ride in this one's ``TOGETHER`` entry, which the driver unpacks (so every launcher carries
    them as it carries one record).

    With ``context.pending_dir`` the record is journaled there before it is handed back, so it
    reaches the store even if the driver dies before receiving it (the next writer imports it).
    """
    from plm_bench.run.protocol import environment, execute, execute_together

    def failed(config: RunConfig, exc: Exception) -> dict:  # recorded, not swallowed: the record carries the error
        error = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        return records.failed(config, error, environment(context.torch_device), type(exc).__name__)

    configs = [config, *together]
    try:
        if together:
            results = execute_together(configs, context)
        else:
            context.progress.start(config)
            results = [execute(config, context)]
    except Exception as exc:
        results = [exc] * len(configs)
    done = [failed(c, r) if isinstance(r, Exception) else r for c, r in zip(configs, results, strict=True)]
    if context.pending_dir:
        with contextlib.suppress(OSError):  # a worker that cannot write beside the store still hands it back
            for record in done:
                journal(record, context.pending_dir)
    return {**done[0], TOGETHER: done[1:]} if together else done[0]


def seed_groups(configs: Sequence[RunConfig]) -> dict[str, tuple[RunConfig, ...]]:
    """The seeds of each frozen condition among ``configs`` (a frozen method on pretrained weights,
    every setting equal but the seed): the first seed's hash → the others. Their inputs are the
    same, so their heads train as one model (:mod:`plm_bench.run.frozen_heads`)."""
    from plm_bench import plugins

    groups: dict[str, list[RunConfig]] = {}
    for config in configs:
        if config.init == "random" or plugins.get("method", config.method).trains_backbone:
            continue  # a random-init backbone differs by seed, and so do its embeddings
        groups.setdefault(replace(config, seed=0).hash, []).append(config)
    return {group[0].hash: tuple(group[1:]) for group in groups.values() if len(group) > 1}


@dataclass
class Together:
    """``execute`` that runs a group's first seed with the group's other seeds (``attempt``'s
    ``together``): what a launcher ships to its workers in place of ``execute``."""

    execute: Callable[..., dict]
    groups: dict[str, tuple[RunConfig, ...]]

    def __call__(self, config: RunConfig) -> dict:
        others = self.groups.get(config.hash)
        return self.execute(config, together=others) if others else self.execute(config)


def unpacked(record: dict, groups: dict[str, tuple[RunConfig, ...]]) -> list[dict]:
    """A launcher's record and the records of the seeds that ran with it; where the worker died
    before making them (its launcher's failed record for the first seed alone), theirs fail alike."""
    others = record.pop(TOGETHER, None)
    if others is None:
        error = f"it trained together with seed {record.get('config', {}).get('seed')}, whose run failed: " \
                f"{record.get('error', 'no record')}; rerun to retry"
        others = [records.failed(c, error, {}) for c in groups.get(record.get("config_hash"), ())]
    return [record, *others]


def split_done(configs: Sequence[RunConfig], store: Store | None, force: bool = False,
               accept_changed: bool = False, planned: dict[str, dict] | None = None
               ) -> tuple[list[RunConfig], list[RunConfig]]:
    """(to run, already finished). Failed runs are run again; ``force`` reruns everything; so does
    a finished run whose input files differ now from those its record names (``planned``: config
    hash -> digests now, :func:`plm_bench.run.inputs.planned`).

    A finished run whose code has changed since (:func:`provenance.changes`) is neither: the
    user decides, so this refuses in one line naming what changed, unless ``accept_changed``
    keeps the stored records as done.
    """
    if force or store is None:
        return list(configs), []
    planned = planned or {}
    done, changed = [], []
    current: dict[tuple, dict] = {}  # the code serving each combination of plugins, looked up once
    for config in configs:
        record = store.finished(config.hash)
        if record is None or inputs.changed(record, planned.get(config.hash)):
            continue
        what = []
        if not accept_changed:
            stored = asdict(config)
            serving = tuple(stored[kind] for kind in provenance.DECIDING)
            if serving not in current:
                current[serving] = provenance.of(stored, records.SCHEMA_VERSION)
            what = provenance.changes(record, current[serving])
        if what:
            changed.append(f"run {record['run_id']} ({config.backbone} {config.task} {config.method} seed "
                           f"{config.seed}): {'; '.join(what)}")
        else:
            done.append(config)
    if changed:
        more = f" (and {len(changed) - 1} more runs)" if len(changed) > 1 else ""
        raise BenchError(f"finished with other code: {changed[0]}{more}; rerun with --force (the old record stays "
                         "until the new one finishes) or keep the stored results with --accept-changed")
    hashes = {c.hash for c in done}
    return [c for c in configs if c.hash not in hashes], done


def check_options(launcher: LauncherSpec, options: dict) -> None:
    """Fail in one line, before anything runs, on an option the launcher does not take."""
    try:
        inspect.signature(launcher.launch).bind([], None, **options)
    except TypeError as exc:
        raise BenchError(f"launcher {launcher.name}: {exc}; drop that option or pick another --launcher") from None


def with_launcher(record: dict, served_by: dict) -> dict:
    """``record`` with the launcher that ran it in its provenance (only the driver knows it)."""
    if "provenance" not in record:  # a third-party launcher's hand-built record: nothing to add to
        return record
    plugins = {**record["provenance"]["plugins"], **served_by}
    return {**record, "provenance": {**record["provenance"], "plugins": plugins}}


def drive(configs: Sequence[RunConfig], launcher: LauncherSpec, execute: Callable[[RunConfig], dict],
          store: Store, options: dict | None = None, progress: Progress | None = None) -> list[dict]:
    """Launch ``configs`` and store each record as it arrives; return the stored records.

    A record the store refuses (say, a NaN metric) is stored as a failed run instead, so one
    bad run never stops a grid and a rerun retries it. ``progress`` shows the runs' events as
    they happen (workers' too) and each stored record as the run's end.
    """
    options = options or {}
    progress = progress or Progress()
    check_options(launcher, options)
    expected = {c.hash: c for c in configs}
    stored: list[dict] = []
    served_by = provenance.serving({"launcher": launcher.name})
    unstored: list[str] = []  # records the store could not take, each waiting in a journal the message names
    groups = seed_groups(configs) if "together" in inspect.signature(execute).parameters else {}
    followers = {c.hash for group in groups.values() for c in group}
    stream = launcher.launch([c for c in configs if c.hash not in followers],
                             Together(execute, groups) if groups else execute, **options)
    try:
        with progress.following(configs):
            for record in (one for item in stream for one in unpacked(item, groups)):
                config = expected.pop(record.get("config_hash"), None)
                if config is None:
                    raise BenchError(f"launcher {launcher.name} returned a record for a run it was not given "
                                     f"({record.get('config_hash')}); fix the launcher plugin")
                try:
                    run_id = store.add(with_launcher(record, served_by))
                except NotStored as exc:  # journaled: storing a failure instead would hide the finished result
                    unstored.append(str(exc))
                    continue
                except BenchError as exc:
                    record = records.failed(config, str(exc), {}, type(exc).__name__)  # no worker environment here
                    run_id = store.add(with_launcher(record, served_by))
                stored.append({**record, "run_id": run_id})
                progress.end(stored[-1])
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()  # a launcher cancels its outstanding work when the driver stops early
    if unstored:
        more = f" ({len(unstored) - 1} more runs likewise)" if len(unstored) > 1 else ""
        raise BenchError(unstored[0] + more)
    if expected:
        raise BenchError(f"launcher {launcher.name} returned no record for {len(expected)} runs; "
                         "rerun the grid to retry them")
    return stored
