"""The on-disk cache of frozen embeddings: compute once, reuse across seeds, heads and learning rates.

An entry holds the per-residue embeddings of one list of sequences under one backbone, as a
single fp16 ``.npy`` array ``[total residues, hidden]`` that is memory-mapped when read (rows of
sequence ``i`` start at the sum of the lengths before it). Its name is a hash of everything the
numbers depend on: the backbone's class and the *content* of its weights (so retrained or
swapped weights, or ``--init random`` with another seed, miss), the run settings that change
embeddings (dtype, long-sequence policy) and the sequences themselves. Labels are not part of
the key, so tasks that share sequences share entries.

Writes go to a temporary file in the cache folder that is renamed into place only when
complete (``os.replace`` is atomic), so concurrent workers on a shared path never see or
corrupt a half-written entry; two workers missing at once both compute, and either result wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.files import CACHE_ENV, cache_root
from plm_bench.tasks.sources import current_umask
from plm_bench.tasks.task import Example

FORMAT_VERSION = 1  # bump when the layout or the meaning of an entry changes
CHUNK_ELEMENTS = 1 << 26  # residues x hidden per call of the embedding function (256 MiB at fp32)

Embed = Callable[[list[Example]], list[torch.Tensor]]


def default_folder() -> Path:
    """``$PLM_BENCH_CACHE/embeddings``, else ``~/.cache/plm-bench/embeddings``."""
    return cache_root() / "embeddings"


def fingerprint(module: nn.Module) -> str:
    """Hash of a module's class and the names, dtypes, shapes and bytes of its weights and buffers.

    Reading every weight costs about a second per GB; a hub revision or a file date would be
    cheaper but misses weights changed in place, local directories and random initialisation.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(f"\0{name}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


class CachedFeatures(Sequence):
    """Embeddings of one list of examples, read lazily from the memory-mapped entry: item ``i``
    is sequence ``i``'s ``[length, hidden]`` float32 tensor on ``device``."""

    def __init__(self, array: np.ndarray, lengths: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.array = array
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        rows = np.asarray(self.array[self.offsets[i]:self.offsets[i + 1]], dtype=np.float32)
        return torch.from_numpy(rows).to(self.device)


class EmbeddingCache:
    """Entries of one backbone (as loaded, with its weights) under one set of run settings."""

    def __init__(self, backbone: nn.Module, hidden_size: int, settings: Mapping[str, Any],
                 folder: Path | None = None) -> None:
        self.hidden_size = hidden_size
        self.folder = Path(folder) if folder else default_folder()
        self.model_key = json.dumps({"format": FORMAT_VERSION, "weights": fingerprint(backbone),
                                     "hidden": hidden_size, **settings}, sort_keys=True)

    def path(self, examples: Sequence[Example]) -> Path:
        """The entry of these sequences (in this order)."""
        digest = hashlib.blake2b(self.model_key.encode(), digest_size=20)
        for example in examples:
            digest.update(example.sequence.encode() + b"\n")
        return self.folder / f"{digest.hexdigest()}.npy"

    def features(self, examples: list[Example], embed: Embed, device: torch.device | str = "cpu") -> CachedFeatures:
        """The examples' embeddings: read from the cache, or computed with ``embed`` and stored.

        ``embed(examples)`` returns one ``[length, hidden]`` tensor per example; it is called on
        chunks of similar lengths, longest first, so memory stays bounded however large the split
        and a sequence too long for the backbone fails before any work is spent.
        """
        lengths = [len(e.sequence) for e in examples]
        path = self.path(examples)
        array = self._read(path, sum(lengths))
        if array is None:
            self._write(path, examples, embed)
            array = self._read(path, sum(lengths))
            if array is None:
                raise BenchError(f"embedding cache entry {path} was replaced or removed while in use; "
                                 f"rerun, and give each concurrent job the same {CACHE_ENV}")
        return CachedFeatures(array, lengths, device)

    def _read(self, path: Path, total: int) -> np.ndarray | None:
        """The entry memory-mapped, or None if absent or not what these examples need."""
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):  # absent, or not a readable .npy
            return None
        if array.dtype != np.float16 or array.shape != (total, self.hidden_size):
            return None
        return array

    def _write(self, path: Path, examples: list[Example], embed: Embed) -> None:
        lengths = np.array([len(e.sequence) for e in examples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=path.stem, suffix=".tmp")
        os.close(handle)
        try:
            if not examples:
                with open(temporary, "wb") as out:
                    np.save(out, np.zeros((0, self.hidden_size), np.float16))
            else:
                array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16,
                                                  shape=(int(offsets[-1]), self.hidden_size))
                longest_first = np.argsort(-lengths, kind="stable").tolist()  # too long or too big fails at once
                for chunk in chunks(longest_first, lengths, max(1, CHUNK_ELEMENTS // self.hidden_size)):
                    outputs = embed([examples[i] for i in chunk])
                    for i, output in zip(chunk, outputs, strict=True):
                        rows = array[offsets[i]:offsets[i + 1]]
                        if tuple(output.shape) != rows.shape:
                            raise BenchError(f"record {examples[i].id}: backbone gave embeddings of shape "
                                             f"{tuple(output.shape)}, expected {rows.shape}; the backbone "
                                             "must return one row per residue")
                        with np.errstate(over="ignore"):  # overflow is caught just below, naming the record
                            rows[:] = output.detach().float().cpu().numpy()
                        if not np.isfinite(rows).all():
                            raise BenchError(f"record {examples[i].id}: embedding is NaN or beyond fp16's range "
                                             "(|x| > 65504), which the frozen cache stores; try --dtype fp32 "
                                             "or a fine-tuning method")
                array.flush()
                del array
            os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes it private; entries are shared
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


def chunks(order: list[int], lengths: np.ndarray, budget: int) -> list[list[int]]:
    """Consecutive runs of ``order`` holding at most ``budget`` residues (at least one sequence)."""
    out: list[list[int]] = [[]]
    used = 0
    for i in order:
        if out[-1] and used + lengths[i] > budget:
            out.append([])
            used = 0
        out[-1].append(i)
        used += int(lengths[i])
    return out
