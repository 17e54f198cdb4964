"""Length-bucketed batches under a residue budget, for dynamic padding.

A batch is padded to its own longest sequence, so grouping sequences of similar length wastes
little compute on padding, and capping ``items x longest`` keeps memory flat whether a batch
holds many short proteins or a few long ones. Embedding, embedding caches, prediction and
training batches all share this one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_RESIDUE_BUDGET = 16384  # padded residues per batch: a few hundred MB of activations for a 650M model
POOL_BATCHES = 50  # training: batches drawn at random, then grouped by length (transformers' LengthGroupedSampler)


def length_buckets(lengths: Sequence[int], max_residues: int | None = DEFAULT_RESIDUE_BUDGET,
                   max_items: int | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches of similar length.

    Each batch's padded size, ``len(batch) * max(its lengths)``, stays within ``max_residues``
    (``None``: no cap; a single sequence longer than the budget forms a batch of its own) and
    holds at most ``max_items`` indices. Within a batch indices run from short to long.

    Without ``generator`` all indices are grouped at once and batches run from short to long,
    which is deterministic. With it (training) every epoch differs yet stays length-grouped:
    the indices are shuffled, cut into pools of ``POOL_BATCHES * max_items``, each pool is
    grouped by length, and the order of all batches is shuffled; the same generator state gives
    the same batches.
    """
    if (max_residues is not None and max_residues < 1) or (max_items is not None and max_items < 1):
        raise ValueError(f"max_residues ({max_residues}) and max_items ({max_items}) must be positive")
    if generator is None:
        return _group(range(len(lengths)), lengths, max_residues, max_items)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = POOL_BATCHES * max_items if max_items is not None else len(order)
    batches = [b for start in range(0, len(order), max(pool, 1))
               for b in _group(order[start:start + pool], lengths, max_residues, max_items)]
    return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]


def _group(indices: Sequence[int], lengths: Sequence[int], max_residues: int | None,
           max_items: int | None) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(indices, key=lambda i: lengths[i]):  # stable: ties keep the (shuffled) order
        # sorted ascending, so lengths[i] is the longest of the batch if i joins it
        full = max_items is not None and len(current) >= max_items
        over = max_residues is not None and (len(current) + 1) * lengths[i] > max_residues
        if current and (full or over):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
