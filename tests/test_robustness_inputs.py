"""A fuzz and fault suite of a robustness campaign (issue 24): what a careless user or an
attacker does to the inputs and the store of finished runs. Each case once gave a stale, lost or
silently altered result; each must now rerun, refuse in one line, or keep what was finished.

Content identity: an edit that keeps a file's size and puts its mtime back (what a careful
attacker, a restore from backup or ``cp -p`` does) must never leave a result "already done".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from robustness import bench, clean_environment, quick_run, row_count, task_csv, write_task  # noqa: F401

from plm_bench.results.store import Store


def same_size_edit(path: Path, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (same length) in ``path`` and put its mtime back."""
    assert len(old) == len(new)
    stat = path.stat()
    content = path.read_bytes()
    assert old in content
    path.write_bytes(content.replace(old, new, 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def aged(*paths: Path) -> None:
    """Files as a user's data are: older than the racy window (a stamp would trust them)."""
    for path in paths:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 60 * 10**9))


def finished(store: Path) -> list[dict]:
    results = Store(store, read_only=True)
    try:
        return results.records()
    finally:
        results.close()


def test_a_same_size_edit_of_a_custom_task_csv_reruns(tmp_path):
    task = write_task(tmp_path / "task")
    aged(tmp_path / "task" / "data.csv", task)
    store = tmp_path / "r.sqlite"
    assert quick_run(task, store).exit_code == 0
    data = (tmp_path / "task" / "data.csv").read_text()
    label = data.splitlines()[1].rsplit(",", 2)[1]
    edited = f",{(int(label) + 1) % 10},train"
    same_size_edit(tmp_path / "task" / "data.csv", f",{label},train".encode(), edited.encode())
    again = quick_run(task, store)
    assert again.exit_code == 0, again.output
    assert "already done" not in again.output
    assert len(finished(store)) == 2  # a new task identity (its name carries the content digest)


def test_a_same_size_edit_of_a_builtin_task_file_is_refused_never_already_done(tmp_path, data_dir):
    mirror = tmp_path / "data"
    shutil.copytree(data_dir / "stability", mirror / "stability")
    aged(*(mirror / "stability").iterdir())
    store = tmp_path / "r.sqlite"
    args = ("run", "--backbone", "onehot", "--task", "stability", "--epochs", "1", "--limit-train", "20",
            "--limit-eval", "10", "--store", store, "--device", "cpu", "--data-dir", mirror)
    first = bench(*args)
    assert first.exit_code == 0, first.output
    record = finished(store)[0]
    assert any(path.endswith("test.csv") and digest.startswith("sha256:")
               for path, digest in record["inputs"]["task"].items())
    moved = tmp_path / "moved"  # the same files under another --data-dir are the same inputs
    shutil.copytree(mirror, moved)
    assert "already done" in bench(*args[:-1], moved).output
    test_csv = mirror / "stability" / "test.csv"
    line = test_csv.read_text().splitlines()[1]
    digit = next(c for c in reversed(line) if c.isdigit())
    same_size_edit(test_csv, line.encode(), line[::-1].replace(digit, str((int(digit) + 1) % 10), 1)[::-1].encode())
    again = bench(*args)
    assert again.exit_code == 2 and "already done" not in again.output
    assert "test.csv is corrupt" in again.output and len(again.output.strip().splitlines()) == 1
    assert row_count(store) == 1 and row_count(store, "failed") == 0  # refused before anything was stored


def embedded_task(tmp_path):
    """A task and its records' one-hot embeddings as `bench embed` writes them (an .npz)."""
    task = write_task(tmp_path / "task")
    ids = [line.split(",")[:2] for line in task_csv().splitlines()[1:]]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s in ids))
    npz = tmp_path / "e.npz"
    assert bench("embed", "onehot", fasta, "-o", npz).exit_code == 0
    return task, npz


def test_a_same_size_edit_of_an_embeddings_file_reruns(tmp_path):
    task, npz = embedded_task(tmp_path)
    aged(npz, task, tmp_path / "task" / "data.csv")
    store = tmp_path / "r.sqlite"
    assert quick_run(task, store, "--embeddings", npz).exit_code == 0
    stat = npz.stat()
    with np.load(npz) as handle:
        arrays = {k: handle[k] for k in handle.files}
    arrays["p0"] = arrays["p0"][::-1].copy()  # same shape, other values
    np.savez(npz, **arrays)
    os.utime(npz, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert npz.stat().st_size == stat.st_size
    again = quick_run(task, store, "--embeddings", npz)
    assert again.exit_code == 0, again.output
    assert "already done" not in again.output and len(finished(store)) == 2


def test_weights_swapped_in_a_backbone_path_rerun(tmp_path, tiny_esm):
    weights = tmp_path / "esm"
    shutil.copytree(tiny_esm, weights)
    aged(*weights.iterdir())
    task = write_task(tmp_path / "task")
    store = tmp_path / "r.sqlite"
    args = ("--backbone", "esm2-8m", "--backbone-path", weights, "--seed", "1")
    first = quick_run(task, store, *args)
    assert first.exit_code == 0, first.output
    before = finished(store)[0]["inputs"]
    assert before["backbone_files"].startswith("sha256:") and before["weights"].startswith("blake2b:")
    safetensors = weights / "model.safetensors"
    tail = safetensors.read_bytes()[-4:]
    same_size_edit(safetensors, tail, np.float32(0.5).tobytes() if tail != np.float32(0.5).tobytes()
                   else np.float32(0.25).tobytes())
    again = quick_run(task, store, *args)
    assert again.exit_code == 0, again.output
    assert "already done" not in again.output and "--backbone-path files" in again.output
    after = finished(store)
    assert len(after) == 1  # the same config, rerun on the weights as they are now
    assert after[0]["inputs"]["weights"] != before["weights"]
    assert after[0]["inputs"]["backbone_files"] != before["backbone_files"]
    assert "already done" in quick_run(task, store, *args).output  # unchanged since: done


def test_inputs_changed_between_seeds_stop_the_run(tmp_path, monkeypatch, tiny_esm):
    """The first seed runs on the data as planned; the data changes; the next seed stops with one
    line instead of training on other data than its siblings. (Fine-tuning: a frozen condition's
    seeds read the data once and train together, so they cannot differ.)"""
    from plm_bench.run import protocol

    task = write_task(tmp_path / "task")
    aged(tmp_path / "task" / "data.csv", task)
    original = protocol.execute
    calls = []

    def edit_after_first(config, context):
        if calls:
            line = (tmp_path / "task" / "data.csv").read_text().splitlines()[1]
            same_size_edit(tmp_path / "task" / "data.csv", line.encode(), line.replace("p0,", "q0,").encode())
        calls.append(config.seed)
        return original(config, context)

    monkeypatch.setattr(protocol, "execute", edit_after_first)
    result = quick_run(task, tmp_path / "r.sqlite", "--seeds", "2", "--backbone", "esm2-8m", "--backbone-path",
                       tiny_esm, "--method", "full")
    assert calls == [1, 2] and result.exit_code == 2, result.output
    assert "changed since this command started" in result.output and "data.csv" in result.output
    assert row_count(tmp_path / "r.sqlite", "finished") == 1


def test_a_copied_cache_entry_of_the_same_shape_does_not_pass(tmp_path):
    """Two entries of one shape: copying one over the other is caught by its key-bound checksum."""
    import torch

    from plm_bench.models.embeddings import EmbeddingCache
    from plm_bench.tasks.task import Example

    cache = EmbeddingCache(torch.nn.Linear(1, 1), 2, {}, folder=tmp_path)

    def embed(value):
        return lambda examples: [torch.full((len(e.sequence), 2), value) for e in examples]

    a, b = [Example("a", "ACD", 0.0)], [Example("b", "EFG", 0.0)]
    cache.features(a, embed(1.0))
    cache.features(b, embed(2.0))
    shutil.copy(cache.path(a), cache.path(b))
    assert float(cache.features(b, embed(2.0))[0][0, 0]) == 2.0  # recomputed, not run A's numbers


def stability_mirror(tmp_path: Path, data_dir: Path) -> Path:
    mirror = tmp_path / "data"
    shutil.copytree(data_dir / "stability", mirror / "stability")
    aged(*(mirror / "stability").iterdir())
    return mirror


QUICK = ("--backbone", "onehot", "--task", "stability", "--epochs", "1", "--limit-train", "20", "--limit-eval", "10",
         "--device", "cpu")


@pytest.mark.parametrize("where", ["run", "grid"])
def test_a_forced_rerun_that_fails_keeps_the_finished_record(tmp_path, data_dir, where):
    mirror = stability_mirror(tmp_path, data_dir)
    store = tmp_path / "r.sqlite"
    assert bench("run", *QUICK, "--store", store, "--data-dir", mirror).exit_code == 0
    if where == "run":
        result = bench("run", *QUICK, "--store", store, "--force", "--data-dir", tmp_path / "nonexistent")
    else:
        grid = tmp_path / "grid.toml"
        grid.write_text('backbones = ["onehot"]\ntasks = ["stability"]\n[settings]\nepochs = 1\nlimit_train = 20\n'
                        'limit_eval = 10\n')
        result = bench("grid", grid, "--force", "--store", store, "--device", "cpu", "--data-dir",
                       tmp_path / "nonexistent")
    assert result.exit_code in (1, 2) and "is missing (task stability)" in result.output
    if where == "run":  # refused before anything was stored
        assert len(result.output.strip().splitlines()) == 1 and row_count(store) == 1
    # a grid's workers may see data this machine does not: its runs fail where they run, stored beside
    assert row_count(store, "finished") == 1
    assert "finished" in bench("runs", "--store", store).output


def test_a_failure_stored_after_a_finished_run_keeps_it(tmp_path, data_dir):
    """A rerun that fails inside the run (nothing a check before it could see) is stored beside
    the finished record, which stays the config's result until a rerun finishes."""
    from plm_bench.results import records
    from plm_bench.results.records import config_of

    mirror = stability_mirror(tmp_path, data_dir)
    store = tmp_path / "r.sqlite"
    assert bench("run", *QUICK, "--store", store, "--data-dir", mirror).exit_code == 0
    results = Store(store)
    done = results.finished(finished(store)[0]["config_hash"])
    results.add(records.failed(config_of(done), "out of memory", {}, "RuntimeError"))
    assert results.finished(done["config_hash"])["run_id"] == done["run_id"]
    assert [r["status"] for r in results.records(None)] == ["finished", "failed"]
    results.add({**done, "finished_at": records.now()})  # a rerun that finished replaces both
    assert [r["status"] for r in results.records(None)] == ["finished"]


def test_a_store_that_cannot_take_a_finished_record_keeps_it_journaled(tmp_path, data_dir, monkeypatch):
    """Disk full or a lock held too long at the store write: the finished record waits in
    .pending/, the message says so, and no failed record replaces it there or in the store."""
    import sqlite3

    from plm_bench.results import store as store_module

    mirror = stability_mirror(tmp_path, data_dir)
    store = tmp_path / "r.sqlite"
    args = ("run", *QUICK, "--store", store, "--data-dir", mirror)
    assert bench(*args).exit_code == 0
    monkeypatch.setattr(store_module, "WRITE_ATTEMPTS", 1)

    def locked(self, record, text):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store_module.Store, "_insert", locked)
    result = bench(*args, "--force")
    assert result.exit_code == 2 and "kept in" in result.output and "the run finished" in result.output
    journals = list((tmp_path / "r.pending").glob("*.json"))
    assert len(journals) == 1 and store_module.journaled_finished(journals[0])
    monkeypatch.undo()
    assert row_count(store, "failed") == 0
    Store(store).close()  # the next writer imports it
    assert not list((tmp_path / "r.pending").glob("*.json")) and row_count(store, "finished") == 1


# Checks before the run: a mistake is refused in one line and nothing is stored.

@pytest.mark.parametrize(("extra", "message"), [
    (("--seed", "-5"), "--seed -5: seeds run from 0 to 4294967295"),
    (("--backbone", "esm2-8m", "--method", "lora", "--method-option", "rank=0"), "option rank=0: expected int >= 1"),
    (("--method", "lora"), "backbone onehot has no weights, so method lora has no layers to put adapters on"),
    (("--method", "frozen", "--backbone-path", "."), "backbone onehot has no weights, so the folder would be"),
])
def test_a_setting_that_cannot_run_is_refused_before_anything_is_stored(tmp_path, extra, message):
    task = write_task(tmp_path / "task")
    store = tmp_path / "r.sqlite"
    result = quick_run(task, store, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert row_count(store) == 0


def test_lora_on_onehot_in_a_grid_is_skipped_at_plan_time(tmp_path, data_dir):
    grid = tmp_path / "grid.toml"
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\nmethods = ["lora"]\n')
    args = ("grid", grid, "--store", tmp_path / "r.sqlite", "--dry-run", "--data-dir", data_dir)
    result = bench(*args)
    assert result.exit_code == 2 and "nothing to run" in result.output
    assert "method lora × backbone onehot" in result.output
    grid.write_text('backbones = ["onehot"]\ntasks = ["gb1"]\nmethods = ["frozen", "lora"]\n')
    result = bench(*args)
    assert result.exit_code == 0, result.output
    assert "skipped: method lora × backbone onehot" in result.output and "1 runs in" in result.output


def test_a_fasta_with_a_repeated_id_is_refused_naming_both_records(tmp_path):
    toml = ('level = "protein"\ntype = "regression"\nmetric = "spearman"\nformat = "fasta"\nfile = "data.fasta"\n'
            '[split]\nvalid_fraction = 0.25\ntest_fraction = 0.25\n')
    records = "".join(f">p{i} label={i}\nACDEFGHIKL{'A' * i}\n" for i in range(12)) + ">p3 label=99\nKKKK\n"
    task = write_task(tmp_path / "task", toml, records, data_name="data.fasta")
    result = quick_run(task, tmp_path / "r.sqlite")
    assert result.exit_code == 2
    assert "id p3 appears twice (records at lines 7 and 25)" in result.output
    assert row_count(tmp_path / "r.sqlite") == 0


def test_bench_embed_writes_every_id_exactly_and_atomically(tmp_path):
    from plm_bench.models import embedding_files

    fasta = tmp_path / "in.fasta"
    fasta.write_text(">allow_pickle\nACDE\n>file\nKLMN\n>x\nPQRS\n")
    out = tmp_path / "e.npz"
    result = bench("embed", "onehot", fasta, "-o", out)
    assert result.exit_code == 0, result.output
    assert "wrote 3" in result.output and sorted(embedding_files.load(out)) == ["allow_pickle", "file", "x"]
    before = out.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import numpy

    original = numpy.lib.format.write_array
    numpy.lib.format.write_array = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            embedding_files.write(out, "npz", {"y": numpy.zeros(3)})
    finally:
        numpy.lib.format.write_array = original
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    unwritable = bench("embed", "onehot", fasta, "-o", tmp_path / "e.npz" / "sub.npz")
    assert unwritable.exit_code == 2 and "cannot write it" in unwritable.output
    assert len(unwritable.output.strip().splitlines()) == 1


def test_names_with_markup_print_as_written(tmp_path):
    toml = 'name = "[red]x"\n' + __import__("robustness").TASK_TOML
    task = write_task(tmp_path / "task", toml)
    store = tmp_path / "r.sqlite"
    assert quick_run(task, store, "--limit-seed", "3").exit_code == 0
    for command in (("leaderboard",), ("runs",), ("status",)):
        result = bench(*command, "--store", store)
        assert result.exit_code == 0 and "[red]x" in result.output, (command, result.output)
    result = bench("leaderboard", "--metric", "[/]", "--store", store)
    assert result.exit_code == 2 and "test metric '[/]'" in result.output
    report = tmp_path / "report.md"
    assert bench("report", "--store", store, "--format", "md", "-o", report).exit_code == 0
    assert "[red]x" in report.read_text()


def test_a_damaged_store_page_is_one_line_with_the_way_to_recover(tmp_path):
    task = write_task(tmp_path / "task")
    store = tmp_path / "r.sqlite"
    for seed in ("1", "2", "3"):
        assert quick_run(task, store, "--seed", seed).exit_code == 0
    import sqlite3

    with sqlite3.connect(store) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    content = bytearray(store.read_bytes())
    for number in range(1, pages):  # every page but the header's: b-tree headers no reader accepts
        content[number * page:number * page + 16] = b"\xff" * 16
    store.write_bytes(bytes(content))
    for command in (("leaderboard",), ("runs",)):
        result = bench(*command, "--store", store)
        assert result.exit_code == 2, (command, result.output)
        assert "the results store is damaged" in result.output and ".recover" in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = quick_run(task, store, "--seed", "1")
    assert result.exit_code == 2 and "the results store is damaged" in result.output


def test_an_undefined_secondary_correlation_is_left_out_never_zero():
    from plm_bench.tasks.metrics import evaluate
    from plm_bench.tasks.task import Example, Task

    task = Task(name="t", level="protein", type="regression", metric="spearman", secondary_metrics=("mse",),
                load=lambda *_: {})
    examples = [Example(f"p{i}", "A", 2.0) for i in range(4)]
    values = evaluate(task, examples, [np.float32(i) for i in range(4)])
    assert values == {"mse": pytest.approx((4 + 1 + 0 + 1) / 4)}


# Bounds: sizes the harness cannot handle are one line, before the memory is spent.

def test_a_task_file_over_the_size_bound_is_refused(tmp_path, monkeypatch):
    from plm_bench.tasks import sources

    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    task = write_task(tmp_path / "task")
    result = quick_run(task, tmp_path / "r.sqlite")
    assert result.exit_code == 2 and "MiB a task or sequence file may hold" in result.output
    assert row_count(tmp_path / "r.sqlite") == 0


def test_a_sequence_over_the_residue_bound_is_refused(tmp_path):
    from plm_bench.models.backbone import MAX_RESIDUES

    fasta = tmp_path / "long.fasta"
    fasta.write_text(">titan\n" + "A" * (MAX_RESIDUES + 1) + "\n")
    result = bench("embed", "onehot", fasta, "-o", tmp_path / "e.npz")
    assert result.exit_code == 2 and f"record titan has {MAX_RESIDUES + 1} residues" in result.output
    assert not (tmp_path / "e.npz").exists()


def test_per_residue_labels_longer_than_csvs_default_field_limit_parse(tmp_path):
    from plm_bench.tasks.loading import custom_task as task_from_file

    toml = ('level = "residue"\ntype = "regression"\nmetric = "spearman"\nformat = "csv"\nfile = "data.csv"\n'
            'split_column = "split"\nid_column = "id"\n')
    long = 30_000  # its labels take 150,000 characters, over csv's default limit of 131,072
    rows = [f"p{i},{'ACDE' * 3},{' '.join(['0.5'] * 12)},{s}" for i, s in enumerate(["train", "valid", "test"] * 2)]
    rows.append(f"big,{'A' * long},{' '.join(f'{i % 7}.25' for i in range(long))},train")
    task = write_task(tmp_path, toml, "id,sequence,label,split\n" + "\n".join(rows) + "\n")
    splits = task_from_file(task).load(tmp_path)
    assert len(splits["train"][-1].sequence) == long


def test_a_stored_record_changed_in_the_file_is_named_not_shown(tmp_path):
    """One digit changed inside the SQLite file: the reader names the run instead of showing 0.938 for 0.738."""
    import json
    import sqlite3

    task = write_task(tmp_path / "task")
    store = tmp_path / "r.sqlite"
    assert quick_run(task, store).exit_code == 0
    with sqlite3.connect(store) as db:
        (text,) = db.execute("SELECT record FROM runs").fetchone()
        record = json.loads(text)
        record["metrics"]["test"]["spearman"] = 0.938 if record["metrics"]["test"]["spearman"] != 0.938 else 0.5
        db.execute("UPDATE runs SET record = ?", (json.dumps(record, sort_keys=True),))
    result = bench("runs", "--store", store)
    assert "run 1 is not a valid record (it differs from what plm-bench stored" in result.output
    assert "0.938" not in result.output


# What used to be a traceback or raw exception text is one line naming the input.

def test_a_truncated_embeddings_file_is_one_line(tmp_path):
    task, npz = embedded_task(tmp_path)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    result = quick_run(task, tmp_path / "r.sqlite", "--embeddings", npz)
    assert result.exit_code == 2 and "cannot read the embeddings" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_empty_cache_entry_is_computed_again(tmp_path):
    import torch

    from plm_bench.models.embeddings import EmbeddingCache
    from plm_bench.tasks.task import Example

    cache = EmbeddingCache(torch.nn.Linear(1, 1), 2, {}, folder=tmp_path)
    examples = [Example("a", "ACD", 0.0)]
    cache.path(examples).write_bytes(b"")
    features = cache.features(examples, lambda chunk: [torch.ones(len(e.sequence), 2) for e in chunk])
    assert float(features[0][0, 0]) == 1.0 and cache.path(examples).stat().st_size > 0


def test_damaged_weights_in_a_backbone_path_are_one_line(tmp_path, tiny_esm):
    weights = tmp_path / "esm"
    shutil.copytree(tiny_esm, weights)
    (weights / "model.safetensors").write_bytes(b"\xff" * 64)
    result = quick_run(write_task(tmp_path / "task"), tmp_path / "r.sqlite", "--backbone", "esm2-8m",
                       "--backbone-path", weights)
    assert result.exit_code == 2 and f"{weights}: cannot load" in result.output
    assert "complete checkpoint" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_task_file_outside_the_task_folder_is_read_not_a_traceback(tmp_path):
    (tmp_path / "data.csv").write_text(task_csv())
    toml = __import__("robustness").TASK_TOML.replace('file = "data.csv"', 'file = "../data.csv"')
    task = write_task(tmp_path / "task", toml)
    result = quick_run(task, tmp_path / "r.sqlite")
    assert result.exit_code == 0, result.output


def test_bench_embed_refuses_lowercase_residues_instead_of_changing_them(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a\nACde\n")
    result = bench("embed", "onehot", fasta, "-o", tmp_path / "e.npz")
    assert result.exit_code == 2 and "record a (line 1): the sequence has 'd' at position 3" in result.output


def test_a_progress_bar_shows_a_markup_name_as_written():
    import io

    from rich.console import Console

    from plm_bench.run.progress import Bars

    out = io.StringIO()
    with Bars(Console(file=out, force_terminal=True, width=100)) as bars:
        bars.add_task("onehot [/]task[red] seed 1", total=3)
        bars.bars.refresh()
    assert "[/]task[red]" in out.getvalue()


def test_a_hub_snapshot_is_named_by_its_content_addressed_blobs(tmp_path, monkeypatch):
    """Hub blobs are named by their content: the snapshot's digest changes with the weights it points
    to, without reading them; a snapshot not cached is unknown, never 'changed'."""
    from huggingface_hub import constants

    from plm_bench.run import inputs

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert inputs.snapshot_digest("org/model") is None
    repo = tmp_path / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for blob in ("1" * 64, "2" * 64):
        (repo / "blobs" / blob).write_bytes(b"weights")
    (snapshot / "model.safetensors").symlink_to(repo / "blobs" / ("1" * 64))
    first = inputs.snapshot_digest("org/model")
    assert first and first.startswith("blobs:")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(repo / "blobs" / ("2" * 64))  # another revision's weights
    second = inputs.snapshot_digest("org/model")
    assert second != first
    record = {"inputs": {"hub_snapshot": first}}
    assert inputs.changed(record, {"hub_snapshot": second}) == [
        f"hub snapshot (blobs {first[6:18]}… then, blobs {second[6:18]}… now)"]
    assert inputs.changed(record, {}) == []  # not cached now: unknown, the run will say how to fetch it
