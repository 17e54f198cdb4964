"""Length-bucketed batches under a residue budget, for dynamic padding.

A batch is padded to its own longest sequence, so grouping sequences of similar length wastes
little compute on padding, and capping ``items x longest`` keeps memory flat whether a batch
holds many short proteins or a few long ones. Embedding, embedding caches and training batches
all share this one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_RESIDUE_BUDGET = 16384  # padded residues per batch: a few hundred MB of activations for a 650M model


def length_buckets(lengths: Sequence[int], max_residues: int = DEFAULT_RESIDUE_BUDGET,
                   max_items: int | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches of similar length.

    Each batch's padded size, ``len(batch) * max(its lengths)``, stays within ``max_residues``
    (a single sequence longer than the budget forms a batch of its own) and holds at most
    ``max_items`` indices. Within a batch indices run from short to long. With ``generator``
    the order of the batches is shuffled (for training); without it batches run from short to
    long, which is deterministic.
    """
    if max_residues < 1 or (max_items is not None and max_items < 1):
        raise ValueError(f"max_residues ({max_residues}) and max_items ({max_items}) must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # sorted ascending, so lengths[i] is the longest of the batch if i joins it
        full = max_items is not None and len(current) >= max_items
        if current and (full or (len(current) + 1) * lengths[i] > max_residues):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if generator is not None:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
    return batches
