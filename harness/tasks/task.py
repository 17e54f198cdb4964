"""Tasks: labelled protein sequences split into train/valid/test, plus how to score them.

Most tasks are declarative: a TOML file (in ``tasks/``, or the user's own) names the level,
type, classes, metrics, the source files with their checksums, the format whose parser reads
them (one or more alternative *forms*, e.g. TAPE's JSON and a CSV conversion of the same
split) and the split rule. A plugin may also register a :class:`Task` built in code.

Parsers build examples through :class:`Labels`, which enforces one data policy for all tasks:

- Sequences are checked against the one alphabet of harness/alphabet.py (nothing is rewritten).
- Unknown labels (the definition's ``unknown`` value, e.g. CheZOD's 999, or a 0 in a mask
  file) are masked: never trained on, never scored. NaN, non-numeric or unknown class labels,
  per-residue labels whose length differs from the sequence, empty sequences and repeated ids
  are errors naming the file and the record.

A definition is checked against a strict JSON schema (unknown keys are errors, with a "did
you mean") before any data is read or model loaded. A custom task's identity is its name plus
the content digest of its definition and data files (``my_task@1f3a...``): the name goes into
every run's config, so an edited CSV or another project's ``my_task.toml`` is a different task,
never "already done" with a stale result.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
from sklearn.model_selection import train_test_split

from plm_bench import plugins
from plm_bench.alphabet import check_sequence
from plm_bench.errors import BenchError
from plm_bench.files import load_toml
from plm_bench.plugins.discovery import TASK_FILES
from plm_bench.plugins.specs import did_you_mean
from plm_bench.tasks import metrics
from plm_bench.tasks.sources import (
    RACY_NS,
    SPLITS,
    Source,
    content_digest,
    missing,
    read_bytes,
    read_digests,
    readable_text,
    sha256_of,
    stamped_digest,
    status,
    verified_path,
)

LEVELS = ("protein", "residue")
TYPES = ("regression", "classification")
_SEPARATORS = re.compile(r"[,\s]+")


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
class Labels:
    """Turns raw records into validated examples of one task (level, type, classes, unknown)."""

    level: str
    type: str
    classes: tuple[str, ...] = ()
    unknown: str | float | None = None

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def example(self, id: str, sequence: str, label: Any, where: str,
                mask: Sequence[bool] | np.ndarray | None = None) -> Example:
        """A validated example; ``mask`` (residue level) marks additionally unscored residues."""
        sequence = check_sequence(sequence, where)
        if self.level == "protein":
            return Example(id=id, sequence=sequence, label=self.protein_label(label, where))
        values, known = self.residue_labels(label, len(sequence), where)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if len(mask) != len(sequence):
                raise BenchError(f"{where}: the mask has {len(mask)} positions for {len(sequence)} residues")
            known &= mask
        values[~known] = 0
        return Example(id=id, sequence=sequence, label=values, mask=known)

    def protein_label(self, label: Any, where: str) -> float | int:
        if self.type == "classification":
            return self.class_index(str(label).strip(), where)
        value = number(label, where)
        if self.unknown is not None and value == float(self.unknown):
            raise BenchError(f"{where}: the label is the unknown value {self.unknown}; a protein-level task "
                             "cannot score it: remove the record")
        return value

    def class_index(self, name: str, where: str) -> int:
        if name not in self.index:
            raise BenchError(f"{where}: label {name!r} is not one of the classes {list(self.classes)}")
        return self.index[name]

    def residue_labels(self, label: Any, length: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-residue label array and the mask of known positions."""
        if isinstance(label, str):
            single = self.type == "classification" and all(len(c) == 1 for c in self.classes)
            tokens = list(label.strip()) if single else _SEPARATORS.split(label.strip())
        else:
            tokens = list(label)
        if len(tokens) != length:
            raise BenchError(f"{where}: {len(tokens)} per-residue labels for a sequence of {length} residues")
        if self.type == "classification":
            unknown = str(self.unknown) if self.unknown is not None else None
            lookup = {**self.index, **({unknown: -1} if unknown is not None else {})}
            values = np.fromiter((lookup.get(str(t), -2) for t in tokens), dtype=np.int64, count=length)
            if (values == -2).any():
                self.class_index(str(tokens[int(np.argmax(values == -2))]), where)  # raises, naming it
            known = values >= 0
            return np.where(known, values, 0), known
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError:
            bad = next(t for t in tokens if not is_number(t))
            raise BenchError(f"{where}: per-residue label {bad!r} is not a number") from None
        finite = np.isfinite(values)
        if not finite.all():
            position = int(np.argmin(finite))
            raise BenchError(f"{where}: per-residue label {values[position]} at position {position + 1}; mark "
                             "unknown values with the task's `unknown` value instead")
        known = values != float(self.unknown) if self.unknown is not None else np.ones(length, dtype=bool)
        return values.astype(np.float32), known


def is_number(token: Any) -> bool:
    try:
        float(token)
    except (TypeError, ValueError):
        return False
    return True


def number(value: Any, where: str) -> float:
    """A finite float label; anything else (NaN, empty, text) is an error naming the record."""
    if isinstance(value, list) and len(value) == 1:  # TAPE stores scalars as 1-element lists
        value = value[0]
    if not is_number(value) or isinstance(value, bool):
        raise BenchError(f"{where}: label {value!r} is not a number")
    result = float(value)
    if not math.isfinite(result):
        raise BenchError(f"{where}: label is {result}; remove the record or give its value")
    return result


@dataclass(frozen=True)
class Files:
    """The source files of one form of a task under ``root`` (data folder/task folder, or a
    custom task's own folder); parsers read them only through here, so they are verified."""

    root: Path
    task: str
    sources: tuple[Source, ...]
    local: bool = False  # a custom task's own files: no checksum needed (its name carries their digest)

    def source(self, role: str, split: str | None = None) -> Source:
        for source in self.sources:
            if source.role == role and (split is None or split in source.splits):
                return source
        raise BenchError(f"task {self.task}: no source with role {role!r}" + (f" for split {split}" if split else "")
                         + "; add it to the task definition")

    def where(self, source: Source, name: str = "") -> str:
        path = self.root / source.file
        return f"{path / name if name else path}{':' + source.member if source.member else ''}"

    def read(self, source: Source, name: str = "") -> bytes:
        return read_bytes(self.root, "", self.task, source, name, local=self.local)

    def text(self, source: Source, name: str = "") -> str:
        return readable_text(self.read(source, name), self.where(source, name))

    def digests(self) -> dict[str, str]:
        """``kind:hex`` of each source's local copy as it is now, by its name in the task folder (not
        the path: the same files under another --data-dir are the same inputs); missing or corrupt
        copies are one error. What a parse of these files depends on."""
        return {s.name: content_digest(verified_path(self.root, "", self.task, s), s) for s in self.sources}


@dataclass(frozen=True)
class Form:
    """One published form of a task's data: its format and the sources it reads."""

    format: str
    sources: tuple[Source, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def feeding(self, splits: Sequence[str]) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if set(s.splits) & set(splits))

    def missing(self, root: Path, splits: Sequence[str]) -> list[Source]:
        return [s for s in self.feeding(splits) if status_quick(root / s.file, s) == "missing"]


def status_quick(path: Path, source: Source) -> str:
    """``missing`` or ``there`` without hashing (which happens when the file is read)."""
    if source.members:
        return "there" if all((path / m).is_file() for m in source.members) else "missing"
    return "there" if path.is_file() else "missing"


Parser = Callable[[Files, Form, Labels, tuple[str, ...]], Splits]


def takes_options(*names: str) -> Callable[[Parser], Parser]:
    """Declare the form options a parser reads: a task definition may set these and no others."""
    def declare(parser: Parser) -> Parser:
        parser.options = names  # type: ignore[attr-defined]
        return parser
    return declare


def parser_options(parser: Parser) -> tuple[str, ...]:
    return getattr(parser, "options", ())


@dataclass(frozen=True)
class SplitRule:
    """Splits carved out of ``train`` with scikit-learn's ``train_test_split`` (test first,
    then validation from what remains), e.g. the study's disorder split: valid 0.1, seed 42."""

    valid_fraction: float = 0.0
    test_fraction: float = 0.0
    random_state: int = 42

    @property
    def carved(self) -> tuple[str, ...]:
        return tuple(s for s, f in (("valid", self.valid_fraction), ("test", self.test_fraction)) if f)

    def raw_splits(self, wanted: Sequence[str]) -> tuple[str, ...]:
        """The splits a parser must read to give ``wanted``."""
        needed = [s for s in wanted if s not in self.carved]
        if set(wanted) & set(self.carved) and "train" not in needed:
            needed.append("train")
        return tuple(needed)

    def apply(self, raw: Splits, where: str) -> Splits:
        result = dict(raw)
        for split, fraction in (("test", self.test_fraction), ("valid", self.valid_fraction)):
            if not fraction or "train" not in result:
                continue
            if result.get(split):
                raise BenchError(f"{where}: the data already has {split} records and the split rule carves "
                                 f"{split}_fraction; keep one of the two")
            result["train"], result[split] = train_test_split(result["train"], test_size=fraction,
                                                              random_state=self.random_state)
        return result


@dataclass(frozen=True)
class Task:
    """A benchmark task. ``load(data_dir)`` returns the three splits; declarative tasks also
    take ``splits=`` to load only some (for the splits whose files are present)."""

    name: str
    level: str
    type: str
    metric: str
    load: Callable[..., Splits] = field(repr=False)
    classes: tuple[str, ...] = ()
    description: str = ""
    secondary_metrics: tuple[str, ...] = ()
    folder: str = ""  # the data folder, when it differs from ``name`` (GFP's is `fluorescence`)
    forms: tuple[Form, ...] = ()
    root: Path | None = None  # where its files are when not in the data folder (beside its TOML): nothing to fetch

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise BenchError(f"task {self.name}: level must be one of {LEVELS}, not {self.level!r}")
        if self.type not in TYPES:
            raise BenchError(f"task {self.name}: type must be one of {TYPES}, not {self.type!r}")
        if self.type == "classification" and len(self.classes) < 2:
            raise BenchError(f"task {self.name}: a classification task needs >= 2 classes")
        if len(set(self.classes)) != len(self.classes):
            raise BenchError(f"task {self.name}: class names repeat in {list(self.classes)}")
        for name in self.metrics:
            metrics.check(name, self)

    @property
    def out_dim(self) -> int:
        return len(self.classes) if self.type == "classification" else 1

    @property
    def metrics(self) -> tuple[str, ...]:
        """Primary metric first, then the secondary ones."""
        return (self.metric, *(m for m in self.secondary_metrics if m != self.metric))

    @property
    def data_folder(self) -> str:
        return self.folder or self.name

    def present_splits(self, root: Path) -> tuple[str, ...]:
        """Splits some form can serve from the files under ``root`` (existence, not checksums)."""
        return tuple(s for s in SPLITS if any(not form.missing(root, (s,)) for form in self.forms))

    def source_status(self, root: Path) -> list[tuple[Form, Source, str]]:
        """Each download unit of each form with its status (see :func:`plm_bench.tasks.sources.status`)."""
        rows, seen = [], set()
        for form in self.forms:
            for source in form.sources:
                if source.download_key() not in seen:
                    seen.add(source.download_key())
                    rows.append((form, source, status(root / source.file, source)))
        return rows


TASK_KEYS = {"name", "level", "type", "metric", "secondary_metrics", "classes", "description", "folder",
             "unknown", "split", "forms", "format", "sources", "file"}
_TEXT = {"type": "string", "minLength": 1}
_FRACTION = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
SOURCE_SCHEMA = {
    "type": "object", "required": ["file"], "additionalProperties": False,
    "properties": {
        # checksum digits are checked by Source.parse, which names the file
        "file": _TEXT, "url": {"type": "string"}, "sha256": _TEXT, "git_blob": _TEXT, "git_tree": _TEXT,
        "members": {"type": "array", "items": _TEXT, "minItems": 1, "uniqueItems": True},
        "member": _TEXT, "role": _TEXT, "split": {"enum": list(SPLITS)},
        "splits": {"type": "array", "items": {"enum": list(SPLITS)}, "minItems": 1, "uniqueItems": True},
    },
}


def task_schema(formats: Mapping[str, Parser]) -> dict:
    """JSON schema of a task definition whose forms use ``formats`` (options: what each parser takes)."""
    options = {name: _TEXT for parser in formats.values() for name in parser_options(parser)}
    form = {"format": _TEXT, "sources": {"type": "array", "items": SOURCE_SCHEMA, "minItems": 1},
            "file": _TEXT}
    return {
        "type": "object", "required": ["name", "level", "type", "metric"], "additionalProperties": False,
        "properties": {
            # '@' joins a custom task's name and digest; '/' and spaces would break names in paths and CLIs
            "name": {"type": "string", "pattern": "^[^@/\\s]+$"},
            "level": {"enum": list(LEVELS)}, "type": {"enum": list(TYPES)}, "metric": _TEXT,
            "secondary_metrics": {"type": "array", "items": _TEXT, "uniqueItems": True},
            "classes": {"type": "array", "items": _TEXT, "minItems": 2, "uniqueItems": True},
            "description": {"type": "string"}, "folder": _TEXT,
            "unknown": {"type": ["number", "string"]},
            "split": {"type": "object", "additionalProperties": False,
                      "properties": {"valid_fraction": _FRACTION, "test_fraction": _FRACTION,
                                     "random_state": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}}},
            "forms": {"type": "array", "minItems": 1,
                      "items": {"type": "object", "required": ["format"], "additionalProperties": False,
                                "properties": {**form, **options}}},
            **form, **options,
        },
    }


def check_definition(definition: dict, formats: Mapping[str, Parser], where: str) -> None:
    """One error naming the key and the fix if ``definition`` is not a valid task definition."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(task_schema(formats)).iter_errors(definition))
    if error is not None:
        raise BenchError(f"{where}: {schema_message(error)}")
    if ("forms" in definition) == ("format" in definition):
        raise BenchError(f"{where}: give either a top-level `format` (with its sources) or [[forms]], "
                         "one of the two")
    if definition["type"] == "regression" and isinstance(definition.get("unknown", 0), str):
        raise BenchError(f"{where}: unknown = {definition['unknown']!r}: a regression task's unknown label "
                         "is a number (e.g. 999)")
    for i, entry in enumerate(definition.get("forms", [definition])):
        at = f"forms[{i}]." if "forms" in definition else ""
        if entry["format"] not in formats:
            raise BenchError(f"{where}: {at}format {entry['format']!r} is unknown; known: {', '.join(sorted(formats))}"
                             f"{did_you_mean(entry['format'], sorted(formats))}")
        allowed = parser_options(formats[entry["format"]])
        for key in sorted(set(entry) - TASK_KEYS - set(allowed)):
            raise BenchError(f"{where}: {at}{key} is not an option of format {entry['format']!r} "
                             f"(its options: {', '.join(allowed) or 'none'}){did_you_mean(key, allowed)}")
        if "file" in entry and "sources" in entry:
            raise BenchError(f"{where}: {at}give `file` or [[sources]], not both")
        if "file" not in entry and "sources" not in entry:
            raise BenchError(f"{where}: {at}the {entry['format']} form names no sources; add [[sources]] with `file`")


def schema_message(error: jsonschema.ValidationError) -> str:
    """A schema error in the words of the TOML file: the key, what is wrong, the fix."""
    at = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error.absolute_path).replace(".[", "[")
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        key = sorted(set(error.instance) - set(allowed))[0]
        return (f"{at + '.' if at else ''}{key} is not a known key{did_you_mean(key, allowed)}"
                f" (known: {', '.join(sorted(allowed))})")
    if error.validator == "required":
        return f"{at or 'the definition'} lacks {error.message.split(' is a required')[0]}; add it"
    return f"{at or 'the definition'}: {error.message}; fix the value (tasks/*.toml show each key)"


def declarative_task(definition: dict, formats: Mapping[str, Parser], where: str = "task definition",
                     base: Path | None = None, verified: bool = False) -> Task:
    """A task from a TOML definition, checked first (:func:`check_definition`). ``base``: the folder
    its file paths are relative to (then ``data_dir`` plays no part); its files need no checksum
    (a custom task's name carries their digest) unless ``verified`` (a plugin's shipped task)."""
    check_definition(definition, formats, where)
    local = base is not None and not verified
    name = definition["name"]
    labels = Labels(level=definition["level"], type=definition["type"],
                    classes=tuple(definition.get("classes", ())), unknown=definition.get("unknown"))
    rule = SplitRule(**definition.get("split", {}))
    forms = tuple(parse_form(f, formats, where, local=local)
                  for f in definition.get("forms", [top_level_form(definition)]))
    folder = definition.get("folder", "")

    # per process: the seeds of one invocation parse the files once; (splits, files read, their digests)
    parsed: dict[tuple, tuple[Splits, Files, dict[str, str]]] = {}

    def load(data_dir: Path, splits: Sequence[str] = SPLITS) -> Splits:
        """The splits, parsed again when a file of the task's folder changed (size, mtime) or a file
        the parse read has other content now (read again once per run: sources.forget_hashes).
        The digests of the files read go to ``sources.read_digests`` for the run's record."""
        root = base if base is not None else Path(data_dir) / (folder or name)
        facts = file_facts(root)
        key = (str(root.resolve()), tuple(splits), facts)
        cached = parsed.get(key)
        if cached is None or cached[1].digests() != cached[2]:
            cached = parse(root, splits)
        if time.time_ns() - max((mtime for *_, mtime in facts), default=0) >= RACY_NS:
            parsed[key] = cached  # files just written could change unseen within their mtime's tick
        read_digests.update(cached[2])
        return {split: list(examples) for split, examples in cached[0].items()}

    def parse(root: Path, splits: Sequence[str]) -> tuple[Splits, Files, dict[str, str]]:
        raw_needed = rule.raw_splits(splits)
        form = next((f for f in forms if not f.missing(root, raw_needed)), None)
        if form is None:
            first = forms[0].missing(root, raw_needed)[0]
            raise missing(root / first.file, name, first)
        files = Files(root=root, task=name, sources=form.feeding(raw_needed), local=local)
        digests = files.digests()  # before reading: a file changed during the parse fails the next check
        raw = formats[form.format](files, form, labels, raw_needed)
        check_unique_ids(raw, f"task {name} ({', '.join(files.where(s) for s in files.sources)})")
        result = rule.apply(raw, f"task {name}")
        for split in splits:
            if not result.get(split):
                raise BenchError(f"task {name}: no {split} records in "
                                 f"{', '.join(files.where(s) for s in files.sources)}; "
                                 "give records of that split or a split rule that carves it")
        return {split: result[split] for split in splits}, files, digests

    return Task(name=name, level=labels.level, type=labels.type, metric=definition["metric"],
                classes=labels.classes, description=definition.get("description", ""),
                secondary_metrics=tuple(definition.get("secondary_metrics", ())),
                folder=folder, forms=forms, load=load, root=base)


def file_facts(root: Path) -> tuple:
    """Path, size and mtime of every file under ``root``: what tells a parse still current."""
    if not root.is_dir():
        return ()
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()))


def top_level_form(definition: dict) -> dict:
    """The one form of a definition without ``[[forms]]``: its top-level format and sources."""
    form = {k: v for k, v in definition.items() if k not in TASK_KEYS - {"format", "sources"}}
    if "file" in definition and "sources" not in definition:
        form["sources"] = [{"file": definition["file"]}]
    return form


def parse_form(entry: dict, formats: Mapping[str, Parser], where: str, local: bool) -> Form:
    """One form of a checked definition (:func:`check_definition`)."""
    sources = tuple(Source.parse(s, where, local=local) for s in entry.get("sources", [{"file": entry.get("file")}]))
    by_file: dict[str, tuple] = {}
    for source in sources:
        if by_file.setdefault(source.file, source.download_key()) != source.download_key():
            raise BenchError(f"{where}: {source.file} is named twice with different URLs or checksums")
    options = {k: v for k, v in entry.items() if k not in ("format", "sources", "file")}
    return Form(format=entry["format"], sources=sources, options=options)


def check_unique_ids(splits: Splits, where: str) -> None:
    counts = Counter(e.id for examples in splits.values() for e in examples)
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise BenchError(f"{where}: record id {repeated[0]!r} occurs {counts[repeated[0]]} times "
                         f"({len(repeated)} ids repeat); ids must be unique")


def custom_task_definition(path: Path) -> tuple[Path, dict]:
    """The resolved path and definition of a user's task file (name defaults to the file stem)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise BenchError(f"task file {path} does not exist; give the path of a task TOML file")
    definition = load_toml(path)
    definition.setdefault("name", path.stem)
    return path, definition


def custom_task_name(path: Path, definition: dict) -> str:
    """``<name>@<digest>``: the digest covers the definition's bytes and every data file it names
    (relative to its folder), so the task's identity changes whenever what it computes from may.
    Call it on a checked definition (:func:`check_definition`)."""
    digest = hashlib.sha256(file_digest(path).encode())
    forms = definition.get("forms", [definition])
    names = sorted({s["file"] for f in forms for s in f.get("sources", [{"file": f.get("file")}]) if s.get("file")})
    members = {s["file"]: s.get("members", ()) for f in forms for s in f.get("sources", ())}
    for name in names:
        for relative in [Path(name) / m for m in members.get(name, ())] or [Path(name)]:
            digest.update(f"\0{relative}\0{file_digest(path.parent / relative)}".encode())
    return f"{definition['name']}@{digest.hexdigest()[:12]}"


def file_digest(path: Path) -> str:
    """sha256 of a file's content (``missing`` when absent: loading then says how to supply it),
    read again only when the file's size or mtime changed (sources.stamped_digest)."""
    if not path.is_file():
        return "missing"
    return stamped_digest([path], "sha256", lambda: sha256_of(path))


def use_task_file(path: Path) -> str:
    """Make the custom task in ``path`` available by name to this process and the workers it
    starts (through ``$PLM_BENCH_TASK_FILES``, which :func:`plugins.catalog` reads); returns the name,
    ``<name>@<digest>``."""
    path, definition = custom_task_definition(path)
    files = [f for f in os.environ.get(TASK_FILES, "").split(os.pathsep) if f]
    if str(path) not in files:
        os.environ[TASK_FILES] = os.pathsep.join([*files, str(path)])
    plugins.catalog.cache_clear()  # the file may have changed since it was registered
    error = plugins.catalog().broken.get(f"task file {path}")  # registers it now, checked
    if error:  # the file was refused: its one-line reason, not "unknown task"
        raise BenchError(error.partition(": ")[2])
    name = custom_task_name(path, definition)
    plugins.get("task", name)
    return name
