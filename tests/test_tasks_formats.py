"""Parsers on small fixtures written in the upstream formats (for the data the mirror lacks),
custom TOML tasks, and bad input: every problem is one error naming the file and the record."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.files import load_toml, registry, task_definition_path
from plm_bench.results.store import Store
from plm_bench.tasks.formats import FORMATS
from plm_bench.tasks.loading import custom_task as task_from_file
from plm_bench.tasks.sources import ALLOW_UNVERIFIED
from plm_bench.tasks.task import SPLITS, TASK_FILES, declarative_task

RNG = np.random.default_rng(0)


def definition(name: str) -> dict:
    return load_toml(task_definition_path(registry()["tasks"][name]["definition"]))


@pytest.fixture
def accept_unverified(monkeypatch) -> None:
    """Fixture files stand in for the upstream ones without their checksums: as --allow-unverified."""
    monkeypatch.setenv(ALLOW_UNVERIFIED, "1")


def without_checksums(entry: dict) -> dict:
    """The shipped definition, its checksums dropped: fixtures are not the upstream files."""
    strip = ("sha256", "git_blob", "git_tree", "members")
    entry = {**entry, "sources": [{k: v for k, v in s.items() if k not in strip} for s in entry.get("sources", [])]}
    if "forms" in entry:
        entry["forms"] = [without_checksums(f) for f in entry["forms"]]
    return entry


def seq(n: int = 12) -> str:
    return "".join(RNG.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))


def flip_csv(rows: list[tuple[str, float, str, str]]) -> str:
    return "sequence,target,set,validation\n" + "".join(f"{s},{t},{st},{v}\n" for s, t, st, v in rows)


@pytest.mark.usefixtures("accept_unverified")
@pytest.mark.parametrize(("name", "member"), [("aav", "splits/two_vs_many.csv"), ("meltome", "splits/mixed_split.csv")])
def test_flip_csv_fixture_for_the_absent_flip_tasks(tmp_path, name, member):
    rows = [(seq(), 1.5, "train", ""), (seq(), -0.5, "train", "True"), (seq(), 2.0, "test", ""),
            (seq(), 0.25, "train", ""), (seq(), 3.0, "test", "")]
    (tmp_path / name).mkdir()
    with zipfile.ZipFile(tmp_path / name / "splits.zip", "w") as archive:
        archive.writestr(member, flip_csv(rows))
    shipped = plugins.get("task", name)
    with pytest.raises(BenchError, match="is corrupt"):  # the real definition pins the upstream blob
        shipped.load(tmp_path)
    splits = declarative_task(without_checksums(definition(name)), FORMATS).load(tmp_path)
    assert [len(splits[s]) for s in SPLITS] == [2, 1, 2]
    assert [e.label for e in splits["train"]] == [1.5, 0.25] and splits["valid"][0].label == -0.5


@pytest.mark.usefixtures("accept_unverified")
@pytest.mark.parametrize(("name", "folder", "key"), [("gfp", "fluorescence", "log_fluorescence"),
                                                     ("stability", "stability", "stability_score")])
def test_tape_json_archive_is_the_second_form(tmp_path, name, folder, key):
    (tmp_path / folder).mkdir()
    with tarfile.open(tmp_path / folder / f"{folder}.tar.gz", "w:gz") as archive:
        for split, n in zip(SPLITS, (4, 2, 3), strict=True):
            records = [{"primary": seq(), "protein_length": 12, key: [float(i)], "id": i} for i in range(n)]
            payload = json.dumps(records).encode()
            info = tarfile.TarInfo(f"{folder}/{folder}_{split}.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    task = plugins.get("task", name)  # TAPE's archive has no published checksum: the shipped form reads it
    splits = task.load(tmp_path)
    assert [len(splits[s]) for s in SPLITS] == [4, 2, 3]
    assert [e.label for e in splits["test"]] == [0.0, 1.0, 2.0]


@pytest.mark.usefixtures("accept_unverified")
def test_light_attention_fasta_for_the_absent_training_split(tmp_path):
    (tmp_path / "subcellular_location").mkdir()
    (tmp_path / "subcellular_location" / "deeploc_our_train_set.fasta").write_text(
        f">P1 Cell.membrane-M\n{seq(30)}\n{seq(20)}\n>P2 Cytoplasm-Nucleus-U\n{seq()}\n"
        f">P3 Lysosome/Vacuole-S\n{seq()}\n>P4 Extracellular-U test\n{seq()}\n")
    task = declarative_task(without_checksums(definition("subcellular_location")), FORMATS)
    train = task.load(tmp_path, splits=("train",))["train"]
    assert [e.id for e in train] == ["P1", "P2", "P3", "P4"]
    assert [task.classes[e.label] for e in train] == ["Cell.membrane", "Cytoplasm", "Lysosome/Vacuole",
                                                       "Extracellular"]
    assert len(train[0].sequence) == 50  # sequences may span lines


def write_task(folder: Path, toml: str, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    (folder / "my_task.toml").write_text(toml)
    return folder / "my_task.toml"


PROTEIN_CSV = """
level = "protein"
type = "regression"
metric = "spearman"
secondary_metrics = ["pearson"]
format = "csv"
file = "data.csv"
split_column = "split"
id_column = "id"
"""


def count_a_csv(n: int, splits: tuple[str, ...]) -> str:
    """Label = number of alanines: learnable from one-hot residues."""
    rng, rows = np.random.default_rng(n), []
    for i in range(n):
        s = "".join(rng.choice(list("ACDEFGHIKL"), 20))
        rows.append(f"p{i},{s},{s.count('A')},{splits[i % len(splits)]}")
    return "id,sequence,label,split\n" + "\n".join(rows) + "\n"


def test_custom_csv_task_runs_end_to_end_with_bench_run(tmp_path, monkeypatch):
    monkeypatch.setenv(TASK_FILES, "")
    monkeypatch.chdir(tmp_path)
    split_cycle = ("train",) * 8 + ("valid", "test")
    write_task(tmp_path, PROTEIN_CSV, {"data.csv": count_a_csv(200, split_cycle)})
    store = tmp_path / "results.sqlite"
    try:
        result = CliRunner().invoke(main, ["run", "--backbone", "onehot", "--task", "./my_task.toml", "--epochs", "5",
                                           "--lr", "0.03", "--store", str(store)], catch_exceptions=False)
    finally:
        plugins.catalog.cache_clear()
    assert result.exit_code == 0, result.output
    record = Store(store).records()[0]
    assert record["config"]["task"].startswith("my_task@")  # name @ content digest of definition and data
    assert set(record["metrics"]["test"]) == {"spearman", "pearson"}
    assert record["metrics"]["test"]["spearman"] > 0.6, record["metrics"]  # it learned to count alanines


def test_custom_task_without_split_column_is_carved_with_scikit_learn(tmp_path):
    rule = "\n[split]\nvalid_fraction = 0.1\ntest_fraction = 0.2\n"
    toml = PROTEIN_CSV.replace('split_column = "split"\n', "") + rule
    task = task_from_file(write_task(tmp_path, toml, {"data.csv": count_a_csv(50, ("train",))}))
    splits = task.load(Path("/nonexistent"))  # a custom task reads its own folder, not --data-dir
    assert [len(splits[s]) for s in SPLITS] == [36, 4, 10]  # test 20% of 50, then valid 10% of 40
    assert splits == task.load(Path("/nonexistent"))


def test_custom_fasta_tasks_protein_and_residue(tmp_path):
    protein = """
name = "loc"
level = "protein"
type = "classification"
classes = ["in", "out"]
metric = "accuracy"
format = "fasta"
file = "proteins.fasta"
"""
    fasta = f">a label=in split=train\n{seq()}\n>b label=out split=valid\n{seq()}\n>c label=in split=test\n{seq()}\n"
    splits = task_from_file(write_task(tmp_path, protein, {"proteins.fasta": fasta})).load(tmp_path)
    assert [(e.id, e.label) for s in SPLITS for e in splits[s]] == [("a", 0), ("b", 1), ("c", 0)]

    residue = """
name = "ss"
level = "residue"
type = "classification"
classes = ["C", "E", "H"]
metric = "q3"
unknown = "-"
format = "fasta"

[[sources]]
file = "seqs.fasta"

[[sources]]
role = "labels"
file = "labels.fasta"
"""
    seqs = ">x split=train\nACDE\n>y split=valid\nFGH\n>z split=test\nIK\n"
    labels = ">y\nCE-\n>x\nCC\nEH\n>z\nHH\n"
    splits = task_from_file(write_task(tmp_path, residue, {"seqs.fasta": seqs, "labels.fasta": labels})).load(tmp_path)
    x, y = splits["train"][0], splits["valid"][0]
    assert list(x.label) == [0, 0, 1, 2] and x.mask.all()
    assert list(y.label) == [0, 1, 0] and list(y.mask) == [True, True, False]  # '-' is unknown: masked


def test_custom_residue_regression_csv_with_unknown_values(tmp_path):
    toml = """
level = "residue"
type = "regression"
metric = "spearman"
unknown = 999
format = "csv"
file = "r.csv"
split_column = "split"
"""
    data = "sequence,label,split\nACD,1.5 999 -2,train\nEF,\"0.5, 1\",valid\nGH,3 4,test\n"
    splits = task_from_file(write_task(tmp_path, toml, {"r.csv": data})).load(tmp_path)
    first = splits["train"][0]
    assert list(first.mask) == [True, False, True] and list(first.label) == [1.5, 0.0, -2.0]


BAD_CSV = """
level = "{level}"
type = "regression"
metric = "spearman"
format = "csv"
file = "bad.csv"
split_column = "split"
id_column = "id"
"""


@pytest.mark.parametrize(("level", "rows", "problem"), [
    ("protein", "a,ACDJ,1,train", "has 'J' at position 4"),
    ("protein", "a,acde,1,train", "has 'a' at position 1"),
    ("protein", "a,,1,train", "the sequence is empty"),
    ("protein", "a,ACDE,nan,train", "label is nan"),
    ("protein", "a,ACDE,,train", "label '' is not a number"),
    ("protein", "a,ACDE,1,training", "split 'training' must be one of"),
    ("protein", "a,ACDE,1,train\na,FGHI,2,test", "record id 'a' occurs 2 times"),
    ("residue", "a,ACDE,1 2 3,train", "3 per-residue labels for a sequence of 4 residues"),
    ("residue", "a,ACDE,1 2 nan 4,train", "per-residue label nan at position 3"),
])
def test_bad_records_are_one_error_naming_file_and_record(tmp_path, level, rows, problem):
    path = write_task(tmp_path, BAD_CSV.format(level=level), {"bad.csv": "id,sequence,label,split\n" + rows + "\n"})
    with pytest.raises(BenchError) as error:
        task_from_file(path).load(tmp_path)
    message = str(error.value)
    assert problem in message and "\n" not in message
    assert str(tmp_path / "bad.csv") in message
    if "occurs" not in problem:
        assert "record 1" in message


def archive_bytes(kind: str) -> bytes:
    content = flip_csv([(seq(), 1.0, "train", ""), (seq(), 2.0, "test", "")] * 50).encode()
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("splits/x.csv", content)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            info = tarfile.TarInfo("splits/x.csv")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_truncated_archive_is_one_error_naming_it(tmp_path, kind):
    toml = f"""
level = "protein"
type = "regression"
metric = "spearman"
format = "flip"

[[sources]]
file = "splits.{kind}"
member = "splits/x.csv"
"""
    whole = archive_bytes(kind)
    path = write_task(tmp_path, toml, {f"splits.{kind}": whole})
    assert len(task_from_file(path).load(tmp_path, splits=("train", "test"))["train"]) == 50
    (tmp_path / f"splits.{kind}").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BenchError, match="truncated or damaged") as error:
        task_from_file(path).load(tmp_path, splits=("train", "test"))
    assert str(tmp_path / f"splits.{kind}") in str(error.value)


@pytest.mark.parametrize(("change", "problem"), [
    ({"member": "../../etc/passwd"}, "must be a relative path"),
    ({"file": "../outside.zip"}, "must be a relative path"),
    ({"file": "/abs/splits.zip"}, "must be a relative path"),
    ({"sha256": "abc"}, "must be 64 hex digits"),
])
def test_shipped_definitions_cannot_point_outside_their_folder(change, problem):
    entry = definition("gb1")
    entry["sources"] = [{**entry["sources"][0], **change}]
    with pytest.raises(BenchError, match=problem):
        declarative_task(entry, FORMATS, where="tasks/gb1.toml")


def test_definition_errors_name_the_file(tmp_path):
    path = write_task(tmp_path, PROTEIN_CSV.replace('format = "csv"', 'format = "xlsx"'), {"data.csv": ""})
    with pytest.raises(BenchError, match=f"{path}: format 'xlsx' is unknown"):
        task_from_file(path)
    path = write_task(tmp_path, PROTEIN_CSV + "\n[split]\nvalid_share = 0.1\n", {"data.csv": ""})
    with pytest.raises(BenchError, match=r"split\.valid_share is not a known key"):
        task_from_file(path)
