"""FASTA reading, shared by the task parsers and ``bench predict``."""

from __future__ import annotations

from plm_bench.errors import BenchError

FastaRecord = tuple[str, str, list[str], int]  # id, header after the id, content lines, header line number


def read_fasta(text: str, where: str) -> list[FastaRecord]:
    """Records of a FASTA text (sequences may span lines)."""
    records: list[FastaRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            name, rest = (line[1:].split(maxsplit=1) + ["", ""])[:2]  # the id ends at any whitespace (tabs too)
            if not name:
                raise BenchError(f"{where} line {number}: a header without an id")
            records.append((name, rest.strip(), [], number))
        elif line:
            if not records:
                raise BenchError(f"{where} line {number}: text before the first '>' header; is this FASTA?")
            records[-1][2].append(line)
    if not records:
        raise BenchError(f"{where}: no FASTA records")
    return records
