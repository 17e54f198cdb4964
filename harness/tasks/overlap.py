"""Train/test leakage: each evaluated protein's highest sequence identity to any training protein.

Identity is the number of identical aligned residues over the length of the shorter sequence
(CD-HIT's global identity), on a global Needleman-Wunsch alignment (BLOSUM62, gap open 10,
extend 1). Alignments run in pyopal (Opal's SIMD database search, in a pip wheel): for each
query every training sequence is scored, and the ``top`` best-scoring ones are aligned in full
to find the highest identity — a bounded search, as MMseqs2's prefilter is; exact copies are found
by hash first and always count as 100 %.

A run uses two of these (:func:`repeats`, :func:`identity_subset`, called by the protocol on the
splits as it trains and scores them, i.e. after ``--limit-*``/``--train-fraction``): every record
counts its repeated sequences (``--dedup true`` drops the later copies), and ``--max-identity T``
scores only the test proteins at most ``T`` identical to every training protein. Validation is
not filtered: it picks the checkpoint, and leaving it whole keeps the trained model the same
whatever the threshold, so runs that differ only in ``max_identity`` differ only in what is scored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file, cache_root
from plm_bench.tasks.sources import SPLITS

MATRIX = "BLOSUM62"
GAP_OPEN, GAP_EXTEND = 10, 1
THRESHOLDS = (0.3, 0.5, 0.9, 1.0)  # the counts `bench data overlap` reports (identity >= each)
TOP = 20  # full alignments per query after scoring against every training sequence
EPSILON = 1e-9  # identities are ratios of lengths: a value equal to a threshold meets it from either side
SHOWN = 5  # example ids a run record keeps of its repeats and of the test proteins it dropped


def identity(alignment: str, query_length: int, target_length: int) -> float:
    """Identical aligned residues (``M`` in Opal's alignment string) over the shorter length."""
    return alignment.count("M") / min(query_length, target_length)


@dataclass(frozen=True)
class Nearest:
    """A query's closest training protein and their identity."""

    query: str
    train: str
    identity: float


def nearest(queries: Sequence[tuple[str, str]], train: Sequence[tuple[str, str]], top: int = TOP,
            threads: int = 1) -> list[Nearest]:
    """For each ``(id, sequence)`` query, the training ``(id, sequence)`` of highest identity.

    Kept under ``$PLM_BENCH_CACHE/identity``, named by a digest of both sides and the search
    settings: the seeds and methods of a grid (and ``bench data overlap``, ``bench report``)
    align one test set once. An unreadable or mismatched entry is searched again and replaced.
    """
    import pyopal

    key = json.dumps([pyopal.__version__, MATRIX, GAP_OPEN, GAP_EXTEND, top, list(queries), list(train)])
    path = cache_root() / "identity" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    try:
        found = [Nearest(str(q), str(t), float(i)) for q, t, i in json.loads(path.read_text())]
        if [n.query for n in found] == [name for name, _ in queries]:
            return found
    except (OSError, ValueError, TypeError):
        pass  # absent or unreadable: search
    found = search(queries, train, top, threads)
    with atomic_file(path) as replacement:
        replacement.path.write_text(json.dumps([[n.query, n.train, n.identity] for n in found]))
    return found


def search(queries: Sequence[tuple[str, str]], train: Sequence[tuple[str, str]], top: int,
           threads: int) -> list[Nearest]:
    """:func:`nearest` without the cache: hash for exact copies, score every training sequence,
    align the ``top`` best in full."""
    import pyopal

    by_hash = {digest(s): name for name, s in reversed(train)}
    database = pyopal.Database([s for _, s in train])
    found = []
    for name, sequence in queries:
        copy = by_hash.get(digest(sequence))
        if copy is not None:
            found.append(Nearest(name, copy, 1.0))
            continue
        scores = np.array([r.score for r in pyopal.align(
            sequence, database, MATRIX, gap_open=GAP_OPEN, gap_extend=GAP_EXTEND, mode="score",
            algorithm="nw", threads=threads, ordered=True)])
        best = np.argsort(-scores, kind="stable")[:top]
        shortlist = pyopal.Database([train[i][1] for i in best])
        hits = [(identity(r.alignment, r.query_length, r.target_length), int(best[r.target_index]))
                for r in pyopal.align(sequence, shortlist, MATRIX, gap_open=GAP_OPEN, gap_extend=GAP_EXTEND,
                                      mode="full", algorithm="nw", threads=threads, ordered=True)]
        value, index = max(hits, key=lambda hit: (hit[0], -hit[1]))
        found.append(Nearest(name, train[index][0], value))
    return found


def digest(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()


def histogram(values: Sequence[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """``(low, high, count)`` per identity bin; the last bin includes 1.0."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(0.0, 1.0))
    return [(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]


def above(values: Sequence[float], thresholds: Sequence[float] = THRESHOLDS) -> dict[float, int]:
    """How many values reach each threshold (identity >= t)."""
    array = np.asarray(values, dtype=float)
    return {t: int((array >= t - EPSILON).sum()) for t in thresholds}


@dataclass(frozen=True)
class Duplicates:
    """Exact repeats of a sequence: within one split, and of an earlier split's sequence in valid/test.

    ``pairs`` are ``(split, id, split of the first copy, id of the first copy)``, in split order
    (train, valid, test) then file order, so "the first copy" is the one ``--dedup`` keeps;
    ``later`` holds the ``(split, position)`` of each pair's repeat, the example ``--dedup`` drops.
    """

    pairs: tuple[tuple[str, str, str, str], ...]
    later: tuple[tuple[str, int], ...] = ()
    splits: tuple[str, ...] = ()

    def within(self) -> int:
        return sum(a == b for a, _, b, _ in self.pairs)

    def across(self) -> int:
        return sum(a != b for a, _, b, _ in self.pairs)

    def summary(self, limit: int = 3) -> str:
        if not self.pairs:
            return "none"
        shown = "; ".join(f"{s} {i} = {fs} {fi}" for s, i, fs, fi in self.pairs[:limit])
        more = f"; {len(self.pairs) - limit} more" if len(self.pairs) > limit else ""
        return f"{self.within()} within a split, {self.across()} across splits ({shown}{more})"

    def section(self) -> dict:
        """The run record's ``duplicates``: repeats within each split, copies of an earlier split's
        sequence per pair (``valid-train``: a valid sequence also in train), the first few pairs."""
        within = {s: 0 for s in self.splits}
        across = {f"{later}-{first}": 0 for i, later in enumerate(self.splits) for first in self.splits[:i]}
        for split, _, first, _ in self.pairs:
            if split == first:
                within[split] += 1
            else:
                across[f"{split}-{first}"] += 1
        examples = [{"split": s, "id": i, "first_split": fs, "first_id": fi} for s, i, fs, fi in self.pairs[:SHOWN]]
        return {"within": within, "across": across, "examples": examples}


def duplicates(splits: dict[str, Sequence]) -> Duplicates:
    """Every example whose sequence appeared before (``splits`` maps split → examples), walking
    train, valid, test in that order whatever order a task's loader returned them in."""
    order = sorted(splits, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS))
    first: dict[str, tuple[str, str]] = {}
    pairs, later = [], []
    for split in order:
        for position, e in enumerate(splits[split]):
            key = digest(e.sequence)
            if key in first:
                pairs.append((split, e.id, *first[key]))
                later.append((split, position))
            else:
                first[key] = (split, e.id)
    return Duplicates(tuple(pairs), tuple(later), tuple(order))


def repeats(splits: dict[str, list], dedup: bool, task: str) -> tuple[dict[str, list], dict]:
    """A run's splits and its record's ``duplicates`` section; with ``dedup`` every later copy is
    dropped (a repeat within a split after its first, and any valid or test sequence already in
    an earlier split, so test never holds a sequence trained on or selected by) and counted."""
    found = duplicates(splits)
    section = found.section()
    if not dedup:
        return splits, section
    drop = set(found.later)
    kept = {s: [e for i, e in enumerate(examples) if (s, i) not in drop] for s, examples in splits.items()}
    empty = [s for s in kept if splits[s] and not kept[s]]
    if empty:
        raise BenchError(f"--dedup true leaves task {task}'s {empty[0]} split empty: all {len(splits[empty[0]])} "
                         "of its sequences occur earlier (see `bench data list`); run without --dedup")
    return kept, {**section, "dropped": {s: len(splits[s]) - len(kept[s]) for s in splits}}


def identity_subset(splits: dict[str, list], max_identity: float | None, task: str,
                    threads: int = 1) -> tuple[dict[str, list], dict | None]:
    """The splits with test reduced to the proteins whose highest identity to any training protein
    is at most ``max_identity``, and the record's ``test_subset`` section; unchanged (and no
    alignment run) when ``max_identity`` is None."""
    if max_identity is None:
        return splits, None
    started = time.perf_counter()
    test = splits["test"]
    found = nearest([(e.id, e.sequence) for e in test], [(e.id, e.sequence) for e in splits["train"]],
                    threads=threads)
    keep = [n.identity <= max_identity + EPSILON for n in found]
    if not any(keep):
        raise BenchError(f"--max-identity {max_identity:g}: every one of task {task}'s {len(test)} test proteins "
                         f"is more identical to a training protein (the least: {min(n.identity for n in found):.1%}"
                         "; `bench data overlap` shows them all); raise the threshold")
    dropped = sorted((n for n, k in zip(found, keep, strict=True) if not k), key=lambda n: -n.identity)
    section = {"max_identity": max_identity, "kept": sum(keep), "dropped": len(dropped),
               "examples": [{"id": n.query, "train": n.train, "identity": n.identity} for n in dropped[:SHOWN]],
               "seconds": time.perf_counter() - started}
    return {**splits, "test": [e for e, k in zip(test, keep, strict=True) if k]}, section
