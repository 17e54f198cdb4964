"""Docs that run: every command block of README.md, docs/plugins.md and the example plugin's README
is executed as written.

A block is a fenced ```bash (or sh/shell) block; its lines run as one bash script (`set -e`, so an
`export` or `cd` carries to the next line) in a scratch folder that mirrors the checkout's layout
(examples/, tasks/, benchmarks/, registry.toml, and ../shared beside it), blocks of one file in
order, so a later block sees what an earlier one stored. HTML comments on the lines right above
the fence (invisible on a rendered page) adjust a block, each saying why:

    <!-- docs-test: skip "why" -->                    not run (it installs, needs the network or a GPU)
    <!-- docs-test: costly "why" -->                  run only with PLM_BENCH_DOCS_COSTLY=1 (a long job)
    <!-- docs-test: skip-line "REGEX" "why" -->       lines REGEX finds (re.search) are not run
    <!-- docs-test: drop "TEXT" -->                   TEXT is removed from each line (e.g. an install step)
    <!-- docs-test: append "bench run" ARGS... -->    ARGS appended to each `bench run` line: tiny settings
                                                      for a block that is a full job

A block that fails names its file, line and command; tests/fixtures/docs/broken.md shows it does.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(bash|sh|shell)\n(.*?)^```$", re.M | re.S)
DIRECTIVE = re.compile(r"<!-- docs-test: (.*?) -->")
KINDS = {"skip": 1, "costly": 1, "skip-line": 2, "drop": 1}
MIRRORED = ("examples", "tasks", "benchmarks", "plugins", "docs", "registry.toml")
COSTLY = "PLM_BENCH_DOCS_COSTLY"
DATA = Path(os.environ.get("PLM_BENCH_TEST_DATA", ROOT.parent / "shared" / "datasets")).resolve()


@dataclass
class Block:
    file: Path
    line: int  # of the first command line
    lines: list[str]
    directives: list[list[str]] = field(default_factory=list)

    def script(self) -> list[tuple[int, str]]:
        """(line number, command) pairs as the test runs them, adjusted by the directives."""
        run = []
        for offset, text in enumerate(self.lines):
            number = self.line + offset
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            if any(d[0] == "skip-line" and re.search(d[1], text) for d in self.directives):
                continue
            command, hash_, comment = text.partition(" #")
            for d in self.directives:
                if d[0] == "drop":
                    command = command.replace(d[1], "")
            for d in self.directives:
                if d[0] == "append" and re.match(rf"\s*{re.escape(d[1])}\b", command):
                    command = f"{command.rstrip()} {shlex.join(d[2:])} "
            run.append((number, command.rstrip()))
        return run

    def skipped(self) -> str | None:
        """Why the whole block is not run, or None."""
        for d in self.directives:
            if d[0] == "skip" or (d[0] == "costly" and not os.environ.get(COSTLY)):
                return f"{d[0]}: {d[1]}"
        return None


def blocks(path: Path) -> list[Block]:
    """The command blocks of a Markdown file with their directives; a malformed directive fails."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        start = text.count("\n", 0, match.start()) + 1
        above = text[:match.start()].rstrip("\n").split("\n")
        directives = []
        while above and above[-1].startswith("<!--"):
            comment = above.pop()
            if m := DIRECTIVE.fullmatch(comment.strip()):
                words = shlex.split(m.group(1))
                kind = words[0] if words else ""
                if kind not in {*KINDS, "append"} or len(words) < KINDS.get(kind, 2) + 1:
                    raise ValueError(f"{path}:{start}: malformed directive {comment!r}; see this test's docstring")
                directives.append(words)
        found.append(Block(path, start + 1, match.group(2).rstrip("\n").split("\n"), directives))
    return found


def scratch(tmp: Path) -> Path:
    """A working folder laid out like the checkout, with ../shared beside it, that a block may
    litter (stores, reports, predictions)."""
    work = tmp / "work"
    work.mkdir()
    for name in MIRRORED:
        (work / name).symlink_to(ROOT / name)
    (tmp / "shared").mkdir()
    (tmp / "shared" / "datasets").symlink_to(DATA)
    return work


def run_file(path: Path, tmp: Path, timeout: int = 600) -> tuple[list[str], list[str]]:
    """Run every block of ``path``; returns (failures, what was skipped and why)."""
    work = scratch(tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PLM_BENCH_STORE", "PLM_BENCH_DATA")}
    env.update(HF_HUB_OFFLINE="1", PLM_BENCH_CACHE=str(tmp / "cache"), COLUMNS="200", OMP_NUM_THREADS="1")
    failures, skipped = [], []
    exports = []  # an export carries to later blocks of the file, as in a reader's shell
    for block in blocks(path):
        why = block.skipped()
        if why:
            skipped.append(f"{path.name}:{block.line} ({why})")
            continue
        for number, command in block.script():
            result = subprocess.run(["bash", "-c", "\n".join(["set -eo pipefail", *exports, command])], cwd=work,
                                    env=env, capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0:
                tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
                failures.append(f"{path.name}:{number}: `{command}` exited {result.returncode}: {' | '.join(tail)}")
            if command.lstrip().startswith("export "):
                exports.append(command)
    return failures, skipped


@pytest.mark.parametrize("name", ["README.md", "docs/plugins.md", "examples/plm-bench-example/README.md"])
def test_every_documented_command_runs(name, tmp_path):
    failures, skipped = run_file(ROOT / name, tmp_path)
    assert not failures, "documented commands fail:\n" + "\n".join(failures)
    assert all(re.search(r"\((skip|costly): .+\)", s) for s in skipped)


def test_a_broken_block_fails_and_names_its_line(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "docs" / "broken.md"
    failures, skipped = run_file(fixture, tmp_path)
    assert len(failures) == 1, failures
    assert failures[0].startswith("broken.md:13: `bench list --no-such-option` exited 2")
    assert skipped == ["broken.md:18 (skip: it needs the network)"]


def test_directives_adjust_what_runs(tmp_path):
    (tmp_path / "doc.md").write_text(
        "<!-- docs-test: drop \"pip install . && \" -->\n"
        "<!-- docs-test: append \"bench run\" --epochs 1 --limit-train 8 -->\n"
        "<!-- docs-test: skip-line esm2-8m \"pretrained weights download\" -->\n"
        "```bash\n"
        "pip install . && bench run --backbone onehot --task gb1   # the baseline\n"
        "bench run --backbone esm2-8m --task gb1\n"
        "# a comment\n"
        "bench list\n"
        "```\n")
    (block,) = blocks(tmp_path / "doc.md")
    assert block.script() == [(5, "bench run --backbone onehot --task gb1 --epochs 1 --limit-train 8"),
                              (8, "bench list")]
    (tmp_path / "bad.md").write_text("<!-- docs-test: skipp \"typo\" -->\n```bash\nbench list\n```\n")
    with pytest.raises(ValueError, match="malformed directive"):
        blocks(tmp_path / "bad.md")
