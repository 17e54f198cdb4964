"""``bench profile``: throughput and the memory envelope of a backbone and method on this device.

Attached to the ``bench`` group by the last line of ``plm_bench.cli``; torch and the measuring
code are imported inside the command, so ``bench --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from plm_bench.cli.common import config_options, console, device_option, err_console, store_option

STUDY_BUDGETS_GIB = (8.0, 16.0, 24.0)  # the study's Figure 5b columns


@click.command()
@config_options(only=("backbone", "method", "backbone_path", "dtype", "precision", "init", "batch_size"), overrides={
    "method": {"default": "lora", "help": "Adaptation method; frozen profiles inference (its backbone only embeds)."},
    "batch_size": {"default": 8, "show_default": True,  # the study's fine-tuning batch (DESIGN.md)
                   "help": "Sequences per step of the throughput measurement."}})
@device_option
@store_option("Results store the profile is added to, always: a profile not stored cannot be reported "
              "(default $PLM_BENCH_STORE or ./bench-results.sqlite; `bench report` shows its memory envelope).")
@click.option("--length", type=click.IntRange(min=1), default=256, show_default=True,
              help="Residues per sequence of the throughput measurement.")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed steps (after 1 warm-up).")
@click.option("--budget", "budgets", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Memory budget in GiB for the longest trainable sequence; repeatable "
                   "(default: 8, 16, 24 and on CUDA the device's total, as far as the device holds them).")
@click.option("--max-length", type=click.IntRange(min=1),
              help="Longest sequence the envelope search tries (default: the backbone's maximum, else 4096).")
@click.option("--resolution", type=click.IntRange(min=1), default=64, show_default=True,
              help="Residues to which the longest trainable length is found.")
@click.option("--no-envelope", is_flag=True, help="Measure throughput only.")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True),
              help="The device's bf16 peak for MFU, where the built-in table does not know it.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw peak memory against sequence length as a PNG here (needs matplotlib).")
def profile(backbone: str, method: str, backbone_path: str | None, init: str, dtype: str, precision: str, device: str,
            store: Path | None, batch_size: int, length: int, steps: int, budgets: tuple[float, ...],
            max_length: int | None, resolution: int, no_envelope: bool, peak_tflops: float | None,
            plot: Path | None) -> None:
    """Throughput and memory envelope (longest trainable sequence at batch 1 per budget) on this
    device, printed and added to the results store."""
    from plm_bench.errors import BenchError
    from plm_bench.measure.profiler import GIB, Profiler, plot_envelope, profile_config
    from plm_bench.results import profiles
    from plm_bench.results.store import Store
    from plm_bench.run import protocol
    from plm_bench.run.progress import display
    from plm_bench.run.protocol import RunContext

    torch_device = RunContext(data_dir=Path("."), device=device).torch_device
    if plot and no_envelope:
        raise BenchError("--plot draws the memory envelope: drop --no-envelope")
    results = Store(store)  # before measuring: an unwritable store fails now, not after minutes
    config = profile_config(backbone, method, backbone_path=backbone_path, dtype=dtype, precision=precision, init=init)
    progress = display(err_console)  # a bar in a terminal, a line per step in a log
    with progress:
        job = progress.add_task(f"loading {backbone}", total=None, announce=True)
        profiler = Profiler(config, torch_device, peak_flops=peak_tflops * 1e12 if peak_tflops else None)
        modes = ("train", "inference") if profiler.trains else ("inference",)
        progress.update(job, description="throughput", total=len(modes), completed=0)
        rates = []
        for mode in modes:
            rates.append(profiler.rate(mode, batch_size, length, steps))
            progress.advance(job)
        envelope = None
        if not no_envelope:
            cap = profiler.length_cap(max_length)
            budget_bytes = [int(b * GIB) for b in budgets] or default_budgets(profiler)
            progress.update(job, description=f"memory envelope ({profiler.mode} at batch 1)", total=None)


            def probed(n: int, peak: int | None) -> None:
                took = "out of memory" if peak is None else f"{peak / GIB:.2f} GiB"
                progress.update(job, description=f"memory envelope: {n} residues took {took}")

            envelope = profiler.envelope(budget_bytes, cap, resolution, on_probe=probed)
        progress.remove_task(job)

    dtype_name = protocol.dtype_name(profiler.backbone.parameters(), profiler.backbone.buffers())
    where = device_name(torch_device)
    counts = protocol.parameter_counts(profiler.backbone, profiler.model)
    computed = profiler.model.precision.name
    entry = profiles.entry(config, precision=computed, dtype=dtype_name, device=where, parameters=counts, rates=rates,
                           peak_flops=profiler.peak_flops, envelope=envelope,
                           environment=protocol.environment(torch_device))
    title = (f"{backbone} · {method} · {dtype_name} backbone weights, {computed} compute on {where} · "
             f"{counts['total'] / 1e6:,.1f}M parameters, {counts['trainable'] / 1e6:,.2f}M trainable")
    table = Table("step", "batch", "length", "residues/s", "model TFLOP/s", "MFU (bf16 peak)", title=title)
    for rate in rates:
        table.add_row(rate.mode, str(rate.batch_size), str(rate.length), f"{rate.residues_per_second:,.0f}",
                      f"{rate.flops_per_second / 1e12:.3g}", "n/a" if rate.mfu is None else f"{rate.mfu:.1%}")
    console.print(table)
    if envelope is not None:
        budgets_table = Table("budget (GiB)", "longest sequence at batch 1 (residues)",
                              title=f"Memory envelope: one {envelope.step} step at batch 1 "
                                    f"({profiles.MEMORY_KINDS[envelope.memory]}), to {resolution} residues")
        for budget, longest in envelope.longest.items():
            budgets_table.add_row(f"{budget / GIB:g}", profiles.longest_text(longest, envelope.max_length, resolution))
        console.print(budgets_table)
        console.print("measured: " + ", ".join(f"{n}: {'OOM' if p is None else f'{p / GIB:.2f} GiB'}"
                                               for n, p in envelope.peaks.items()), highlight=False)
        if plot:
            plot_envelope({f"{backbone} {method}": envelope}, plot)
            console.print(f"plot written to {plot}")
    profile_id = results.add_profile(entry)
    console.print(f"stored as profile {profile_id} in {results.path} (`bench report` shows it)", highlight=False,
                  soft_wrap=True)


def default_budgets(profiler) -> list[int]:
    """The study's 8/16/24 GiB and, on CUDA, the whole device, as far as this device holds them."""
    from plm_bench.measure.profiler import GIB

    room = profiler.meter.available()
    budgets = [int(b * GIB) for b in STUDY_BUDGETS_GIB if b * GIB <= room]
    if profiler.device.type == "cuda":
        import torch

        budgets.append(torch.cuda.get_device_properties(profiler.device).total_memory)
    return sorted(set(budgets)) or [room]


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({', '.join(filter(None, [platform.processor(), f'{torch.get_num_threads()} threads']))})"
