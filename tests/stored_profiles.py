"""Profile entries with known numbers, built through ``profiles.entry`` as ``bench profile`` builds them."""

from __future__ import annotations

from plm_bench.measure.profiler import GIB, Envelope, Rate
from plm_bench.measure.profiler import profile_config as config_of
from plm_bench.results import profiles


def rate(mode: str, batch_size: int = 8, length: int = 256, steps: int = 5, seconds: float = 2.0,
         peak_flops: float | None = None) -> Rate:
    """A rate whose residues/s is batch_size * length * steps / seconds (8 * 256 * 5 / 2 = 5120)."""
    flops = 1e12
    return Rate(mode=mode, batch_size=batch_size, length=length, steps=steps, seconds=seconds,
                residues_per_second=batch_size * length * steps / seconds, flops_per_second=flops,
                mfu=flops / peak_flops if peak_flops else None)


def profile(backbone: str, method: str, longest: dict[float, int] | None, *, max_length: int = 4096,
            resolution: int = 64, device: str = "CPU (2 threads)", dtype: str = "float32", seconds: float = 2.0,
            peak_flops: float | None = None, trainable: int = 1000, total: int = 8_000_000) -> dict:
    """A validated profile: ``longest`` maps budgets in GiB to longest lengths (None: no envelope);
    frozen measures inference only, like the command."""
    step = "inference" if method == "frozen" else "train"
    modes = ("inference",) if step == "inference" else ("train", "inference")
    memory = "cuda_reserved" if not device.startswith("CPU") else "process_rss"
    envelope = None if longest is None else Envelope(
        peaks={n: n * 1000 for n in sorted(set(longest.values())) if n}, max_length=max_length,
        resolution=resolution, longest={int(gib * GIB): n for gib, n in longest.items()}, step=step, memory=memory)
    return profiles.entry(config_of(backbone, method), dtype=dtype, device=device,
                          parameters={"trainable": trainable, "total": total},
                          rates=[rate(m, seconds=seconds, peak_flops=peak_flops) for m in modes],
                          peak_flops=peak_flops, envelope=envelope, environment={"torch": "2"})
