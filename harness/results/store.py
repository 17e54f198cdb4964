"""The embedded SQLite results store: one validated JSON record per run.

A record is written in one transaction when its run ends, so an interrupted run leaves no
partial row. WAL mode lets readers (leaderboards) work while a run writes.

Nothing is lost or silently wrong: a run's record is journaled as JSON in ``<store>.pending/``
until the store holds it (a worker writes it there when its run ends, a failed store write
leaves it there), and the next writer imports what it finds. An unfinished run's training
state waits in ``<store>.resume/`` (its rerun resumes from it) and is deleted here, once the
store holds the finished record: not when the record is built, since `bench run` journals
nothing and a kill before the store write would then lose the whole run. Read commands open
the file read-only (``mode=ro``; a shared read-only results file works) and never create one.
Rows are validated on read; a bad one is reported once and skipped.

Each row keeps the sha256 of its record's text (``digest``), checked on every read: a record
changed outside plm-bench (a hand edit, a damaged page that still parses) is named and skipped,
never shown. The file carries its layout's version (``PRAGMA user_version``, :data:`STORE_VERSION`);
a writer opening an older store upgrades it in place, in one transaction, after copying it to
``<store>.v<N>-backup.sqlite``; a store from a newer plm-bench is refused in one line.

Beside the runs, the ``profiles`` table keeps every ``bench profile`` measurement (one validated
JSON entry each, never replaced: see :mod:`plm_bench.results.profiles`). Tables are created
``IF NOT EXISTS``, so a store from before profiles opens unchanged and a writer adds the table;
a read-only store without it simply has no profiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file
from plm_bench.results import profiles as profile_entries
from plm_bench.results import records

DEFAULT_STORE = "bench-results.sqlite"
WRITE_ATTEMPTS = 3  # a locked or briefly failing disk gets this many tries before the record is journaled
# The store's layout: 0 (plm-bench 0.1.0, which set no version), 2 (each run row keeps its record's digest).
# Versions and record schema versions share one count (records.SCHEMA_VERSION) so neither reuses a number.
STORE_VERSION = 2

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    backbone TEXT NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    head TEXT NOT NULL,
    seed INTEGER NOT NULL,
    record TEXT NOT NULL,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS runs_config_hash ON runs (config_hash);
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    backbone TEXT NOT NULL,
    method TEXT NOT NULL,
    dtype TEXT NOT NULL,
    device TEXT NOT NULL,
    profile TEXT NOT NULL
);
"""


def digest(text: str) -> str:
    """The sha256 of a stored record's text, kept beside it and checked on every read."""
    return hashlib.sha256(text.encode()).hexdigest()


def default_store_path() -> Path:
    return Path(os.environ.get("PLM_BENCH_STORE", DEFAULT_STORE))


def folder_for(store_path: Path) -> Path:
    """Where the runs of the store at ``store_path`` keep their weights (``runs.sqlite`` keeps
    them in ``runs.artifacts/``)."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.artifacts")


def pending_folder(store_path: Path) -> Path:
    """Records not yet in the store at ``store_path``, one ``<config hash>.json`` each."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.pending")


def resume_folder(store_path: Path) -> Path:
    """Where unfinished runs of the store at ``store_path`` keep their training state (see
    :mod:`plm_bench.run.resume`), one :func:`resume_file` each."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.resume")


def resume_file(folder: Path, config_hash: str) -> Path:
    """The training state of the run of ``config_hash`` in ``folder``: named by config hash, so
    only a rerun of the same config can find it."""
    return Path(folder) / f"{config_hash}.pt"


class NotStored(BenchError):
    """A finished run whose record the store could not take: it waits in a journal file (named in
    the message), never replaced by a failure record."""


def journal(record: dict, folder: Path) -> Path:
    """Write ``record`` atomically as ``folder/<config hash>.json`` (temp file, then rename); a
    failed record never replaces a journaled finished one (that result would be lost)."""
    path = folder / f"{record['config_hash']}.json"
    if record["status"] != "finished" and journaled_finished(path):
        return path
    with atomic_file(path) as replacement, open(replacement.path, "w") as out:
        json.dump(record, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    return path


def damaged(path: Path, problem: Exception) -> BenchError:
    """The one line for a store SQLite cannot read, with the way to recover what it holds."""
    return BenchError(f"{path}: the results store is damaged ({problem}); recover what is readable with "
                      f"`sqlite3 {path} .recover | sqlite3 recovered.sqlite` (or restore a backup) and point --store "
                      f"at it; records not yet stored wait in {pending_folder(path)} and join the next store a run "
                      "writes")


def journaled_finished(path: Path) -> bool:
    """Whether ``path`` holds a finished run's journaled record."""
    try:
        return json.loads(path.read_text()).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


class Store:
    """Run records in one SQLite file. ``read_only``: for commands that only read (the file
    must exist; it is opened ``mode=ro``, so nothing is written, not even the WAL setting)."""

    def __init__(self, path: Path | str | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path else default_store_path()
        self.read_only = read_only
        self._reported: set[tuple[str, int]] = set()
        if read_only:
            self.db = self._open_read_only()
            # an older store reads as it is: its rows have no digests to check (read once, not per query)
            self.digested = self._version(self.db) >= STORE_VERSION
            return
        self.digested = True  # a writer brings the store to STORE_VERSION first
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
            self.db.executescript(SCHEMA_SQL)
        except sqlite3.OperationalError as exc:
            raise BenchError(f"{self.path}: cannot open the results store for writing ({exc}); free space on its "
                             "disk or fix its permissions, or point --store at another file") from None
        except sqlite3.DatabaseError as exc:
            raise BenchError(f"{self.path}: not a usable results store ({exc}); "
                             "point --store at another file") from None
        self.recover()

    def _version(self, db: sqlite3.Connection) -> int:
        """The store's layout version; a newer one than this plm-bench knows is refused."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:
            raise BenchError(f"{self.path}: written by a newer plm-bench (store version {version}; this one reads "
                             f"up to {STORE_VERSION}); upgrade plm-bench (pip install -U plm-bench) or use another "
                             "--store")
        return version

    def _migrate(self) -> None:
        """Bring an older store to :data:`STORE_VERSION` (a new one is created at it): a backup
        copy first, then one transaction, so a kill leaves the old store or the new, never half."""
        db = self.db
        version = self._version(db)
        if version == STORE_VERSION:
            return
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone():
            db.execute(f"PRAGMA user_version = {STORE_VERSION}")  # a new store: created below at this version
            return
        backup = self.path.with_name(f"{self.path.stem}.v{version}-backup.sqlite")
        if not backup.exists():
            with atomic_file(backup) as copy:
                target = sqlite3.connect(copy.path)
                db.backup(target)
                target.close()
        db.execute("BEGIN IMMEDIATE")  # one writer migrates; another waits, then finds it done
        try:
            if self._version(db) < STORE_VERSION:
                db.execute("ALTER TABLE runs ADD COLUMN digest TEXT")
                rows = db.execute("SELECT id, record FROM runs").fetchall()
                db.executemany("UPDATE runs SET digest = ? WHERE id = ?", [(digest(t), i) for i, t in rows])
                db.execute(f"PRAGMA user_version = {STORE_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._warn(f"{self.path}: upgraded from store version {version} to {STORE_VERSION} (a copy of the old "
                   f"one: {backup})")

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise BenchError(f"{self.path}: no results store there (read commands never create one); check "
                             "--store or $PLM_BENCH_STORE")
        uri = self.path.resolve().as_uri()
        problem: Exception | None = None
        # A WAL store in a read-only folder cannot get its -shm file: read it as immutable then.
        for options in ("mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=30)
                db.execute("SELECT count(*) FROM runs").fetchone()
                self._version(db)  # a newer one is refused
                return db
            except sqlite3.DatabaseError as exc:
                problem = exc
        if "malformed" in str(problem):
            raise damaged(self.path, problem)
        raise BenchError(f"{self.path}: not a readable results store ({problem}); point --store at another file")

    def add(self, record: dict) -> int:
        """Validate and store ``record``: a finished one replaces every earlier record of its config,
        a failed one only earlier failures (a failed ``--force`` rerun leaves the finished result).

        A write that keeps failing (disk full, I/O error, a lock held too long) leaves the record
        journaled beside the store, named in the error (:class:`NotStored`), and the next writer
        imports it: no result is lost.
        """
        records.validate(record)
        text = self._json(record, "run record")
        try:
            run_id = self._attempt(lambda: self._insert(record, text))
        except sqlite3.DatabaseError as problem:  # locked, full, read-only, or a damaged page
            kept, pending = self._keep(record), pending_folder(self.path)
            then = ("it" if kept.parent == pending else f"move it into {pending} once the disk has room; then it") + \
                " is added by the next `bench run` or `bench grid` on this store"
            raise NotStored(f"{self.path}: the run {'finished' if record['status'] == 'finished' else 'failed'} but "
                            f"could not be stored ({problem}); its record is kept in {kept}: {then}") from None
        journaled = pending_folder(self.path) / f"{record['config_hash']}.json"
        if record["status"] == "finished" or not journaled_finished(journaled):  # a finished result waits on
            journaled.unlink(missing_ok=True)
        if record["status"] == "finished":  # a failed run keeps its state: the retry resumes from it
            resume_file(resume_folder(self.path), record["config_hash"]).unlink(missing_ok=True)
        if "artifact" in record:
            from plm_bench.results.artifacts import prune

            prune(folder_for(self.path), record["config_hash"], record["artifact"]["file"])
        return run_id

    @staticmethod
    def _json(document: dict, what: str) -> str:
        try:
            return json.dumps(document, sort_keys=True, allow_nan=False)
        except ValueError:
            raise BenchError(f"{what} contains NaN or infinity; not stored") from None

    @staticmethod
    def _attempt(write: Callable[[], int]) -> int:
        """``write()``, retried on a locked or briefly failing disk; the last failure propagates."""
        for attempt in range(WRITE_ATTEMPTS - 1):
            try:
                return write()
            except sqlite3.OperationalError:
                time.sleep(0.2 * 2 ** attempt)
        return write()

    def add_profile(self, profile: dict) -> int:
        """Validate and store one profile as a new row (a re-profile adds one; none is replaced)."""
        profile_entries.validate(profile)
        text = self._json(profile, "profile")

        def insert() -> int:
            with self.db:
                cursor = self.db.execute(
                    "INSERT INTO profiles (backbone, method, dtype, device, profile) VALUES (?, ?, ?, ?, ?)",
                    (profile["backbone"], profile["method"], profile["dtype"], profile["device"], text))
            return int(cursor.lastrowid)

        try:
            return self._attempt(insert)
        except sqlite3.OperationalError as problem:
            raise BenchError(f"{self.path}: the profile was measured (printed above) but could not be stored "
                             f"({problem}); free space or fix the file's permissions and profile again, or point "
                             "--store at another file") from None

    def profiles(self) -> list[dict]:
        """Stored profiles, oldest first, each with its ``profile_id``; a bad row is reported once
        and skipped; none where the store predates the profiles table (read-only)."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'profiles'").fetchone():
            return []
        return self._validated("SELECT id, profile FROM profiles ORDER BY id", (), profile_entries.validate,
                               "profile_id", "profile {} is not a valid profile ({}); skipped (profile again)")

    def _insert(self, record: dict, text: str) -> int:
        config = record["config"]
        with self.db:
            self.db.execute("DELETE FROM runs WHERE config_hash = ? AND (? = 'finished' OR status != 'finished')",
                            (record["config_hash"], record["status"]))
            cursor = self.db.execute(
                "INSERT INTO runs (config_hash, status, backbone, task, method, head, seed, record, digest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record["config_hash"], record["status"], config["backbone"], config["task"],
                 config["method"], config["head"], config["seed"], text, digest(text)),
            )
        return int(cursor.lastrowid)

    def _keep(self, record: dict) -> Path:
        """Journal a record the store refused; beside the store, else (that disk full too) in $TMPDIR."""
        for folder in (pending_folder(self.path), Path(tempfile.gettempdir()) / "plm-bench-pending"):
            try:
                return journal(record, folder)
            except OSError:
                continue
        raise NotStored(f"{self.path}: the run finished but neither the store nor a journal file could be "
                        "written (no space anywhere); free space and rerun it")

    def recover(self) -> list[int]:
        """Import the journaled records of runs that ended without reaching the store (a driver
        killed after its worker finished, a store write that failed); returns their run ids.
        A journaled record older than the stored finished one of its config is dropped."""
        ids = []
        for path in sorted(pending_folder(self.path).glob("*.json")):
            try:
                record = json.loads(path.read_text())
                records.validate(record)
            except (OSError, ValueError, BenchError) as exc:
                self._warn(f"{path}: not a valid journaled run record ({exc}); left in place, delete it")
                continue
            stored = self.finished(record["config_hash"])
            if stored and stored["finished_at"] >= record["finished_at"]:
                path.unlink(missing_ok=True)
                continue
            ids.append(self.add(record))
        return ids

    def _rows(self, where: str, *args: object) -> list[dict]:
        """Records of the rows matching ``where``, each validated; a bad row is reported once and skipped."""
        checked = "digest" if self.digested else "NULL"
        return self._validated(f"SELECT id, record, {checked} FROM runs WHERE {where} ORDER BY id", args,
                               records.validate, "run_id", "run {} is not a valid record ({}); skipped (rerun its "
                               "config with --force to replace it)")

    def _validated(self, query: str, args: tuple, validate: Callable[[dict], None], id_name: str,
                   problem: str) -> list[dict]:
        """The JSON documents ``query`` selects (as ``id, text[, digest]`` rows), each checked against
        its digest where it has one, validated and given its row id as ``id_name``; a bad one is
        reported once (``problem`` formatted with id and error)."""
        out = []
        try:
            rows = self.db.execute(query, args).fetchall()
        except sqlite3.DatabaseError as exc:  # a damaged page: one line and the way back, not a traceback
            raise damaged(self.path, exc) from None
        for row_id, text, *stored in rows:
            try:
                if stored and stored[0] is not None and stored[0] != digest(text):
                    raise BenchError("it differs from what plm-bench stored: changed outside plm-bench")
                document = json.loads(text)
                validate(document)
            except (ValueError, BenchError) as exc:
                if (id_name, row_id) not in self._reported:
                    self._reported.add((id_name, row_id))
                    self._warn(f"{self.path}: {problem.format(row_id, exc)}")
                continue
            out.append({**document, id_name: row_id})
        return out

    @staticmethod
    def _warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def finished(self, config_hash: str) -> dict | None:
        """The finished record of this config, if any (with its ``run_id``)."""
        rows = self._rows("config_hash = ? AND status = 'finished'", config_hash)
        return rows[-1] if rows else None

    def records(self, status: str | None = "finished") -> list[dict]:
        """Records of one status (None: all), oldest first, each with its ``run_id``."""
        return self._rows("1 = 1") if status is None else self._rows("status = ?", status)

    def close(self) -> None:
        self.db.close()
