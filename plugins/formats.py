"""Parsers from the upstream file formats to :class:`Example` splits."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from plm_bench.data import read_source_text
from plm_bench.errors import BenchError
from plm_bench.task import Example, Splits


def parse_flip(data_dir: Path, definition: dict) -> Splits:
    """FLIP split CSV: ``sequence,target,set,validation``; validation marks part of train."""
    source = definition["sources"][0]
    text = read_source_text(data_dir, definition["name"], source)
    splits: Splits = {"train": [], "valid": [], "test": []}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=1):
        split = "test" if row["set"] == "test" else "valid" if row["validation"] == "True" else "train"
        try:
            label = float(row["target"])
        except ValueError:
            raise BenchError(f"{source['file']}:{source.get('member', '')} record {n}: "
                             f"target {row['target']!r} is not a number") from None
        splits[split].append(Example(id=f"{split}-{n}", sequence=row["sequence"], label=label))
    return splits


FORMATS = {"flip": parse_flip}
