"""Task source files: find them in the data folder (``<data-dir>/<task>/<file>``) and verify.

A missing or corrupt file is one error naming the file, its upstream URL and how to supply it.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from plm_bench.errors import BenchError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_path(data_dir: Path, task: str, source: dict) -> Path:
    """The verified local copy of one source file of ``task``."""
    path = Path(data_dir) / task / source["file"]
    if not path.is_file():
        raise BenchError(
            f"{path} is missing: download {source.get('url', source['file'])} into "
            f"{path.parent}/ or point --data-dir at a mirror laid out <task>/<file>"
        )
    expected = source.get("sha256")
    if expected and sha256_of(path) != expected:
        raise BenchError(f"{path} is corrupt (sha256 differs from the task definition): "
                         f"delete it and download {source.get('url', source['file'])} again")
    return path


def read_source_text(data_dir: Path, task: str, source: dict) -> str:
    """Text of a source file, or of its ``member`` inside a zip archive."""
    path = source_path(data_dir, task, source)
    if "member" not in source:
        return path.read_text()
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(source["member"]).decode()
    except (zipfile.BadZipFile, KeyError) as exc:
        raise BenchError(f"{path}: cannot read member {source['member']} ({exc})") from None
