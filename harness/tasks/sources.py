"""Task source files: where they live, how they are verified, fetched and read.

Every data folder has the same layout, ``<data-dir>/<task folder>/<upstream file name>``: the
user's cache, a mirror directory, a mirror served over HTTP, and ``--data-dir`` pointing at a
mirror directly. A source names its upstream URL and a checksum: sha256, or the git blob id
(``sha1("blob <size>\\0" + content)``) when only the upstream repository identifies the file,
or for a folder of files the git tree id. Files are written only through a temporary file in
the same directory that is renamed into place after its checksum verified, so concurrent
workers never see a half-written file. Archive members are read in memory, never extracted
to disk, and member names must be plain relative paths.

Only checksummed files are fetched or read, unless the user passes ``--allow-unverified``
(``$PLM_BENCH_ALLOW_UNVERIFIED``, so workers inherit it); a run that read such a file lists it in
its record. A custom task's own files are exempt: its identity is their content digest.
Downloads and the archive members read into memory are capped in size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file, current_umask

SPLITS = ("train", "valid", "test")
HEX = {"sha256": 64, "git_blob": 40, "git_tree": 40}
TIMEOUT_S = 60
ALLOW_UNVERIFIED = "PLM_BENCH_ALLOW_UNVERIFIED"
MAX_DOWNLOAD_BYTES = 16 << 30  # larger than any task's file; a bigger download is a wrong or hostile URL
MAX_MEMBER_BYTES = 4 << 30  # an archive member is read into memory
# A task file is read and parsed in memory (about 5x its size at peak): larger than any task's file
# (the biggest, AAV's and meltome's CSVs, are tens of MB), so a bigger one is the wrong file
MAX_FILE_BYTES = 512 << 20
unverified_reads: set[str] = set()  # unverified files read by this process; a run's record lists them
# "kind:hex" of each task file a load verified since forget_hashes(), by path: a run's record keeps them
read_digests: dict[str, str] = {}
_hashed: dict[str, str] = {}  # (kind, files' size and mtime) -> digest read from the content since forget_hashes()


def unverified_allowed() -> bool:
    return os.environ.get(ALLOW_UNVERIFIED, "") not in ("", "0")
RACY_NS = 2_000_000_000  # files modified more recently than this are hashed every time (see stamped_digest)


def forget_hashes() -> None:
    """Make the next digest of every file read its content again: each run verifies its inputs at
    least once, since an edit that keeps a file's size and restores its mtime fools any stamp."""
    _hashed.clear()
    read_digests.clear()



def default_data_dir() -> Path:
    """Where task data lives unless ``--data-dir`` says otherwise."""
    return Path(os.environ.get("PLM_BENCH_DATA", Path.home() / ".cache" / "plm-bench" / "data"))


@dataclass(frozen=True)
class Source:
    """One upstream file (or folder of files, or member of an archive) a task reads.

    ``role`` tells the format parser what the file holds; ``splits`` which splits need it.
    Several sources may name the same archive ``file`` with different ``member`` s.
    """

    file: str
    url: str = ""
    sha256: str = ""
    git_blob: str = ""
    git_tree: str = ""
    members: tuple[str, ...] = ()  # a folder source: the file names it holds
    member: str = ""  # a member of the zip or tar archive ``file``
    role: str = "data"
    splits: tuple[str, ...] = SPLITS

    @classmethod
    def parse(cls, entry: dict, where: str, local: bool = False) -> Source:
        """A source from its TOML table; ``where`` names the definition in errors. ``local``
        sources (a custom task's own files, never written by the harness) may be any path."""
        known = {"file", "url", "sha256", "git_blob", "git_tree", "members", "member", "role", "splits", "split"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise BenchError(f"{where}: source keys {unknown} are unknown; use {sorted(known)}")
        if "file" not in entry:
            raise BenchError(f"{where}: a source lacks `file`; name the upstream file")
        splits = (entry["split"],) if "split" in entry else tuple(entry.get("splits", SPLITS))
        if not set(splits) <= set(SPLITS):
            raise BenchError(f"{where}: source {entry['file']} feeds splits {splits}; use {SPLITS}")
        source = cls(
            file=entry["file"] if local else safe_relative(entry["file"].rstrip("/"), where), url=entry.get("url", ""),
            sha256=entry.get("sha256", "").lower(), git_blob=entry.get("git_blob", "").lower(),
            git_tree=entry.get("git_tree", "").lower(),
            members=tuple(safe_relative(m, where) for m in entry.get("members", ())),
            member=safe_relative(entry["member"], where) if "member" in entry else "",
            role=entry.get("role", "data"), splits=splits,
        )
        for kind, length in HEX.items():
            value = getattr(source, kind)
            if value and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise BenchError(f"{where}: {kind} of {source.file} must be {length} hex digits, not {value!r}")
        if any("/" in m for m in source.members):
            raise BenchError(f"{where}: {source.file}: folder members are plain file names (a flat folder)")
        if bool(source.members) != bool(source.git_tree) or (source.members and (source.sha256 or source.git_blob)):
            raise BenchError(f"{where}: {source.file}: a folder source has `members` and a `git_tree` "
                             "checksum; a file source has `sha256` or `git_blob`")
        return source

    @property
    def name(self) -> str:
        """The file, or ``archive:member``, for messages."""
        return f"{self.file}:{self.member}" if self.member else self.file

    @property
    def checksum(self) -> str:
        return self.sha256 or self.git_blob or self.git_tree

    def download_key(self) -> tuple:
        """What identifies the download unit (members of one archive share it)."""
        return (self.file, self.url, self.sha256, self.git_blob, self.git_tree, self.members)


def safe_relative(name: str, where: str) -> str:
    """``name`` if it is a plain relative path (no ``..``, not absolute): no file may land
    outside its task folder, whatever a definition or an archive says."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or name.startswith("~"):
        raise BenchError(f"{where}: {name!r} must be a relative path inside the task folder (no '..')")
    return str(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_of(path: Path) -> str:
    """The id git gives the file's content, as PROVENANCE.md files list for upstream files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_tree_of(folder: Path, members: Iterable[str]) -> str:
    """The git tree id of a flat folder holding exactly ``members`` (regular files)."""
    entries = b"".join(
        b"100644 " + name.encode() + b"\0" + bytes.fromhex(git_blob_of(folder / name))
        for name in sorted(members)
    )
    return hashlib.sha1(f"tree {len(entries)}\0".encode() + entries).hexdigest()


def status(path: Path, source: Source) -> str:
    """``present`` (checksum verified), ``unverified`` (no published checksum), ``missing``
    or ``corrupt``. A file verified earlier in this run and unchanged since (same size and mtime)
    is not hashed again: see :func:`stamped_digest`."""
    if source.members:
        if not path.is_dir() or any(not (path / m).is_file() for m in source.members):
            return "missing"
        files = [path / m for m in sorted(source.members)]
        digest = stamped_digest(files, "git_tree", lambda: git_tree_of(path, source.members))
        return "present" if digest == source.git_tree else "corrupt"
    if not path.is_file():
        return "missing"
    if source.sha256:
        return "present" if stamped_digest([path], "sha256", lambda: sha256_of(path)) == source.sha256 else "corrupt"
    if source.git_blob:
        return "present" if stamped_digest([path], "git_blob", lambda: git_blob_of(path)) == source.git_blob \
            else "corrupt"
    return "unverified"


def stamped_digest(files: list[Path], kind: str, compute: Callable[[], str]) -> str:
    """``compute()``, the ``kind`` digest of ``files``, computed from their content once per run
    (:func:`forget_hashes`) and remembered for the rest of it while each file's size and mtime stay
    as they were (hashing a large archive costs seconds, and a run checks its files more than once).

    Never remembered across runs: a stamp on disk would be fooled by an edit that keeps the size
    and restores the mtime. Files modified in the last ``RACY_NS`` are not remembered at all, since
    a write within the same timestamp tick would leave size and mtime as they were.
    """
    facts = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = json.dumps([kind, facts])
    if key in _hashed:
        return _hashed[key]
    digest = compute()
    if time.time_ns() - max(mtime for _, _, mtime in facts) >= RACY_NS:
        _hashed[key] = digest  # could still change within its mtime's tick, unseen (git's "racy" files)
    return digest


def content_digest(path: Path, source: Source) -> str:
    """``kind:hex`` of the local copy of ``source`` as it is now: its checksum's kind (sha256 for a
    file without one, such as a custom task's own), read from the content once per run."""
    if source.members:
        files = [path / m for m in sorted(source.members)]
        return "git_tree:" + stamped_digest(files, "git_tree", lambda: git_tree_of(path, source.members))
    if source.git_blob:
        return "git_blob:" + stamped_digest([path], "git_blob", lambda: git_blob_of(path))
    return "sha256:" + stamped_digest([path], "sha256", lambda: sha256_of(path))


def how_to_supply(task: str, source: Source, path: Path) -> str:
    if not source.url:
        return f"put the file at {path} (task {task} names no upstream URL for it)"
    return (f"run `bench data fetch {task}` (downloads {source.url}), or put the file at {path} yourself, "
            f"or point --data-dir at a folder laid out <task folder>/<file>")


def missing(path: Path, task: str, source: Source) -> BenchError:
    return BenchError(f"{path} is missing (task {task}): {how_to_supply(task, source, path)}")


def verified_path(data_dir: Path, folder: str, task: str, source: Source) -> Path:
    """The local copy of ``source``, verified; otherwise one error saying how to supply it."""
    path = Path(data_dir) / folder / source.file
    state = status(path, source)
    if state == "missing":
        raise missing(path, task, source)
    if state == "corrupt":
        raise BenchError(f"{path} is corrupt (its checksum differs from task {task}'s definition): delete it "
                         f"and {how_to_supply(task, source, path)}")
    return path


def read_bytes(data_dir: Path, folder: str, task: str, source: Source, name: str = "", local: bool = False) -> bytes:
    """Content of a file source, of its archive ``member``, or of ``name`` in a folder source.
    A file without a checksum needs ``--allow-unverified`` unless it is ``local`` (a custom task's)."""
    path = verified_path(data_dir, folder, task, source)
    if not source.checksum and not local:
        if not unverified_allowed():
            raise BenchError(f"{path}: task {task}'s definition gives no checksum for it, so it cannot be verified; "
                             "pass --allow-unverified to use it anyway (the run record lists it)")
        unverified_reads.add(str(path))
    if source.members:
        if name not in source.members:
            raise BenchError(f"{path}: {name!r} is not among the folder's members")
        return bounded_read(path / name)
    if not source.member:
        return bounded_read(path)
    return read_member(path, source.member)


def bounded_read(path: Path) -> bytes:
    """The file's bytes, or one error when it is larger than ``MAX_FILE_BYTES`` (it is parsed in memory)."""
    size, limit = path.stat().st_size, MAX_FILE_BYTES
    if size > limit:
        raise BenchError(f"{path}: {size / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB a task or "
                         "sequence file may hold (it is parsed in memory); is it the right file? Split it if so")
    return path.read_bytes()


def read_member(path: Path, member: str) -> bytes:
    """One member of a zip or tar archive, read in memory; a truncated or damaged archive is
    one error naming it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                check_size(path, member, archive.getinfo(member).file_size)
                return archive.read(member)
        with tarfile.open(path) as archive:
            info = archive.getmember(member)
            if not info.isfile():
                raise BenchError(f"{path}: member {member} is not a regular file (links are not followed)")
            check_size(path, member, info.size)
            handle = archive.extractfile(info)
            assert handle is not None  # regular files always have content
            return handle.read()
    except KeyError:
        raise BenchError(f"{path}: the archive has no member {member}; is it the right file?") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read member {member}, the archive is truncated or damaged ({exc}); "
                         "delete it and fetch it again") from None


def check_size(path: Path, member: str, size: int) -> None:
    if size > MAX_MEMBER_BYTES:
        raise BenchError(f"{path}: member {member} unpacks to {size / 2**30:.1f} GiB, more than the "
                         f"{MAX_MEMBER_BYTES / 2**30:.1f} GiB read into memory; is it the right archive?")


def is_url(location: str) -> bool:
    return "://" in location


def join_location(base: str, *parts: str) -> str:
    """``base/part/...`` for a directory or a URL (URL parts percent-encoded)."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *(urllib.parse.quote(p) for p in parts)])
    return str(Path(base).joinpath(*parts))


def download(location: str, destination: Path) -> None:
    """Copy ``location`` (URL or local path) to ``destination``, at most :data:`MAX_DOWNLOAD_BYTES`;
    errors name the location."""
    try:
        with (urllib.request.urlopen(location, timeout=TIMEOUT_S) if is_url(location) else open(location, "rb")
              ) as response, open(destination, "wb") as out:
            copied = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                copied += len(block)
                if copied > MAX_DOWNLOAD_BYTES:
                    raise BenchError(f"cannot download {location}: larger than {MAX_DOWNLOAD_BYTES / 2**30:.1f} GiB, "
                                     "more than any task file; is the URL or mirror right?")
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BenchError(f"cannot download {location} ({exc})") from None


@dataclass(frozen=True)
class Fetched:
    """Outcome of fetching one source: ``ok`` says whether a verified copy is in place."""

    source: Source
    path: Path
    ok: bool
    message: str


def fetch(folder: str, sources: Iterable[Source], cache: Path, mirror: str | None = None,
          force: bool = False) -> list[Fetched]:
    """Bring each download unit of ``sources`` into ``cache/<folder>/``: keep a verified copy,
    else try the mirror (same layout), then the upstream URL; a copy whose checksum differs
    is deleted, never renamed into place. A source without a checksum is fetched only with
    ``--allow-unverified``."""
    outcomes = []
    seen = set()
    for source in sources:
        if source.download_key() in seen:
            continue
        seen.add(source.download_key())
        outcomes.append(fetch_one(folder, source, Path(cache), mirror, force))
    return outcomes


def fetch_one(folder: str, source: Source, cache: Path, mirror: str | None, force: bool) -> Fetched:
    target = cache / folder / source.file
    if not source.checksum and not unverified_allowed():
        return Fetched(source, target, False, f"{source.file} has no checksum in the task definition: not fetched "
                                              "(pass --allow-unverified to take it unchecked)")
    if not force and status(target, source) in ("present", "unverified"):
        return Fetched(source, target, True, "already present")
    locations = [join_location(mirror, folder, source.file)] if mirror else []
    locations += [source.url] if source.url else []
    if not locations:
        return Fetched(source, target, False, f"{target} is missing and {source.file} has no URL: put it there")
    problems = []
    for location in locations:
        try:
            verified = place_folder(location, source, target) if source.members else place_file(location, source,
                                                                                                 target)
        except BenchError as exc:
            problems.append(str(exc))
            continue
        return Fetched(source, target, True, f"{'fetched' if verified else 'fetched, unverified'} from {location}")
    return Fetched(source, target, False, f"{target} could not be fetched: {'; '.join(problems)}; "
                                          "download it yourself into that folder, or use --mirror DIR|URL")


def place_file(location: str, source: Source, target: Path) -> bool:
    """Download to a temporary file beside ``target``, verify, rename into place (atomic)."""
    with atomic_file(target) as replacement:
        download(location, replacement.path)
        if status(replacement.path, source) == "corrupt":
            raise BenchError(f"{location} differs from the checksum in the task definition: rejected, not cached")
    return bool(source.checksum)


def place_folder(location: str, source: Source, target: Path) -> bool:
    """A folder source: download every member into a temporary folder beside ``target``,
    verify its git tree id, then rename the folder into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        for member in source.members:
            download(join_location(location, member), temporary / member)
        temporary.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
        if git_tree_of(temporary, source.members) != source.git_tree:
            raise BenchError(f"{location} differs from the checksum in the task definition: rejected, not cached")
        for _ in range(3):  # directories cannot be replaced atomically: retry against concurrent workers
            if status(target, source) == "present":  # a verified copy (maybe a concurrent worker's) is there
                return True
            try:
                if target.exists():  # a corrupt or partial copy: move it aside, then delete it
                    stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".stale"))
                    try:
                        os.replace(target, stale / "old")
                    finally:
                        shutil.rmtree(stale, ignore_errors=True)
                os.replace(temporary, target)
                return True
            except OSError:  # another worker moved or placed a copy in between
                continue
        raise BenchError(f"{target}: could not be put in place (other processes keep replacing it)")
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def readable_text(content: bytes, where: str) -> str:
    """UTF-8 text of a source file; anything else is one error naming the file."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchError(f"{where}: not UTF-8 text ({exc}); is it the right file?") from None

