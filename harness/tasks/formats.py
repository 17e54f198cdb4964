"""Parsers from the upstream file formats to :class:`Example` splits: the ``format`` of a task
definition (tasks/*.toml, a user's task file, a plugin's :func:`~plm_bench.load_task`).

A parser gets the task's verified files (:class:`Files`), the form's options, the label
policy (:class:`Labels`) and the splits to produce; it returns those splits (a split rule may
carve more out of ``train`` afterwards). Every error names the file and the record.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import PurePosixPath

import numpy as np

from plm_bench.errors import BenchError
from plm_bench.tasks.fasta import read_fasta
from plm_bench.tasks.sources import SPLITS
from plm_bench.tasks.task import Example, Files, Form, Labels, Parser, Splits, takes_options


def header_fields(header: str) -> dict[str, str]:
    """``KEY=value`` pairs of a FASTA header, keys lower-cased (FLIP writes ``SET=train``)."""
    return {k.lower(): v for k, _, v in (token.partition("=") for token in header.split()) if _}


MAX_FIELD_CHARS = 16 << 20  # per-residue labels of the longest proteins (about 36,000 residues) fit many times


def csv_rows(files: Files, source, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV source, numbered as records (header = record 0), with ``columns`` checked."""
    where = files.where(source)
    csv.field_size_limit(MAX_FIELD_CHARS)  # per-residue labels of a long protein exceed csv's 128 KiB default
    reader = csv.DictReader(io.StringIO(files.text(source), newline=""))
    try:
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if absent:
            raise BenchError(f"{where}: no column {absent[0]!r} (columns: {reader.fieldnames}); fix the file or "
                             "the task's column options")
        rows = list(enumerate(reader, start=1))
    except csv.Error as exc:
        raise BenchError(f"{where} line {reader.line_num}: {exc} (a field may hold at most {MAX_FIELD_CHARS} "
                         "characters); fix the file") from None
    for n, row in rows:
        if None in row or None in row.values():  # DictReader's marks of a row longer / shorter than the header
            raise BenchError(f"{where} record {n}: {'more' if None in row else 'fewer'} fields than the header's "
                             f"{len(reader.fieldnames or [])}; fix the row (quote values that hold commas)")
    return rows


def parse_flip(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """FLIP split CSV ``sequence,target,set,validation``: ``validation`` True marks the
    validation part of ``set == train``."""
    source = files.source("data")
    out: Splits = {s: [] for s in SPLITS}
    for n, row in csv_rows(files, source, ("sequence", "target", "set", "validation")):
        where = f"{files.where(source)} record {n}"
        if row["set"] not in ("train", "test"):
            raise BenchError(f"{where}: set {row['set']!r} is neither train nor test")
        split = "test" if row["set"] == "test" else "valid" if row["validation"] == "True" else "train"
        out[split].append(labels.example(f"{split}-{n}", row["sequence"], row["target"], where))
    return out


def parse_flip_residue(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """FLIP per-residue FASTA triple: ``sequences``, ``mask`` (0 = unresolved, not scored) and
    ``labels`` (one class letter per residue; header ``SET=<train|test> VALIDATION=<bool>``),
    the same ids in the same order."""
    triple = {role: files.source(role) for role in ("sequences", "mask", "labels")}
    records = {role: read_fasta(files.text(s), files.where(s)) for role, s in triple.items()}
    if not len(records["sequences"]) == len(records["mask"]) == len(records["labels"]):
        raise BenchError(f"{files.where(triple['sequences'])}: sequences, mask and labels hold different numbers "
                         "of records; are they from the same archive?")
    out: Splits = {s: [] for s in SPLITS}
    for n, (seq, mask, lab) in enumerate(zip(*records.values(), strict=True), start=1):
        where = f"{files.where(triple['labels'])} record {n} ({lab[0]})"
        if not seq[0] == mask[0] == lab[0]:
            raise BenchError(f"{where}: ids differ across sequences/mask/labels ({seq[0]}, {mask[0]}, {lab[0]})")
        fields = header_fields(lab[1])
        split = "test" if fields.get("set") == "test" else "valid" if fields.get("validation") == "True" else "train"
        mask_text = "".join(mask[2])
        if set(mask_text) - {"0", "1"}:
            raise BenchError(f"{files.where(triple['mask'])} record {n} ({mask[0]}): the mask holds characters "
                             "other than 0 and 1")
        out[split].append(labels.example(seq[0], "".join(seq[2]), "".join(lab[2]), where,
                                         mask=np.frombuffer(mask_text.encode(), dtype=np.uint8) == ord("1")))
    return out


def parse_chezod(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """SETH's CheZOD files. Train: a FASTA and a scores file of lines ``ID:\\t<s1>, <s2>, ...``
    in the same order. Test: a FASTA and a folder of ``zscores<ID>.txt`` files with lines
    ``<residue> <number> <score>``, one per residue."""
    out: Splits = {}
    for split in splits:
        sequences = files.source("sequences", split)
        scores = files.source("scores", split)
        fasta = read_fasta(files.text(sequences), files.where(sequences))
        if scores.members:
            out[split] = [chezod_folder_record(files, scores, name, "".join(lines), labels)
                          for name, _, lines, _ in fasta]
            continue
        lines = [line for line in files.text(scores).splitlines() if line.strip()]
        if len(lines) != len(fasta):
            raise BenchError(f"{files.where(scores)}: {len(lines)} score lines for {len(fasta)} sequences in "
                             f"{files.where(sequences)}")
        out[split] = []
        for n, (line, (name, _, seq_lines, _)) in enumerate(zip(lines, fasta, strict=True), start=1):
            where = f"{files.where(scores)} line {n} ({name})"
            score_id, sep, values = line.partition(":\t")
            if not sep or score_id != name:
                raise BenchError(f"{where}: expected '{name}:<tab><scores>' (same order as the FASTA)")
            out[split].append(labels.example(name, "".join(seq_lines), values, where))
    return out


def chezod_folder_record(files: Files, scores, name: str, sequence: str, labels: Labels) -> Example:
    member = f"zscores{name}.txt"
    where = files.where(scores, member)
    if member not in scores.members:
        raise BenchError(f"{where}: the score file of {name} is not among the folder's members")
    values = []
    for n, line in enumerate(files.text(scores, member).splitlines(), start=1):
        parts = line.split()
        if len(parts) != 3:
            raise BenchError(f"{where} line {n}: expected '<residue> <number> <score>', got {line!r}")
        if n > len(sequence) or parts[0] != sequence[n - 1]:
            raise BenchError(f"{where} line {n}: residue {parts[0]} does not match the sequence of {name}")
        values.append(parts[2])
    return labels.example(name, sequence, values, where)


def parse_light_attention(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """Light-Attention DeepLoc FASTA: header ``>ACC <Location>-<M|S|U> [test]``; the class is
    the text before the first ``-`` (so ``Cytoplasm-Nucleus-U`` counts as Cytoplasm, as LA's
    loader does)."""
    out: Splits = {}
    for split in splits:
        source = files.source("data", split)
        out[split] = []
        for name, header, lines, line in read_fasta(files.text(source), files.where(source)):
            where = f"{files.where(source)} line {line} ({name})"
            location = header.split()[0].split("-")[0] if header else ""
            out[split].append(labels.example(name, "".join(lines), location, where))
    return out


@takes_options("label_key")
def parse_tape_json(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """TAPE raw JSON (``data_raw_pytorch``): a list of records with ``primary`` (the
    sequence) and the label under ``label_key`` (a number or a one-element list)."""
    key = form.options.get("label_key", "target")
    out: Splits = {}
    for split in splits:
        source = files.source("data", split)
        try:
            records = json.loads(files.text(source))
        except json.JSONDecodeError as exc:
            raise BenchError(f"{files.where(source)}: not valid JSON ({exc})") from None
        if not isinstance(records, list):
            raise BenchError(f"{files.where(source)}: expected a JSON list of records")
        out[split] = []
        for n, record in enumerate(records, start=1):
            where = f"{files.where(source)} record {n}"
            if not isinstance(record, dict) or "primary" not in record or key not in record:
                raise BenchError(f"{where}: a record needs 'primary' and {key!r}")
            out[split].append(labels.example(f"{split}-{n}", record["primary"], record[key], where))
    return out


@takes_options("sequence_column", "label_column", "split_column", "id_column")
def parse_csv(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """A CSV with a sequence and a label column (per-residue labels: one class letter per
    residue, or values separated by spaces or commas), an optional id column and an optional
    split column (train/valid/test). A source that feeds one split holds only that split."""
    options = form.options
    seq_col, label_col = options.get("sequence_column", "sequence"), options.get("label_column", "label")
    split_col, id_col = options.get("split_column"), options.get("id_column")
    out: Splits = {s: [] for s in SPLITS}
    for source in files.sources:
        stem = PurePosixPath(source.file).stem
        columns = tuple(c for c in (seq_col, label_col, split_col, id_col) if c)
        for n, row in csv_rows(files, source, columns):
            where = f"{files.where(source)} record {n}"
            if len(source.splits) == 1:
                split = source.splits[0]
            elif split_col:
                split = row[split_col].strip()
                if split not in SPLITS:
                    raise BenchError(f"{where}: split {split!r} must be one of {SPLITS}")
            else:
                split = "train"  # the split rule carves valid/test
            record_id = row[id_col].strip() if id_col else f"{stem}-{n}"
            out[split].append(labels.example(record_id, row[seq_col].strip(), row[label_col], where))
    return out


@takes_options("label_key", "split_key")
def parse_fasta(files: Files, form: Form, labels: Labels, splits: tuple[str, ...]) -> Splits:
    """A FASTA with ``key=value`` fields in the header: the label (``label_key``, default
    ``label``) for protein tasks and the split (``split_key``, default ``split``; absent: the
    split rule carves). Residue tasks take labels from a second FASTA (source role ``labels``)
    with the same ids: one class letter per residue, or values separated by spaces."""
    label_key, split_key = form.options.get("label_key", "label"), form.options.get("split_key", "split")
    source = files.source("data")
    per_residue = {}
    if labels.level == "residue":
        label_source = files.source("labels")
        per_residue = {name: (" ".join(lines), line) for name, _, lines, line in
                       read_fasta(files.text(label_source), files.where(label_source))}
    out: Splits = {s: [] for s in SPLITS}
    for name, header, lines, line in read_fasta(files.text(source), files.where(source)):
        where = f"{files.where(source)} line {line} ({name})"
        fields = header_fields(header)
        split = fields.get(split_key, "train")
        if split not in SPLITS:
            raise BenchError(f"{where}: {split_key}={split!r} must be one of {SPLITS}")
        if labels.level == "protein":
            if label_key not in fields:
                raise BenchError(f"{where}: the header has no {label_key}=<value>")
            label = fields[label_key]
        else:
            if name not in per_residue:
                raise BenchError(f"{where}: {files.where(label_source)} has no labels for {name}")
            label = per_residue[name][0]
            if labels.type == "classification" and all(len(c) == 1 for c in labels.classes):
                label = re.sub(r"\s+", "", label)
        out[split].append(labels.example(name, "".join(lines), label, where))
    return out


FORMATS: dict[str, Parser] = {
    "flip": parse_flip,
    "flip_residue": parse_flip_residue,
    "chezod": parse_chezod,
    "light_attention": parse_light_attention,
    "tape_json": parse_tape_json,
    "csv": parse_csv,
    "fasta": parse_fasta,
}
