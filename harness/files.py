"""Files: where the shipped data files live (in a checkout and in an installed wheel alike), the
cache root, and the one way plm-bench writes a file others may read (:func:`atomic_file`).

``registry.toml`` and ``tasks/`` sit at the top of the repository (where people browse them);
packaging maps them to the import names ``plm_bench_registry`` and ``plm_bench_tasks``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plm_bench.errors import BenchError

CACHE_ENV = "PLM_BENCH_CACHE"


def cache_root() -> Path:
    """Where plm-bench keeps what it can recompute (embeddings, identities):
    ``$PLM_BENCH_CACHE``, else ``~/.cache/plm-bench``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "plm-bench"


def shipped_file(package: str, name: str) -> Path:
    """Path of data file ``name`` shipped under the import name ``package``."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / name
        if candidate.exists():
            return candidate
    raise BenchError(f"{name} not found in package {package}: reinstall plm-bench")


def registry_path() -> Path:
    return shipped_file("plm_bench_registry", "registry.toml")


def task_definition_path(name: str) -> Path:
    return shipped_file("plm_bench_tasks", name)


def load_toml(path: Path) -> dict:
    """Parse a TOML file, naming the file in the error."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"{path}: cannot read TOML ({exc}); fix the file") from None


def registry() -> dict:
    return load_toml(registry_path())


class Replacement:
    """The temporary file of :func:`atomic_file`; ``target`` may be changed inside the block
    (e.g. to a name made from the content's digest)."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target


@contextmanager
def atomic_file(target: Path, prefix: str | None = None, mode: int = 0o666) -> Iterator[Replacement]:
    """A temporary file beside ``target`` that replaces it only when the block succeeds.

    Readers never see a partial file (``os.replace`` is atomic within a file system) and a
    failed or interrupted block (an exception, SIGTERM unwinding) leaves no temporary behind.
    The file gets ``mode`` less the umask (``mkstemp`` makes it private; stores and caches are
    shared). ``prefix`` names the temporary (default ``.<target name>.``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=prefix or f".{target.name}.", suffix=".tmp")
    os.close(handle)
    replacement = Replacement(Path(temporary), target)
    try:
        yield replacement
        replacement.path.chmod(mode & ~current_umask())
        os.replace(replacement.path, replacement.target)
    finally:
        replacement.path.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
