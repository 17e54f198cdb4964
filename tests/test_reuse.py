"""What a second seed or a second run does not redo: hashing unchanged data files (the verified
stamp) and parsing a task's files again in the same process."""

from __future__ import annotations

import hashlib
import os
import time

from plm_bench.tasks import sources
from plm_bench.tasks.sources import Source, status
from plm_bench_plugins.tasks import task_from_file

CSV = "id,sequence,label,split\n" + "".join(f"p{i},{'ACDEFGHIKL'[i % 10] * 12},{i},{s}\n"
                                            for i, s in enumerate(["train"] * 6 + ["valid"] * 3 + ["test"] * 3))
TOML = """
level = "protein"
type = "regression"
metric = "spearman"
format = "csv"
file = "data.csv"
split_column = "split"
id_column = "id"
"""


def age(path, seconds: float) -> None:
    """Set the file's mtime ``seconds`` in the past (older than the racy window)."""
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(when, when))


def counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def test_a_verified_file_is_hashed_once_until_its_size_or_mtime_changes(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(b"residues" * 1000)
    age(path, 60)
    source = Source(file="data.bin", sha256=hashlib.sha256(b"residues" * 1000).hexdigest())
    hashed = counting(monkeypatch, sources, "sha256_of")
    assert [status(path, source) for _ in range(3)] == ["present"] * 3
    assert len(hashed) == 1  # the stamp answered the second and third time
    path.write_bytes(b"residuez" * 1000)  # same size, new content
    age(path, 30)
    assert status(path, source) == "corrupt" and len(hashed) == 2
    path.write_bytes(b"residues" * 1000)  # just written: within the racy window, never stamped
    assert [status(path, source) for _ in range(2)] == ["present"] * 2 and len(hashed) == 4


def test_a_task_is_parsed_once_per_process_while_its_files_are_unchanged(tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text(CSV)
    (tmp_path / "my_task.toml").write_text(TOML)
    for written in ("data.csv", "my_task.toml"):  # files of the task's folder, all older than the racy window
        age(tmp_path / written, 60)
    task = task_from_file(tmp_path / "my_task.toml")
    from plm_bench.tasks import task as task_module

    read = counting(monkeypatch, task_module, "read_bytes")
    first, second = task.load(tmp_path), task.load(tmp_path)
    assert len(read) == 1
    assert {k: [e.id for e in v] for k, v in first.items()} == {k: [e.id for e in v] for k, v in second.items()}
    assert first["train"] is not second["train"]  # callers may slice or reorder their lists freely
    (tmp_path / "data.csv").write_text(CSV.replace("p0,", "q0,"))
    age(tmp_path / "data.csv", 30)
    assert task.load(tmp_path)["train"][0].id == "q0" and len(read) == 2
