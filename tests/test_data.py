"""The data layer: checksums, `bench data fetch` through the real download path (the mirror
served over HTTP on 127.0.0.1), rejection of corrupted copies, atomic placement, `bench data list`."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import common as cli
from plm_bench.cli import main
from plm_bench.tasks import sources as data
from plm_bench.tasks.task import SPLITS


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on 127.0.0.1 (a free port), in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def offline(monkeypatch):
    """Upstream URLs are unreachable (as on CI): only 127.0.0.1 and local paths download."""
    real = data.download

    def download(location: str, destination: Path) -> None:
        if data.is_url(location) and not location.startswith("http://127.0.0.1:"):
            raise data.BenchError(f"cannot download {location} (offline test)")
        real(location, destination)

    monkeypatch.setattr(data, "download", download)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables on one line per row, so assertions can read them."""
    monkeypatch.setattr(cli.console, "width", 400)


def bench(*args: str):
    return CliRunner().invoke(main, [*args], catch_exceptions=False, terminal_width=400)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".part", ".tmp", ".stale"))]


def test_checksums_identify_the_upstream_files(data_dir):
    # git blob ids as PROVENANCE.md lists them for the upstream repositories' files
    assert data.git_blob_of(data_dir / "gb1/splits.zip") == "5086ae0e4a5f397672feb39b04d71fe8f5d34ae9"
    assert data.git_blob_of(data_dir / "secondary_structure/splits.zip") == "858054a3ee8a214bbbdccca03e1165f648ee6eb1"
    assert data.git_blob_of(data_dir / "disorder/datasets/CheZOD117_test_set_sequences.fasta").startswith("c8417ca3")
    scores = next(s for f in plugins.get("task", "disorder").forms for s in f.sources if s.members)
    assert data.git_tree_of(data_dir / "disorder" / scores.file, scores.members) == scores.git_tree
    assert scores.git_tree.startswith("9b8008f4")  # the tree id in PROVENANCE.md
    gb1 = plugins.get("task", "gb1").forms[0].sources[0]
    assert data.status(data_dir / "gb1/splits.zip", gb1) == "present"
    blob_only = data.Source(file="splits.zip", git_blob="5086ae0e4a5f397672feb39b04d71fe8f5d34ae9")
    assert data.status(data_dir / "gb1/splits.zip", blob_only) == "present"


def test_fetch_over_http_downloads_verifies_and_caches(data_dir, tmp_path, offline):
    cache = tmp_path / "cache"
    tasks = ["gb1", "disorder", "secondary_structure", "stability"]
    with serve(data_dir) as url:
        result = bench("data", "fetch", *tasks, "--mirror", url, "--data-dir", str(cache))
        assert result.exit_code == 0, result.output
        assert f"fetched from {url}/disorder/datasets/CheZOD117_test_set_CheZOD_scores" in result.output
        again = bench("data", "fetch", "gb1", "--mirror", url, "--data-dir", str(cache))
    assert "already present" in again.output
    assert not leftovers(cache)
    assert len(list((cache / "disorder/datasets/CheZOD117_test_set_CheZOD_scores").iterdir())) == 117
    assert not (cache / "stability/stability.tar.gz").exists()  # the first form was complete
    listing = bench("data", "list", *tasks, "--data-dir", str(cache))
    assert "2691 / 299 / 5743" in listing.output and "1056 / 118 / 117" in listing.output
    assert "9712 / 1080 / 364" in listing.output and "53614 / 2512 / 12851" in listing.output
    splits = plugins.get("task", "disorder").load(cache)
    assert [len(splits[s]) for s in SPLITS] == [1056, 118, 117]


def test_a_corrupted_copy_is_rejected_and_not_cached(data_dir, tmp_path, offline):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_dir / "gb1", mirror / "gb1")
    shutil.copytree(data_dir / "disorder", mirror / "disorder")
    archive = bytearray((mirror / "gb1/splits.zip").read_bytes())
    archive[len(archive) // 2] ^= 0x01
    (mirror / "gb1/splits.zip").write_bytes(archive)
    with (mirror / "disorder/datasets/CheZOD117_test_set_CheZOD_scores/zscores1128.txt").open("a") as handle:
        handle.write("X 999 0.0\n")
    cache = tmp_path / "cache"
    with serve(mirror) as url:
        result = bench("data", "fetch", "gb1", "disorder", "--mirror", url, "--data-dir", str(cache))
    assert result.exit_code == 2
    rejected = f"{url}/gb1/splits.zip differs from the checksum in the task definition: rejected, not cached"
    assert rejected in result.output
    assert "incomplete: gb1, disorder" in result.output
    assert not (cache / "gb1/splits.zip").exists()
    assert not (cache / "disorder/datasets/CheZOD117_test_set_CheZOD_scores").exists()
    assert (cache / "disorder/datasets/CheZOD117_test_set_sequences.fasta").is_file()  # intact files are kept
    assert not leftovers(cache)


def test_mirror_directory_from_the_environment_and_partial_tasks(data_dir, tmp_path, offline, monkeypatch):
    monkeypatch.setenv("PLM_BENCH_MIRROR", str(data_dir))
    monkeypatch.setenv("PLM_BENCH_ALLOW_UNVERIFIED", "0")  # restored after the flag below sets it
    cache = tmp_path / "cache"
    result = bench("data", "fetch", "gfp", "--data-dir", str(cache), "--allow-unverified")  # train.csv has no sha256
    assert result.exit_code == 2
    assert (cache / "fluorescence/valid.csv").is_file()
    assert "fluorescence/train.csv could not be fetched" in result.output
    assert "raw.githubusercontent.com/ZHymLumine/ProtHyena" in result.output  # the upstream URL it tried
    listing = bench("data", "list", "gfp", "--data-dir", str(cache))
    assert "— / 5362 / —" in listing.output and "missing" in listing.output


def test_list_reports_present_missing_and_corrupt(data_dir, tmp_path):
    folder = tmp_path / "data"
    (folder / "gb1").mkdir(parents=True)
    (folder / "gb1/splits.zip").write_bytes((data_dir / "gb1/splits.zip").read_bytes()[:-10])
    listing = bench("data", "list", "gb1", "aav", "--data-dir", str(folder))
    assert "corrupt" in listing.output and "missing" in listing.output
    assert "is corrupt" in listing.output  # the record count cell says why there are none
    full = bench("data", "list", "--data-dir", str(data_dir))
    for line in ("gb1", "aav", "gfp", "meltome", "subcellular_location", "disorder", "secondary_structure",
                 "stability"):
        assert line in full.output
    assert "— / 1678 / 490" in full.output


def test_refetch_replaces_a_corrupt_cached_copy(data_dir, tmp_path, offline):
    cache = tmp_path / "cache"
    (cache / "gb1").mkdir(parents=True)
    (cache / "gb1/splits.zip").write_bytes(b"not a zip")
    result = bench("data", "fetch", "gb1", "--mirror", str(data_dir), "--data-dir", str(cache))
    assert result.exit_code == 0, result.output
    source = plugins.get("task", "gb1").forms[0].sources[0]
    assert data.status(cache / "gb1/splits.zip", source) == "present"


def test_concurrent_fetches_of_one_file_never_expose_a_partial_copy(data_dir, tmp_path):
    sources = plugins.get("task", "disorder").forms[0].sources
    cache = tmp_path / "cache"

    def fetch_all(_):
        return data.fetch("disorder", sources, cache, mirror=str(data_dir), force=True)

    with ThreadPoolExecutor(4) as pool:
        outcomes = [o for batch in pool.map(fetch_all, range(4)) for o in batch]
    assert all(o.ok for o in outcomes), [o.message for o in outcomes if not o.ok]
    assert all(data.status(cache / "disorder" / s.file, s) == "present" for s in sources)
    assert not leftovers(cache)


def test_bench_run_on_a_task_with_absent_data_is_one_line(data_dir, tmp_path):
    result = CliRunner().invoke(main, ["run", "--backbone", "onehot", "--task", "aav", "--data-dir", str(data_dir),
                                       "--store", str(tmp_path / "s.sqlite")], terminal_width=1000)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "aav/splits.zip is missing" in lines[0]
    assert "https://github.com/J-SNACKKB/FLIP/raw/" in lines[0] and "bench data fetch aav" in lines[0]
