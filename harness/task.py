"""Tasks: labelled protein sequences split into train/valid/test, plus how to score them.

Most tasks are declarative (a TOML file in ``tasks/``) and name a *format* whose parser turns
the source files into :class:`Example` records; a plugin may also register a :class:`Task`
built in code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plm_bench.errors import BenchError

SPLITS = ("train", "valid", "test")
LEVELS = ("protein", "residue")
TYPES = ("regression", "classification")


@dataclass(frozen=True)
class Example:
    """One protein. ``label`` is a float/int (protein level) or an array over residues;
    ``mask`` (residue level) is True where the label is known and scored."""

    id: str
    sequence: str
    label: Any
    mask: np.ndarray | None = None


Splits = dict[str, list[Example]]


@dataclass(frozen=True)
class Task:
    """A benchmark task. ``load(data_dir)`` returns the three splits."""

    name: str
    level: str
    type: str
    metric: str
    load: Callable[[Path], Splits] = field(repr=False)
    classes: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise BenchError(f"task {self.name}: level must be one of {LEVELS}, not {self.level!r}")
        if self.type not in TYPES:
            raise BenchError(f"task {self.name}: type must be one of {TYPES}, not {self.type!r}")
        if self.type == "classification" and len(self.classes) < 2:
            raise BenchError(f"task {self.name}: a classification task needs >= 2 classes")

    @property
    def out_dim(self) -> int:
        return len(self.classes) if self.type == "classification" else 1


Parser = Callable[[Path, dict], Splits]


def declarative_task(definition: dict, parser: Parser) -> Task:
    """A task from a TOML definition; ``parser(data_dir, definition)`` reads its files."""
    try:
        return Task(
            name=definition["name"],
            level=definition["level"],
            type=definition["type"],
            metric=definition["metric"],
            classes=tuple(definition.get("classes", ())),
            description=definition.get("description", ""),
            load=lambda data_dir: parser(Path(data_dir), definition),
        )
    except KeyError as exc:
        raise BenchError(f"task definition lacks the key {exc}; add it") from None
