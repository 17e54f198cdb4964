"""What names an embedding file in a run's config: its kind (by suffix) and its content identity.

Apart from :mod:`plm_bench.models.embedding_files` (which computes and reads embeddings, and so
imports the run machinery) because resolving a config needs only this: keeping it here keeps
``config`` free of an import cycle through the run modules.
"""

from __future__ import annotations

from pathlib import Path

from plm_bench.errors import BenchError

SUFFIXES = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}
DIGEST = "#sha256="  # between the path and the content digest in a run's ``embeddings`` setting


def file_kind(path: Path) -> str:
    """``npz`` or ``h5`` by the suffix, or one line naming the suffixes."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise BenchError(f"{path}: write .npz, .h5 or .hdf5 (the suffix picks the format)")
    return kind


def identified(value: str) -> str:
    """``value`` (a path, or a stored ``PATH#sha256=HEX``) as ``ABSOLUTE_PATH#sha256=HEX`` of the
    file as it is now: the digest goes into the run's config, so a rewritten file is a new run,
    never a silently stale one, and rerunning a stored config whose file changed is refused."""
    from plm_bench.tasks.sources import sha256_of, stamped_digest

    given, _, expected = value.partition(DIGEST)
    path = Path(given).resolve()
    file_kind(path)
    if not path.is_file():
        raise BenchError(f"{given}: no such embedding file (--embeddings)")

    actual = stamped_digest([path], "sha256", lambda: sha256_of(path))
    if expected and expected != actual:
        raise BenchError(f"{path} changed since the run that read it (sha256 {expected[:12]}…, now {actual[:12]}…); "
                         "pass the path alone to run on the file as it is")
    return f"{path}{DIGEST}{actual}"


def path_of(value: str) -> Path:
    """The file of an ``--embeddings`` value (with or without its digest)."""
    return Path(value.partition(DIGEST)[0])
