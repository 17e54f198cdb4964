"""Uncertainty: bootstrap CIs over test proteins, and 95% CIs of a mean over seeds.

The bootstrap resamples whole proteins (also for residue tasks, whose residues are not
independent), re-scoring the task's primary metric on each resample. A resample is a count of
draws per protein, so for the usual primary metrics (Spearman, Pearson, accuracy, Q3, Q8) all
resamples are scored at once as weighted statistics over the proteins' residues, equal to
scoring each resample's pooled multiset; other metrics score resample by resample.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from plm_bench.errors import BenchError
from plm_bench.tasks.metrics import classes_of, pooled, score
from plm_bench.tasks.task import Example, Task

# resamples x scored values per block of the vectorized scores: 2 MiB of float64 stay in cache and in
# malloc's reused heap; 64 MiB blocks were 8x slower on a first call (fresh pages: 0.41 s against 0.05 s
# for 1,000 resamples of 50 disorder proteins, benchmarks' 2-core VM)
BLOCK_ELEMENTS = 1 << 18


def bootstrap_ci(task: Task, examples: list[Example], predictions: list[np.ndarray], seed: int,
                 resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the primary metric over proteins resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(examples)
    picks = np.stack([rng.integers(0, n, size=n) for _ in range(resamples)])  # the same draws as one at a time
    if task.metric in WEIGHTED:
        scores = weighted_scores(task, examples, predictions, picks)
    else:
        scores = [score(task, [examples[i] for i in row], [predictions[i] for i in row]) for row in picks]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)


def weighted_scores(task: Task, examples: list[Example], predictions: list[np.ndarray],
                    picks: np.ndarray) -> np.ndarray:
    """The primary metric of every resample (row of ``picks``, the proteins drawn), in blocks of
    resamples: protein tasks score the drawn values directly (ranked per row for Spearman);
    residue tasks weight each protein's residues by how often the protein was drawn."""
    y_true, y_pred = pooled(task, examples, predictions)
    n = len(examples)
    per_row = n if task.level == "protein" else len(y_true)
    block = max(1, BLOCK_ELEMENTS // max(1, per_row))
    rows = [picks[start:start + block] for start in range(0, len(picks), block)]
    if task.level == "protein":
        if task.metric not in CORRELATIONS:
            correct = (classes_of(y_pred) == y_true).astype(np.float64)
            return np.concatenate([correct[r].mean(1) for r in rows])
        ranked = task.metric == "spearman"
        return np.concatenate([pearson_rows(*(rankdata(v[r], axis=1) if ranked else v[r] for v in (y_true, y_pred)))
                               for r in rows])
    known = np.array([len(e.sequence) if e.mask is None else int(np.count_nonzero(e.mask)) for e in examples])
    counts = [np.stack([np.bincount(row, minlength=n) for row in r]).astype(np.float64) for r in rows]
    if task.metric not in CORRELATIONS:
        owner = np.repeat(np.arange(n), known)  # the protein of each pooled residue
        correct = np.bincount(owner, classes_of(y_pred) == y_true, minlength=n)
        return np.concatenate([c @ correct / (c @ known.astype(np.float64)) for c in counts])
    if task.metric == "pearson":  # every sum is a count-weighted sum of the proteins' own sums
        x, y = y_true.astype(np.float64), y_pred.astype(np.float64)
        sums = per_protein(np.stack([np.ones_like(x), x, y, x * x, y * y, x * y]), known)
        return np.concatenate([correlation(*(c @ sums.T).T) for c in counts])
    # Spearman: each resample ranks its own multiset, so the ranks are rows [R, N]
    below = [below_half_ties(v, np.repeat(np.arange(n), known), n) for v in (y_true, y_pred)]
    scores = []
    for c in counts:
        x, y = c @ below[0], c @ below[1]  # average ranks minus 1/2, which a correlation ignores
        weighted = [(c * per_protein(v, known)).sum(1) for v in (x, y, x * x, y * y, x * y)]
        scores.append(correlation(c @ known.astype(np.float64), *weighted))
    return np.concatenate(scores)


def per_protein(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``[..., n]``: the sums of ``values`` (``[..., N]``, the residues pooled protein by protein,
    ``known[p]`` of protein ``p``) over each protein's residues; 0 for a protein with none."""
    out = np.zeros((*values.shape[:-1], len(known)))
    present = known > 0
    out[..., present] = np.add.reduceat(values, np.r_[0, np.cumsum(known)[:-1]][present], axis=-1)
    return out


def below_half_ties(values: np.ndarray, owner: np.ndarray, proteins: int) -> np.ndarray:
    """``[proteins, N]``: how many of protein ``p``'s values are below value ``j``, plus half of
    those equal to it. A resample drawing protein ``p`` ``c_p`` times gives value ``j`` the
    average rank ``sum_p c_p * this + 1/2`` in its pooled multiset (scipy's ``rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_value)
    group = np.cumsum(new_value) - 1  # each sorted position's run of equal values
    last = np.r_[starts[1:], len(values)] - 1
    mine = np.zeros((proteins, len(values)))
    mine[owner[order], np.arange(len(values))] = 1
    through = np.cumsum(mine, 1)  # [p, k]: protein p's values among the first k + 1 sorted ones
    strictly_below = (through - mine)[:, starts[group]]
    up_to = through[:, last[group]]
    out = np.empty_like(mine)
    out[:, order] = (strictly_below + up_to) / 2
    return out


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``(x, y)`` (``[R, N]``), in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return correlation(np.full(len(x), float(x.shape[1])), x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1),
                       (x * y).sum(1))


def correlation(w: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
                sxy: np.ndarray) -> np.ndarray:
    """Pearson r from weighted sums (of 1, x, y, x², y², xy, each ``[R]``); 0 where either side is
    constant, as :func:`plm_bench.tasks.metrics.spearman` and ``pearson`` score it. One pass
    over the data instead of centring it first: ranks and labels are far from cancelling."""
    if (w < 2).any():
        raise BenchError(f"a bootstrap resample has {int(w.min())} scored values; correlations need at least 2")
    vx, vy = sxx - sx * sx / w, syy - sy * sy / w
    spread = (vx > 1e-12 * sxx) & (vy > 1e-12 * syy)
    r = (sxy - sx * sy / w) / np.sqrt(np.where(spread, vx * vy, 1.0))
    return np.where(spread, np.clip(r, -1.0, 1.0), 0.0)


CORRELATIONS = ("spearman", "pearson")
WEIGHTED = (*CORRELATIONS, "accuracy", "q3", "q8")  # primary metrics scored for all resamples at once


CI_RULES = ("t", "normal")


def mean_ci(values: list[float], rule: str = "t") -> tuple[float, float | None]:
    """Mean and 95% half-width over seeds; no half-width from a single value.

    ``t`` (default): the t-distribution's quantile with n-1 degrees of freedom times the standard
    error (4.30 with 3 seeds), right for the handful of seeds a run has. ``normal``: 1.96 standard
    errors, the study's rule (its tables report mean ± 1.96·SD/√n), to reproduce its numbers.
    """
    if rule not in CI_RULES:
        raise BenchError(f"CI rule {rule!r}: unknown; use one of {', '.join(CI_RULES)}")
    if len(values) < 2:
        return values[0], None
    quantile = 1.96 if rule == "normal" else float(stats.t.ppf(0.975, len(values) - 1))
    return mean(values), quantile * stdev(values) / math.sqrt(len(values))
