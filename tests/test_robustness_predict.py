"""Issue 14, items 3 and 10: a killed ``--force`` rerun leaves the finished run whole (its
weights were replaced before the new row was written), and predict's input and output edges."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

from robustness import (
    TASK_TOML,
    bench,
    clean_environment,  # noqa: F401  (the autouse fixture)
    quick_run,
    task_csv,
    write_task,
)

from plm_bench.results.records import schema as record_schema
from plm_bench.results.store import Store, folder_for

KILL_AT_THE_SWAP = """
import os, signal, sys
from plm_bench.results import artifacts, store
state = artifacts.trainable_state  # the rerun's weights differ (a GPU's nondeterminism, a library upgrade)
artifacts.trainable_state = lambda model: {name: t + 1 for name, t in state(model).items()}
store.Store.add = lambda self, record: os.kill(os.getpid(), signal.SIGKILL)  # new weights written, row not yet
from plm_bench.cli import main
main(sys.argv[1:])
"""


def predict(store: Path, task: Path, fasta: Path, output: Path, run: int = 1):
    return bench("predict", "--run", run, fasta, "-o", output, "--store", store, "--task-file", task)


def test_a_rerun_killed_between_its_weights_and_its_row_leaves_the_old_run_whole(tmp_path):
    store, task = tmp_path / "s.sqlite", write_task(tmp_path)
    assert quick_run(task, store).exit_code == 0
    before = Store(store, read_only=True).records()[0]["artifact"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_THE_SWAP, "run", "--backbone", "onehot", "--task", task,
                             "--epochs", "1", "--store", store, "--device", "cpu", "--force"],
                            env={**os.environ, "PLM_BENCH_TASK_FILES": ""}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(folder_for(store).glob("*.safetensors"))) == 2  # the new file was written beside the old
    assert "already done" in quick_run(task, store).output
    (tmp_path / "in.fasta").write_text(">a\nACDEK\n")
    result = predict(store, task, tmp_path / "in.fasta", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert Store(store, read_only=True).records()[0]["artifact"] == before
    # a rerun that completes swaps in its weights and removes the superseded files
    rerun = quick_run(task, store, "--force")
    assert rerun.exit_code == 0, rerun.output
    after = Store(store, read_only=True).records()[0]["artifact"]
    assert [p.name for p in folder_for(store).glob("*.safetensors")] == [after["file"]]


def test_predict_reads_bom_fasta_cuts_ids_at_tabs_and_writes_formula_ids_inert(tmp_path):
    store, task = tmp_path / "s.sqlite", write_task(tmp_path)
    assert quick_run(task, store).exit_code == 0
    fasta = tmp_path / "in.fasta"
    fasta.write_bytes("\ufeff>=HYPERLINK(\"http://x\")\tsome description\nACDEK\n>p2\tmore\nKLMA\n>+1\nAC\n"
                      .encode())
    result = predict(store, task, fasta, tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out.csv", newline="") as handle:
        ids = [row["id"] for row in csv.DictReader(handle)]
    assert ids == ["'=HYPERLINK(\"http://x\")", "p2", "'+1"]


def test_predict_into_a_missing_folder_is_one_line_before_any_work(tmp_path):
    (tmp_path / "in.fasta").write_text(">a\nACDE\n")
    result = bench("predict", "--run", "1", tmp_path / "in.fasta", "-o", tmp_path / "nosuch" / "out.csv",
                   "--store", tmp_path / "s.sqlite")
    assert result.exit_code == 2
    assert result.output == (f"error: -o {tmp_path / 'nosuch' / 'out.csv'}: the folder {tmp_path / 'nosuch'} does "
                             "not exist; create it or write elsewhere\n")


def test_constant_labels_are_refused_never_stored_as_a_score(tmp_path):
    """Spearman on one repeated label is undefined: no run stores 0.0 for it (issue 24)."""
    data = "".join(line.rsplit(",", 2)[0] + ",3," + line.rsplit(",", 1)[1] + "\n"
                   for line in task_csv().splitlines()[1:])
    store = tmp_path / "s.sqlite"
    result = quick_run(write_task(tmp_path, TASK_TOML, "id,sequence,label,split\n" + data), store)
    assert result.exit_code == 2
    assert "every valid label is 3, so its primary metric spearman is undefined there" in result.output
    assert not Store(store, read_only=True).records()


def test_the_record_says_it_holds_the_host_name():
    description = record_schema()["properties"]["environment"]["description"]
    assert "`host`, the machine's host name" in description
    assert "environment.host" in (Path(__file__).parent.parent / "README.md").read_text()
