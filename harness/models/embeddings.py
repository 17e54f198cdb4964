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
The space is reserved up front (``posix_fallocate``) and written with plain writes, never
through a memory map, so a full disk is one error naming the folder and the space needed. A
temporary file is removed on any failure, and the temporaries of killed processes (SIGKILL,
SLURM's SIGTERM) by the next cache opened on the folder: their names carry host and pid.

Each entry ends with a checksum of its name (the hash of what it was computed from) and its rows
(a SHA-1 over the name and the per-sequence SHA-1s, in order), verified whenever it is opened: a
zeroed, permuted or overwritten entry, or another entry of the same shape copied over it, is
reported and recomputed, never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.files import CACHE_ENV, atomic_file, cache_root
from plm_bench.tasks.task import Example

FORMAT_VERSION = 3  # bump when the layout or the meaning of an entry changes (2: checksum trailer; 3: over its key)
CHUNK_ELEMENTS = 1 << 26  # residues x hidden per call of the embedding function (256 MiB at fp32)
TRAILER = b"plm-bench-sha1:"  # then the 20-byte digest: the last bytes of an entry
STALE_TEMPORARY_S = 24 * 3600  # a temporary of another host untouched this long is a dead writer's

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
    """Entries of one backbone (as loaded, with its weights) under one set of run settings.

    An entry holds one row per residue, plus ``extra_rows`` per sequence where the settings ask
    for token-level rows (the backbone's special tokens: ``--pooling tokens``)."""

    def __init__(self, backbone: nn.Module, hidden_size: int, settings: Mapping[str, Any],
                 folder: Path | None = None, extra_rows: int = 0, weights: str | None = None) -> None:
        """``weights``: the backbone's :func:`fingerprint` where the caller computed it already."""
        self.hidden_size = hidden_size
        self.extra_rows = extra_rows
        self.folder = Path(folder) if folder else default_folder()
        self.model_key = json.dumps({"format": FORMAT_VERSION, "weights": weights or fingerprint(backbone),
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
        lengths = [len(e.sequence) + self.extra_rows for e in examples]
        path = self.path(examples)
        array = self._read(path, lengths)
        if array is None:
            self._write(path, examples, embed)
            array = self._read(path, lengths)
            if array is None:
                raise BenchError(f"embedding cache entry {path} was replaced or removed while in use; "
                                 f"rerun, and give each concurrent job the same {CACHE_ENV}")
        return CachedFeatures(array, lengths, device)

    def _read(self, path: Path, lengths: Sequence[int]) -> np.ndarray | None:
        """The entry memory-mapped, or None if absent, not what these examples need, or corrupt
        (a corrupt entry is reported, and the caller recomputes it)."""
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError):  # absent, empty, or not a readable .npy: computed again
            return None
        if array.dtype != np.float16 or array.shape != (sum(lengths), self.hidden_size):
            return None
        expected = TRAILER + checksum(array, lengths, path.stem)
        with open(path, "rb") as handle:
            handle.seek(array.offset + array.nbytes)
            trailer = handle.read(len(expected) + 1)  # one byte more: trailing junk is damage too
        if trailer != expected:
            print(f"warning: embedding cache entry {path} is corrupt (its checksum differs); recomputing it",
                  file=sys.stderr)
            return None
        return array

    def _write(self, path: Path, examples: list[Example], embed: Embed) -> None:
        lengths = np.array([len(e.sequence) + self.extra_rows for e in examples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.folder.mkdir(parents=True, exist_ok=True)
        sweep(self.folder)
        row_bytes = self.hidden_size * 2
        digests: list[bytes] = [b""] * len(examples)
        size = int(offsets[-1]) * row_bytes  # the data; the header and trailer are added once known
        try:
            with atomic_file(path, prefix=f"{path.stem}.{temporary_tag()}.") as replacement, \
                    open(replacement.path, "r+b") as out:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": "<f2", "fortran_order": False, "shape": (int(offsets[-1]), self.hidden_size)})
                start = out.tell()
                out.flush()
                size = start + int(offsets[-1]) * row_bytes + len(TRAILER) + 20
                reserve(out.fileno(), size, self.folder)
                longest_first = np.argsort(-lengths, kind="stable").tolist()  # too long or too big fails at once
                for chunk in chunks(longest_first, lengths, max(1, CHUNK_ELEMENTS // self.hidden_size)):
                    outputs = embed([examples[i] for i in chunk])
                    for i, output in zip(chunk, outputs, strict=True):
                        shape = (int(lengths[i]), self.hidden_size)
                        if tuple(output.shape) != shape:
                            raise BenchError(f"record {examples[i].id}: backbone gave embeddings of shape "
                                             f"{tuple(output.shape)}, expected {shape}; the backbone "
                                             "must return one row per residue (per token with --pooling tokens)")
                        with np.errstate(over="ignore"):  # overflow is caught just below, naming the record
                            rows = output.detach().float().cpu().numpy().astype("<f2")
                        if not np.isfinite(rows).all():
                            raise BenchError(f"record {examples[i].id}: embedding is NaN or beyond fp16's range "
                                             "(|x| > 65504), which the frozen cache stores; try --dtype fp32 "
                                             "or a fine-tuning method")
                        data = rows.tobytes()
                        digests[i] = hashlib.sha1(data).digest()
                        written(os.pwrite(out.fileno(), data, start + int(offsets[i]) * row_bytes), data, self.folder,
                                size)
                trailer = TRAILER + hashlib.sha1(path.stem.encode() + b"".join(digests)).digest()
                written(os.pwrite(out.fileno(), trailer, size - len(trailer)), trailer, self.folder, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(self.folder, size) from None
            raise


def checksum(array: np.ndarray, lengths: Sequence[int], name: str) -> bytes:
    """SHA-1 over the entry's ``name`` (its key) and the SHA-1 of each sequence's rows, in order (as
    :meth:`EmbeddingCache._write` computes it): an entry only passes under the name it was written for."""
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return hashlib.sha1(name.encode() + b"".join(hashlib.sha1(array[offsets[i]:offsets[i + 1]]).digest()
                                                 for i in range(len(lengths)))).digest()


def no_space(folder: Path, size: int) -> BenchError:
    free = shutil.disk_usage(folder).free
    return BenchError(f"embedding cache {folder}: no space for a {size / 2**30:.2f} GiB entry ({free / 2**30:.2f} GiB "
                      f"free); free space there or point ${CACHE_ENV} at a larger disk")


def reserve(fd: int, size: int, folder: Path) -> None:
    """Claim ``size`` bytes for the entry now, so a full disk fails before any embedding is computed."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(folder, size) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without it: the writes will tell
            raise


def written(count: int, data: bytes, folder: Path, size: int) -> None:
    if count != len(data):  # a short write is a full disk
        raise no_space(folder, size)


def temporary_tag() -> str:
    """``<host>-<pid>``: whose temporary a file is, so that :func:`sweep` knows when its writer is gone."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def sweep(folder: Path) -> None:
    """Delete temporaries whose writer is dead: this host's by pid, other hosts' by age."""
    host = socket.gethostname().replace(".", "_")
    for path in folder.glob("*.tmp"):
        parts = path.name.split(".")
        tag = parts[1] if len(parts) >= 4 else ""
        writer_host, _, pid = tag.rpartition("-")
        try:
            if writer_host == host and pid.isdigit():
                if alive(int(pid)):
                    continue
            elif time.time() - path.stat().st_mtime < STALE_TEMPORARY_S:
                continue
            path.unlink()
        except OSError:  # gone already (another process swept it), or not ours to delete
            continue


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
