"""``bench predict``: a saved run predicts new sequences, and on its own test sequences it gives
exactly the test predictions the run scored."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from synthetic_tasks import CHARGE, RESIDUE_CLASSES, context, register_tasks
from torch import nn

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.files import current_umask
from plm_bench.results import artifacts
from plm_bench.results.store import Store
from plm_bench.run import protocol
from plm_bench.run.predict import write_csv
from plm_bench.run.protocol import execute
from plm_bench.tasks.task import TASK_FILES, Example, Task


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def capture_test_predictions(monkeypatch) -> list:
    """Record what the protocol predicts for the test split; the last call is what it scored."""
    seen: list = []
    original = protocol.predict

    def predict(model, examples, features, batch_size):
        out = original(model, examples, features, batch_size)
        if examples and examples[0].id.startswith("test-"):
            seen.append(out)
        return out

    monkeypatch.setattr(protocol, "predict", predict)
    return seen


def bench(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def write_fasta(path, examples: list[Example]) -> None:
    path.write_text("".join(f">{e.id} from the test split\n{e.sequence[:7]}\n{e.sequence[7:]}\n" for e in examples))


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_lora_run_predicts_its_own_test_set_exactly(tiny_esm, tmp_path, monkeypatch):
    seen = capture_test_predictions(monkeypatch)
    store = tmp_path / "runs.sqlite"
    bench("run", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--task", CHARGE.name,
          "--method", "lora", "--method-option", "rank=8", "--epochs", "2", "--lr", "3e-3",
          "--store", str(store), "--device", "cpu")
    record = Store(store).records()[0]
    assert record["adapter"]["r"] == 8 and record["adapter"]["peft_type"] == "LORA"
    assert (store.parent / "runs.artifacts" / record["artifact"]["file"]).is_file()
    assert record["parameters"]["trainable"] < record["parameters"]["total"]

    test = CHARGE.load(tmp_path)["test"]
    write_fasta(tmp_path / "test.fasta", test)
    out = bench("predict", "--run", str(record["run_id"]), str(tmp_path / "test.fasta"), "-o",
                str(tmp_path / "out.csv"), "--store", str(store), "--device", "cpu")
    assert "wrote 16 rows for 16 sequences" in out
    rows = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in rows] == [e.id for e in test]
    predicted = np.array([float(r["prediction"]) for r in rows], dtype=np.float32)
    assert np.array_equal(predicted, np.array(seen[-1], dtype=np.float32))


def test_frozen_residue_run_reproduces_with_the_cache_recomputed(tiny_esm, tmp_path, monkeypatch):
    seen = capture_test_predictions(monkeypatch)
    store = tmp_path / "runs.sqlite"
    run = RunConfig(backbone="esm2-8m", task=RESIDUE_CLASSES.name, backbone_path=str(tiny_esm), head="cnn-residue",
                    epochs=2, lr=3e-3).resolved()
    record = execute(run, context(tmp_path))
    record["run_id"] = Store(store).add(record)
    shutil.rmtree(tmp_path / "cache")  # predict embeds the sequences again

    test = RESIDUE_CLASSES.load(tmp_path)["test"]
    write_fasta(tmp_path / "test.fasta", test)
    bench("predict", "--run", str(record["run_id"]), str(tmp_path / "test.fasta"), "-o", str(tmp_path / "out.csv"),
          "--store", str(store), "--device", "cpu")
    rows = read_csv(tmp_path / "out.csv")
    assert list(rows[0]) == ["id", "position", "residue", "prediction", "p_other", "p_basic", "p_acidic"]
    assert len(rows) == sum(len(e.sequence) for e in test)
    assert "".join(r["residue"] for r in rows if r["id"] == test[0].id) == test[0].sequence
    scores = np.concatenate(seen[-1])
    probabilities = np.array([[float(r[f"p_{c}"]) for c in RESIDUE_CLASSES.classes] for r in rows], dtype=np.float32)
    assert np.array_equal(probabilities, torch.softmax(torch.from_numpy(scores), dim=-1).numpy())
    assert [r["prediction"] for r in rows] == [RESIDUE_CLASSES.classes[i] for i in scores.argmax(1)]
    assert (tmp_path / "cache").is_dir()


def test_classes_and_probabilities_per_protein(tmp_path):
    task = Task("toy-class", "protein", "classification", "accuracy", lambda _: {}, classes=("no", "yes"))
    examples = [Example("a", "ACD", None), Example("b", "KK", None)]
    write_csv(tmp_path / "out.csv", task, examples, [np.array([0.0, np.log(3.0)]), np.array([2.0, 0.0])])
    rows = read_csv(tmp_path / "out.csv")
    assert [(r["id"], r["prediction"]) for r in rows] == [("a", "yes"), ("b", "no")]
    assert float(rows[0]["p_no"]) == pytest.approx(0.25) and float(rows[0]["p_yes"]) == pytest.approx(0.75)


def finished_run(tiny_esm, tmp_path) -> tuple:
    store = tmp_path / "runs.sqlite"
    record = execute(RunConfig(backbone="esm2-8m", task=CHARGE.name, backbone_path=str(tiny_esm), epochs=1)
                     .resolved(), context(tmp_path))
    run_id = Store(store).add(record)
    (tmp_path / "in.fasta").write_text(">x\nACDEFGHIK\n")
    return store, run_id, record


def predict_fails(store, run_id, fasta) -> str:
    result = CliRunner().invoke(main, ["predict", "--run", str(run_id), str(fasta), "-o", str(fasta.parent / "o.csv"),
                                       "--store", str(store)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1  # one line, no traceback
    return result.output


def test_missing_or_changed_weights_and_unknown_runs_are_one_line_errors(tiny_esm, tmp_path):
    store, run_id, record = finished_run(tiny_esm, tmp_path)
    fasta = tmp_path / "in.fasta"
    assert "has no finished run 99" in predict_fails(store, 99, fasta)
    weights = tmp_path / "runs.artifacts" / record["artifact"]["file"]
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1
    weights.write_bytes(bytes(content))
    assert "differs from the file its run wrote" in predict_fails(store, run_id, fasta)
    weights.unlink()
    assert "is missing: the run's weights were moved or deleted" in predict_fails(store, run_id, fasta)


def test_bad_input_and_runs_without_weights_are_named(tiny_esm, tmp_path):
    store, run_id, record = finished_run(tiny_esm, tmp_path)
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">x\nACD\n>x\nKLM\n")
    assert "id x appears twice" in predict_fails(store, run_id, fasta)
    fasta.write_text(">x\nAC1D\n")
    assert "record x (line 1)" in predict_fails(store, run_id, fasta)
    bare = json.loads(json.dumps(record))
    del bare["artifact"]
    bare["config_hash"] = "0" * 16
    other = Store(store).add(bare)
    fasta.write_text(">x\nACD\n")
    assert f"run {other} in {store} saved no weights" in predict_fails(store, other, fasta)


def test_only_trainable_weights_are_saved_and_they_must_fit(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    saved = artifacts.save(model, tmp_path, "0" * 16)
    name = f"{'0' * 16}-{saved['sha256'][:16]}.safetensors"  # config hash, then content digest
    assert (saved["file"], saved["tensors"], saved["parameters"]) == (name, 2, 6)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left
    assert (tmp_path / saved["file"]).stat().st_mode & 0o777 == 0o666 & ~current_umask()  # readable as the store
    path = artifacts.verified_path(tmp_path, saved)
    fresh = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    fresh[0].requires_grad_(False)
    artifacts.load_into(fresh, path)
    assert torch.equal(fresh[1].weight, model[1].weight) and not torch.equal(fresh[0].weight, model[0].weight)
    with pytest.raises(BenchError, match=r"does not fit the rebuilt model \(missing \['0.bias', '0.weight'\]"):
        artifacts.load_into(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), path)
    wider = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4))
    wider[0].requires_grad_(False)
    with pytest.raises(BenchError, match=r"1.weight has shape \(2, 2\), the rebuilt model \(4, 2\)"):
        artifacts.load_into(wider, path)


def test_equal_weights_save_to_equal_bytes(tmp_path):
    """The record's sha256 names the weights, not the order safetensors happened to write its
    header in: equal weights saved again (a rerun, another machine) give the same digest."""
    model = nn.Linear(3, 2)
    digests = {artifacts.save(model, tmp_path / str(i), "0" * 16)["sha256"] for i in range(8)}
    assert len(digests) == 1


def test_runs_on_a_custom_task_file_predict_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv(TASK_FILES, "")
    rows = "\n".join(f"p{i},{'ACDK'[i % 4] * 5}KLM,{i % 7},{('train', 'train', 'valid', 'test')[i % 4]}"
                     for i in range(24))
    (tmp_path / "data.csv").write_text(f"id,sequence,label,split\n{rows}\n")
    (tmp_path / "mine.toml").write_text('level = "protein"\ntype = "regression"\nmetric = "spearman"\n'
                                        'format = "csv"\nfile = "data.csv"\nsplit_column = "split"\nid_column = "id"\n')
    store = tmp_path / "runs.sqlite"
    try:
        bench("run", "--backbone", "onehot", "--task", str(tmp_path / "mine.toml"), "--epochs", "1", "--store",
              str(store))
        monkeypatch.setenv(TASK_FILES, "")  # a later session: the task file is not registered
        plugins.catalog.cache_clear()
        (tmp_path / "in.fasta").write_text(">x\nAAAAAKLM\n")
        assert re.search("is on task mine@[0-9a-f]{12}, which no installed plugin provides: for a task from a TOML "
                         "file, pass --task-file", predict_fails(store, 1, tmp_path / "in.fasta"))
        bench("predict", "--run", "1", str(tmp_path / "in.fasta"), "-o", str(tmp_path / "out.csv"), "--store",
              str(store), "--task-file", str(tmp_path / "mine.toml"))
    finally:
        plugins.catalog.cache_clear()
    assert [r["id"] for r in read_csv(tmp_path / "out.csv")] == ["x"]


def test_a_probe_run_predicts_its_own_test_set_exactly(tmp_path, monkeypatch):
    """A closed-form head whose width is learned in training (probe-flat) loads back for predict."""
    from synthetic_tasks import FIXED

    seen = capture_test_predictions(monkeypatch)
    store = tmp_path / "runs.sqlite"
    bench("run", "--backbone", "onehot", "--task", FIXED.name, "--head", "probe-flat", "--store", str(store))
    record = Store(store).records()[0]
    test = FIXED.load(tmp_path)["test"]
    write_fasta(tmp_path / "test.fasta", test)
    bench("predict", "--run", str(record["run_id"]), str(tmp_path / "test.fasta"), "-o", str(tmp_path / "out.csv"),
          "--store", str(store))
    predicted = np.array([float(r["prediction"]) for r in read_csv(tmp_path / "out.csv")], dtype=np.float32)
    assert np.array_equal(predicted, np.array(seen[-1], dtype=np.float32))
