"""Where the shipped data files live, in a checkout and in an installed wheel alike.

``registry.toml`` and ``tasks/`` sit at the top of the repository (where people browse them);
packaging maps them to the import names ``plm_bench_registry`` and ``plm_bench_tasks``.
"""

import importlib.util
import os
from pathlib import Path

from plm_bench.errors import BenchError

CACHE_ENV = "PLM_BENCH_CACHE"


def cache_root() -> Path:
    """Where plm-bench keeps what it can recompute (embeddings, verified-file stamps):
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
