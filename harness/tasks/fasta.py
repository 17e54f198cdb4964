"""FASTA reading, shared by the task parsers and ``bench predict``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plm_bench.errors import BenchError

if TYPE_CHECKING:
    from plm_bench.tasks.task import Example

FastaRecord = tuple[str, str, list[str], int]  # id, header after the id, content lines, header line number


def read_fasta(text: str, where: str) -> list[FastaRecord]:
    """Records of a FASTA text (sequences may span lines). A repeated id is an error naming both
    records: readers key records by id, so the later one would silently replace the earlier."""
    records: list[FastaRecord] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            name, rest = (line[1:].split(maxsplit=1) + ["", ""])[:2]  # the id ends at any whitespace (tabs too)
            if not name:
                raise BenchError(f"{where} line {number}: a header without an id")
            if name in first_line:
                raise BenchError(f"{where}: id {name} appears twice (records at lines {first_line[name]} and "
                                 f"{number}); ids must be unique: rename or drop one")
            first_line[name] = number
            records.append((name, rest.strip(), [], number))
        elif line:
            if not records:
                raise BenchError(f"{where} line {number}: text before the first '>' header; is this FASTA?")
            records[-1][2].append(line)
    if not records:
        raise BenchError(f"{where}: no FASTA records")
    return records


def read_examples(fasta: Path) -> list[Example]:
    """The FASTA's records as unlabelled examples, checked like task data."""
    from plm_bench.alphabet import check_sequence
    from plm_bench.tasks.sources import bounded_read, readable_text
    from plm_bench.tasks.task import Example

    try:
        text = readable_text(bounded_read(fasta), str(fasta))  # as task files are read: a BOM is fine
    except OSError as exc:
        raise BenchError(f"{fasta}: cannot read it ({exc})") from None
    examples = []
    for name, _header, lines, line in read_fasta(text, str(fasta)):  # ids are unique there
        # as written, as task data is read: an upper-cased copy would not be the sequence the file holds
        sequence = check_sequence("".join(lines), f"{fasta} record {name} (line {line})")
        examples.append(Example(id=name, sequence=sequence, label=None))
    return examples
