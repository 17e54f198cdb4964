"""Train/test leakage: each evaluated protein's highest sequence identity to any training protein.

Identity is the number of identical aligned residues over the length of the shorter sequence
(CD-HIT's global identity), on a global Needleman-Wunsch alignment (BLOSUM62, gap open 10,
extend 1). Alignments run in pyopal (Opal's SIMD database search, in a pip wheel): for each
query every training sequence is scored, and the ``top`` best-scoring ones are aligned in full
to find the highest identity — a bounded search, as MMseqs2's prefilter is; exact copies are found
by hash first and always count as 100 %.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MATRIX = "BLOSUM62"
GAP_OPEN, GAP_EXTEND = 10, 1
THRESHOLDS = (0.3, 0.5, 0.9, 1.0)  # the counts `bench data overlap` reports (identity >= each)
TOP = 20  # full alignments per query after scoring against every training sequence


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
    """For each ``(id, sequence)`` query, the training ``(id, sequence)`` of highest identity."""
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
    return {t: int((array >= t - 1e-9).sum()) for t in thresholds}


@dataclass(frozen=True)
class Duplicates:
    """Exact repeats of a sequence: within one split, and of a training sequence in valid/test.

    ``pairs`` are ``(split, id, split of the first copy, id of the first copy)``, in split order
    (train, valid, test) then file order, so "the first copy" is the one ``--dedup`` keeps.
    """

    pairs: tuple[tuple[str, str, str, str], ...]

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


def duplicates(splits: dict[str, Sequence]) -> Duplicates:
    """Every example whose sequence appeared before (``splits`` maps split → examples)."""
    first: dict[str, tuple[str, str]] = {}
    pairs = []
    for split, examples in splits.items():
        for e in examples:
            key = digest(e.sequence)
            if key in first:
                pairs.append((split, e.id, *first[key]))
            else:
                first[key] = (split, e.id)
    return Duplicates(tuple(pairs))
