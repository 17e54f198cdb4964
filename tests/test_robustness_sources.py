"""Issue 14, item 9: when the checksummed form of a task could not be fetched, ``data fetch``
quietly took an unchecksummed file (a fake one from a mirror ran as the real task); downloads
and archive members had no size cap."""

from __future__ import annotations

import pytest
from robustness import (
    bench,
    clean_environment,  # noqa: F401  (the autouse fixture)
    row_count,
)

from plm_bench import plugins
from plm_bench.errors import BenchError
from plm_bench.results.store import Store
from plm_bench.tasks import sources


def fake_gfp(folder, data_dir) -> None:
    """GFP's layout: its checksummed valid.csv (the real one) and made-up train/test files,
    which the definition gives no checksum for."""
    (folder / "fluorescence").mkdir(parents=True)
    (folder / "fluorescence" / "valid.csv").write_bytes((data_dir / "fluorescence" / "valid.csv").read_bytes())
    rows = "".join(f"ACDEFGHIK{'A' * (i % 5)},{i % 5}\n" for i in range(40))
    for split in ("train", "test"):
        (folder / "fluorescence" / f"{split}.csv").write_text("seq,label\n" + rows)


def test_fetch_refuses_files_without_a_checksum_unless_allowed(tmp_path, data_dir):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    fake_gfp(mirror, data_dir)
    refused = bench("data", "fetch", "gfp", "--mirror", mirror, "--data-dir", cache)
    assert refused.exit_code == 2
    assert "train.csv has no checksum in the task definition: not fetched (pass --allow-unverified" in \
        " ".join(refused.output.split()).replace("│ ", "").replace(" │", "")
    assert not (cache / "fluorescence" / "train.csv").exists()
    assert not (cache / "fluorescence" / "fluorescence.tar.gz").exists()  # nor the unchecksummed second form
    allowed = bench("data", "fetch", "gfp", "--mirror", mirror, "--data-dir", cache, "--allow-unverified")
    assert allowed.exit_code == 0, allowed.output
    assert (cache / "fluorescence" / "train.csv").read_bytes() == (mirror / "fluorescence" / "train.csv").read_bytes()


def test_a_run_reads_unverified_files_only_when_allowed_and_its_record_lists_them(tmp_path, data_dir):
    fake_gfp(tmp_path / "data", data_dir)
    store = tmp_path / "s.sqlite"
    args = ("run", "--backbone", "onehot", "--task", "gfp", "--epochs", "1", "--limit-eval", "24", "--device", "cpu",
            "--data-dir", tmp_path / "data", "--store", store)
    refused = bench(*args)
    assert refused.exit_code == 2 and row_count(store, "finished") == 0  # the driver keeps the failed run's row
    assert refused.output.strip().endswith("task gfp's definition gives no checksum for it, so it cannot be "
                                           "verified; pass --allow-unverified to use it anyway (the run record "
                                           "lists it)")
    allowed = bench(*args, "--allow-unverified")
    assert allowed.exit_code == 0, allowed.output
    record = Store(store, read_only=True).records()[0]
    folder = tmp_path / "data" / "fluorescence"
    assert record["unverified_data"] == [str(folder / "test.csv"), str(folder / "train.csv")]


def test_downloads_are_capped(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(sources, "MAX_DOWNLOAD_BYTES", 1000)
    result = bench("data", "fetch", "gb1", "--mirror", data_dir, "--data-dir", tmp_path / "cache")
    assert result.exit_code == 2
    assert "larger than 0.0 GiB, more than any task file" in " ".join(result.output.split()).replace("│ ", "")
    assert not (tmp_path / "cache" / "gb1" / "splits.zip").exists()
    assert not list((tmp_path / "cache" / "gb1").iterdir())  # no partial download left


def test_archive_members_read_into_memory_are_capped(data_dir, monkeypatch):
    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(BenchError, match=r"member splits/three_vs_rest.csv unpacks to .* GiB, more than the 0.0 GiB"):
        plugins.get("task", "gb1").load(data_dir)
