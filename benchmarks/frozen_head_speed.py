"""The study protocol's frozen per-residue heads: today's path against the stacked fast path, in one run.

Measured on the same machine in the same run, idle and with a second process keeping one core
busy (a shared node, or a grid with another worker), with the load average (``uptime``) beside
each figure:

- the bare-PyTorch floor: an Adam step of the study's head (Dense(32, relu), dropout 0.2, output)
  on a batch of 8 residues, one thread, nothing else;
- the per-step time of one seed's head: today's path (the general training loop of
  harness/run/training.py with torch's default threads, as plm-bench ran before its thread
  policy) and ours (harness/run/frozen_heads.py, one thread), each from its record's
  ``train_seconds`` over its optimizer steps;
- the study's frozen disorder cell end to end (onehot embeddings, 5 seeds): today's path runs
  the seeds one after another, ours trains them as one stacked model (``execute_together``).

Outputs-equal check: each seed's test Spearman from both paths agrees within ``--tolerance``.
Targets: the cell >= 10x faster than today's path; our head step within 2x of the floor.

The study trains disorder for 50 epochs on 1,056 proteins (~15,600 steps an epoch per seed);
today's path needs hours for that, so by default the cell runs ``--limit-train 32`` proteins for
``--epochs 1`` (the fraction is printed, with the ratio of training time alone, which a full cell,
nearly all training, tends to); ``--limit-train 0 --epochs 50`` runs it whole.

    python benchmarks/frozen_head_speed.py --data-dir ../shared/datasets
    python benchmarks/frozen_head_speed.py --smoke      # seconds: the same code on a sliver (CI)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import click
import torch
from notebook_baseline import DATA_DIR, print_report, timed, verdict
from torch import nn

from plm_bench.config import RunConfig
from plm_bench.run import frozen_heads, threads
from plm_bench.run.protocol import RunContext, execute, execute_together
from plm_bench.tasks.sources import default_data_dir

CELL_TARGET = 10.0  # the 5-seed cell, today's path / ours
STEP_TARGET = 2.0  # our head step / the bare floor, at most
TODAY_THREADS = torch.get_num_threads()  # torch's default in this process, what plm-bench used before its policy


def load() -> str:
    """The load averages over 1, 5 and 15 minutes, as ``uptime`` prints them."""
    return "load " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def bare_floor_ms(inputs: int, steps: int) -> float:
    """Milliseconds per Adam step of the study's per-residue head on 8 residues, one thread, bare PyTorch."""
    with threads.using(1):
        torch.manual_seed(0)
        head = nn.Sequential(nn.Linear(inputs, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-4, eps=1e-7)
        x, y = torch.randn(8, inputs), torch.randn(8)

        def step() -> None:
            optimizer.zero_grad()
            nn.functional.mse_loss(head(x).squeeze(-1), y).backward()
            optimizer.step()

        for _ in range(steps // 10):
            step()
        return timed(lambda: [step() for _ in range(steps)]) / steps * 1e3


@contextmanager
def todays_path() -> Iterator[None]:
    """plm-bench as it ran before this fast path: the general loop, torch's default threads."""
    with mock.patch.object(frozen_heads, "fits", lambda *args: False), \
            mock.patch.dict(os.environ, {threads.ENV: str(TODAY_THREADS)}):
        yield


@contextmanager
def one_core_busy(busy: bool) -> Iterator[None]:
    """A second process spinning on one core while the block runs (or nothing)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def steps_of(record: dict) -> float:
    """Optimizer steps a record's training took: its units over the batch size (to a step an epoch)."""
    samples = record["cost"]["train_samples_per_second"] * record["cost"]["train_seconds"]
    return samples / record["config"]["batch_size"]


def measure(configs: list[RunConfig], context: RunContext, floor_steps: int) -> dict:
    """Every figure of one condition (idle or loaded)."""
    out: dict = {"load_before": load()}
    inputs = 21  # onehot: 20 amino acids and X
    out["floor_ms"] = bare_floor_ms(inputs, floor_steps)
    with todays_path():
        today: list[dict] = []
        out["today_s"] = timed(lambda: today.extend(execute(c, context) for c in configs))
    ours: list[dict] = []
    out["ours_s"] = timed(lambda: ours.extend(execute_together(configs, context)))
    alone = execute(configs[0], context)  # one seed on the fast path: its step beside the floor
    for record in (*today, *ours, alone):
        if isinstance(record, Exception):
            raise record
    out["today"], out["ours"] = today, ours
    out["today_step_ms"] = today[0]["cost"]["train_seconds"] / steps_of(today[0]) * 1e3
    out["alone_step_ms"] = alone["cost"]["train_seconds"] / steps_of(alone) * 1e3
    stacked_seconds = sum(r["cost"]["train_seconds"] for r in ours)  # each seed records its share of the stack's time
    out["stack_step_ms"] = stacked_seconds / steps_of(ours[0]) * 1e3
    out["alone_residues_s"] = alone["cost"]["train_residues_per_second"]
    out["load_after"] = load()
    return out


@click.command()
@DATA_DIR
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--limit-train", type=click.IntRange(min=0), default=32, show_default=True,
              help="Training proteins of the cell (0: all 1,056 of the study's split).")
@click.option("--limit-eval", type=click.IntRange(min=0), default=0, show_default=True,
              help="Validation and test proteins (0: all).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Epochs of the cell (the study's protocol: 50).")
@click.option("--floor-steps", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("--tolerance", type=float, default=1e-5, show_default=True,
              help="Largest |ours - today| test Spearman allowed per seed.")
@click.option("--smoke", is_flag=True, help="A sliver of everything (2 seeds, 8 proteins): the code path in seconds.")
def main(data_dir: Path | None, seeds: int, limit_train: int, limit_eval: int, epochs: int, floor_steps: int,
         tolerance: float, smoke: bool) -> None:
    """Frozen disorder cell, study protocol: today's path vs stacked seeds, idle and with one core busy."""
    if smoke:
        seeds, limit_train, limit_eval, epochs, floor_steps = 2, 3, 6, 1, 50
    context = RunContext(data_dir=data_dir or default_data_dir(), device="cpu")
    configs = [RunConfig(backbone="onehot", task="disorder", method="frozen", protocol="study", seed=seed,
                         epochs=epochs, limit_train=limit_train or None, limit_eval=limit_eval or None).resolved()
               for seed in range(1, seeds + 1)]
    execute(configs[0], context)  # warm-up: task files read, embeddings cached, before anything is timed
    conditions = {"idle": measure(configs, context, floor_steps)}
    with one_core_busy(True):
        conditions["one core busy"] = measure(configs, context, floor_steps)
    report(conditions, configs, tolerance, limit_train, epochs)


def report(conditions: dict[str, dict], configs: list[RunConfig], tolerance: float, limit_train: int,
           epochs: int) -> None:
    rows, notes, worst = [], [], 0.0
    for name, m in conditions.items():
        today_metrics = [r["metrics"]["test"]["spearman"] for r in m["today"]]
        our_metrics = [r["metrics"]["test"]["spearman"] for r in m["ours"]]
        worst = max(worst, *(abs(a - b) for a, b in zip(today_metrics, our_metrics, strict=True)))
        floor = m["floor_ms"]
        rows += [(name, "bare PyTorch floor, 1 thread", f"{floor:.3f}", "1.00", "", m["load_before"]),
                 (name, f"today: general loop, {TODAY_THREADS} threads", f"{m['today_step_ms']:.3f}",
                  f"{m['today_step_ms'] / floor:.2f}", f"{m['today_s']:.1f}", ""),
                 (name, "ours: one seed alone, 1 thread", f"{m['alone_step_ms']:.3f}",
                  f"{m['alone_step_ms'] / floor:.2f}", "", ""),
                 (name, f"ours: {len(configs)} seeds stacked (a step trains all)", f"{m['stack_step_ms']:.3f}",
                  f"{m['stack_step_ms'] / floor:.2f}", f"{m['ours_s']:.1f}", m["load_after"])]
        cell_ratio = m["today_s"] / m["ours_s"]
        train_ratio = sum(r["cost"]["train_seconds"] for r in m["today"]) / sum(
            r["cost"]["train_seconds"] for r in m["ours"])
        step_ratio = m["alone_step_ms"] / floor
        notes += [f"{name}: cell ratio today/ours: {cell_ratio:.1f}x ({verdict(cell_ratio, CELL_TARGET)}); "
                  f"training alone: {train_ratio:.1f}x (what a full cell, all training, tends to)",
                  f"{name}: head step ours/floor: {step_ratio:.2f}x "
                  f"({'target <= 2x met' if step_ratio <= STEP_TARGET else 'target <= 2x missed'}); one seed "
                  f"trains at {m['alone_residues_s']:,.0f} residues/s",
                  f"{name}: test spearman per seed, today: {' '.join(f'{x:.6f}' for x in today_metrics)}; "
                  f"ours: {' '.join(f'{x:.6f}' for x in our_metrics)}"]
    fraction = (f"{limit_train or 'all 1,056'} training proteins, {epochs} of the study's 50 epochs, "
                f"{configs[0].batch_size} residues a step")
    notes.append(f"outputs equal: {'yes' if worst <= tolerance else 'NO'} (largest per-seed |ours - today| test "
                 f"spearman = {worst:.1e}; tolerance {tolerance:g})")
    print_report(f"Study-protocol frozen disorder cell, onehot, {len(configs)} seeds ({fraction})", rows,
                 ["condition", "path", "ms / step", "x floor", "cell s", "load (1, 5, 15 min)"], notes)
    if worst > tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

