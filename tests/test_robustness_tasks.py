"""Issue 14, items 1 and 8: a custom task is identified by the content of its definition and
data, and its TOML is checked against a strict schema before any data is read; plus the fuzz
test: bad task files and bad FASTA data give exit 2, one line, no traceback, no new row."""

from __future__ import annotations

import re

import pytest
from robustness import (
    TASK_TOML,
    clean_environment,  # noqa: F401  (the autouse fixture)
    failed_errors,
    quick_run,
    row_count,
    task_csv,
    write_task,
)

from plm_bench.errors import BenchError
from plm_bench.tasks import formats
from plm_bench.tasks.loading import custom_task as task_from_file


def stored_tasks(store) -> list[str]:
    from plm_bench.results.store import Store

    return [r["config"]["task"] for r in Store(store, read_only=True).records()]


def test_editing_a_custom_tasks_data_is_a_new_task_not_already_done(tmp_path):
    store = tmp_path / "s.sqlite"
    task = write_task(tmp_path / "project")
    assert quick_run(task, store).exit_code == 0
    again = quick_run(task, store)
    assert "already done" in again.output  # unchanged files: the same task
    (tmp_path / "project" / "data.csv").write_text(task_csv(seed=1))
    edited = quick_run(task, store)
    assert edited.exit_code == 0, edited.output
    assert "already done" not in edited.output
    first, second = stored_tasks(store)
    assert first != second and first.startswith("mine@") and second.startswith("mine@")


def test_another_projects_task_file_of_the_same_name_is_another_task(tmp_path):
    store = tmp_path / "s.sqlite"
    assert quick_run(write_task(tmp_path / "a"), store).exit_code == 0
    other = quick_run(write_task(tmp_path / "b", data=task_csv(seed=2)), store, "--force")
    assert other.exit_code == 0, other.output
    assert len(set(stored_tasks(store))) == 2  # --force replaced nothing of project a


def test_the_digest_covers_the_definition_too(tmp_path):
    task = write_task(tmp_path)
    before = task_from_file(task).name
    task.write_text(TASK_TOML + 'description = "same data, other text"\n')
    assert re.fullmatch(r"mine@[0-9a-f]{12}", before) and task_from_file(task).name != before


def refuses(tmp_path, toml: str | bytes, data: str | bytes | None = None) -> str:
    with pytest.raises(BenchError) as error:
        task_from_file(write_task(tmp_path, toml, data))
    return str(error.value)


@pytest.mark.parametrize(("change", "message"), [
    (('split_column = "split"', 'lable_column = "label"\nsplit_column = "split"'),
     "lable_column is not a known key; did you mean 'label_column'?"),
    (("", '[split]\nvalid_fracton = 0.1\n'), "split.valid_fracton is not a known key; did you mean 'valid_fraction'?"),
    (("", 'split = "random"\n'), "split: 'random' is not of type 'object'"),
    (('type = "regression"', 'type = "classification"\nclasses = "lohi"'), "classes: 'lohi' is not of type 'array'"),
    (("", "unknown = \"n/a\"\n"), "unknown = 'n/a': a regression task's unknown label is a number"),
    (("", "[split]\nrandom_state = -1\n"), "split.random_state: -1 is less than the minimum of 0"),
    (("", "[split]\nrandom_state = 1.5\n"), "split.random_state: 1.5 is not of type 'integer'"),
    (("", "name = 5\n"), "name: 5 is not of type 'string'"),
    (('format = "csv"', 'format = "cvs"'), "format 'cvs' is unknown; known: chezod, csv, fasta"),
    (('id_column = "id"', 'id_column = "id"\nlabel_key = "x"'),
     "label_key is not an option of format 'csv' (its options: sequence_column, label_column, split_column, "
     "id_column)"),
    (('metric = "spearman"\n', ""), "the definition lacks 'metric'; add it"),
])
def test_a_bad_definition_is_one_line_naming_the_key(tmp_path, change, message):
    old, new = change
    toml = TASK_TOML.replace(old, new, 1) if old else TASK_TOML + new if new.startswith("[") else new + TASK_TOML
    assert message in refuses(tmp_path, toml)


def test_the_definition_is_checked_before_any_data_is_read(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(formats, "csv_rows", lambda *a: read.append(a))
    store = tmp_path / "s.sqlite"
    result = quick_run(write_task(tmp_path, TASK_TOML + "lable_column = 'x'\n"), store)
    assert result.exit_code == 2 and not read
    assert row_count(store) == 0


def test_non_utf8_toml_and_ragged_csv_rows_are_one_line(tmp_path):
    assert "cannot read TOML" in refuses(tmp_path, TASK_TOML.encode() + b'description = "\xff\xfe"\n')
    ragged = "id,sequence,label,split\np1,ACDE,1,train\np2,ACDE,2\n"
    task = task_from_file(write_task(tmp_path, TASK_TOML, ragged))
    with pytest.raises(BenchError, match=r"data.csv record 2: fewer fields than the header's 4; fix the row"):
        task.load(tmp_path)


FASTA_TOML = """level = "protein"
type = "regression"
metric = "spearman"
format = "fasta"
file = "data.fasta"
"""


def good_fasta() -> str:
    return "".join(f">p{i} label={i % 5} split={('train', 'train', 'valid', 'test')[i % 4]}\nACDEFGHIK\n"
                   for i in range(12))


def bad_task_files() -> list[tuple[str, bytes, bytes]]:
    """(case, task TOML, data file) pairs, each wrong in one way: TOML syntax, types, unknown
    keys, values, sources; then FASTA data wrong in one way."""
    lines = TASK_TOML.splitlines()
    cases: list[tuple[str, str | bytes, str | bytes]] = [
        ("empty file", "", task_csv()), ("not TOML", "level = protein\n", task_csv()),
        ("unclosed string", TASK_TOML + 'description = "x\n', task_csv()),
        ("non-UTF-8", TASK_TOML.encode() + b"description = '\xc3\x28'\n", task_csv()),
        ("binary", bytes(range(256)), task_csv()),
    ]
    for i, line in enumerate(lines):  # each required or given key dropped, retyped, misspelt
        key = line.split(" = ")[0]
        rest = "\n".join(lines[:i] + lines[i + 1:]) + "\n"
        cases.append((f"{key} as a number", rest + f"{key} = 7\n", task_csv()))
        cases.append((f"{key} as a list", rest + f"{key} = [\"a\", \"b\"]\n", task_csv()))
        cases.append((f"{key} misspelt", rest + line.replace(key, key[1] + key[0] + key[2:], 1) + "\n", task_csv()))
        cases.append((f"{key} as a table", rest + f"[{key}]\nx = 1\n", task_csv()))
    for name, extra in [("level", 'level = "atom"'), ("type", 'type = "ranking"'), ("metric", 'metric = "nosuch"'),
                        ("classes", 'classes = ["a"]'), ("classes", 'classes = ["a", "a"]'),
                        ("split", "split = 0.1"), ("split", "[split]\nvalid_fraction = 1.5"),
                        ("split", "[split]\ntest_fraction = -0.1"), ("split", '[split]\nrandom_state = "x"'),
                        ("sources", '[[sources]]\nfile = "data.csv"'), ("forms", 'forms = "csv"'),
                        ("name", 'name = "a/b"'), ("name", 'name = "x@y"'), ("name", 'name = ""'),
                        ("folder", "folder = 1"), ("secondary", 'secondary_metrics = "pearson"'),
                        ("unknown", "unknown = [1]"), ("unknown", 'unknown = "NA"')]:
        text = (extra + "\n" + TASK_TOML) if not extra.startswith("[") else (TASK_TOML + extra + "\n")
        cases.append((f"bad {name}: {extra}", text, task_csv()))
    cases += [("missing data file", TASK_TOML.replace("data.csv", "nosuch.csv"), task_csv()),
              ("data outside alphabet", TASK_TOML, "id,sequence,label,split\np1,AC1E,1,train\n"),
              ("label not a number", TASK_TOML, "id,sequence,label,split\np1,ACDE,high,train\n"),
              ("label NaN", TASK_TOML, "id,sequence,label,split\np1,ACDE,nan,train\n"),
              ("no label column", TASK_TOML, "id,sequence,split\np1,ACDE,train\n"),
              ("bad split value", TASK_TOML, "id,sequence,label,split\np1,ACDE,1,training\n"),
              ("repeated ids", TASK_TOML, "id,sequence,label,split\np1,ACDE,1,train\np1,ACDE,2,test\n"),
              ("ragged row", TASK_TOML, "id,sequence,label,split\np1,ACDE,1,train,extra\n"),
              ("csv not UTF-8", TASK_TOML, b"id,sequence,label,split\np1,AC\xffE,1,train\n")]
    fasta = good_fasta()
    cases += [(f"fasta: {name}", FASTA_TOML, data) for name, data in [
        ("empty", ""), ("no header", "ACDEFG\n"), ("header without id", ">\nACDE\n" + fasta),
        ("lowercase residues", fasta.replace("ACDEFGHIK", "acdefghik", 1)),
        ("digits in sequence", fasta.replace("ACDEFGHIK", "ACD3FGHIK", 1)),
        ("star", fasta.replace("ACDEFGHIK", "ACDEFGHIK*", 1)),
        ("empty sequence", ">p99 label=1 split=train\n" + fasta),
        ("repeated id", fasta + ">p0 label=1 split=test\nACDE\n"),
        ("no label", fasta.replace(" label=0", "", 1)), ("label text", fasta.replace("label=0", "label=low", 1)),
        ("label inf", fasta.replace("label=0", "label=inf", 1)),
        ("bad split", fasta.replace("split=train", "split=dev", 1)),
        ("only train", fasta.replace("split=test", "split=train").replace("split=valid", "split=train")),
        ("binary", bytes(range(256)) * 4), ("UTF-16", fasta.encode("utf-16")),
        ("BOM then junk", b"\xef\xbb\xbfnot fasta\n")]]
    return [(name, t.encode() if isinstance(t, str) else t, d.encode() if isinstance(d, str) else d)
            for name, t, d in cases]


CASES = bad_task_files()


def test_there_are_enough_fuzz_cases():
    assert len(CASES) >= 50, len(CASES)
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("toml", "data"), [(t, d) for _, t, d in CASES], ids=[name for name, _, _ in CASES])
def test_fuzz_bad_task_files_and_fasta_fail_in_one_line_and_store_nothing(tmp_path, toml, data):
    store = tmp_path / "s.sqlite"
    data_name = "data.fasta" if b'format = "fasta"' in toml else "data.csv"
    task = write_task(tmp_path, toml, data, data_name=data_name)
    result = quick_run(task, store)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert row_count(store, "finished") == 0
    # a definition is refused before any run starts; bad data fails the run, which the driver stores as failed
    assert failed_errors(store) in ([], [lines[0].removeprefix("error: ")])
