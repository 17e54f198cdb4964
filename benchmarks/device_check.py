"""One-shot device check: what fine-tuning the study's large backbones costs on the GPU in use.

For a session that is lent a GPU, in one run of a few minutes (``device_check.sh``): random-weight
models of the registry's real sizes (esm2-650m, prott5, ankh-large, esm2-3b; ``--init random``
builds them offline from registry.toml's architecture tables, in bf16), each measured by
``plm_bench.measure.profiler`` exactly as ``bench profile`` measures:

- embedding residues/s (inference of the plain backbone) and fine-tuning residues/s (one AdamW
  step per batch) for full fine-tuning and LoRA, and LoRA/full, the speed-up of the study's
  Figure 5a;
- the longest sequence that trains at batch 1 within 8 / 16 / 24 GiB, full and LoRA (the study's
  Figure 5b), from torch's peak reserved GPU memory (``Profiler.envelope``: growth, then bisection
  to 64 residues, a handful of probes);
- model FLOP utilization against the dense GEMM peak measured on the same device in the models'
  dtype (``cpu_peak.gemm_peak``);
- the precision policy at work, first: ESM2-8M (random init) fully fine-tuned on disorder under
  ``--protocol study``, one seed, one epoch, in fp32, bf16-mixed and fp16-mixed (the study's
  choice), each with its test Spearman, validation loss curve, epochs run, wall time and skipped
  fp16 steps, as the run records give them. Throughput and envelopes use ``--precision auto``
  (bf16-mixed on a GPU with bf16).

Every measurement has a fixed number of steps, a backbone is skipped (and recorded as skipped)
when the time it would take by the ones before it would pass the time budget, and the report is
rewritten after every backbone, so a run cut short still leaves what it measured.
``--smoke`` runs the same code on CPU in seconds, on the tiny random-weight checkpoints of the
tests (tests/checkpoints.py, one per family, loaded under the real backbones' names) with the
budgets scaled from GiB to MiB and the precision runs cut to a few disorder proteins: CI runs it
so the check cannot rot; its figures are not figures. Task data: ``--data-dir`` (default
``$PLM_BENCH_DATA``, else ``../shared/datasets`` beside the checkout).

Writes ``device_check.json`` (machine, settings, per-backbone figures) and ``device_check.md``
(tables to paste into benchmarks/README.md) under ``--out`` (default ``$OUT``).

    bash benchmarks/device_check.sh                         # on the GPU machine, $OUT set
    bash benchmarks/device_check.sh --smoke --out /tmp/dc   # CPU, tiny models
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from cpu_peak import gemm_peak

from plm_bench import plugins
from plm_bench.cli.profile import STUDY_BUDGETS_GIB, device_name
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.measure.profiler import GIB, Envelope, Profiler, Rate, bf16_peak_flops, profile_config
from plm_bench.models.backbone import resolve_dtype
from plm_bench.run.protocol import RunContext, dtype_name, environment, execute

REPO = Path(__file__).resolve().parent.parent
MIB = 1024**2
# esm2-3b second: the study quotes its speed-up, so the time budget must not be what leaves it out.
BACKBONES = ("esm2-650m", "esm2-3b", "prott5", "ankh-large")
METHODS = ("full", "lora")  # full first: the reference of the speed-up
# Smoke: each registry name with a tiny checkpoint of its family, by tests/checkpoints.py's builder.
SMOKE_CHECKPOINTS = {"esm2-650m": "build_esm", "prott5": "build_prott5", "ankh-large": "build_ankh"}
# The study's Figure 5a, LoRA over full fine-tuning training speed; only the two values the issue quotes.
STUDY_FIGURE_5A = {
    "source": "Schmirler, Heinzinger & Rost, Nat Commun 2024, Figure 5a (LoRA vs full fine-tuning training "
              "speed-up), as quoted in the issue that asked for this check; the study's figures, not measured here",
    "lora_over_full": {"esm2-8m": 0.87, "esm2-3b": 4.47},
}


@dataclass(frozen=True)
class Plan:
    """What one run measures: the same sections on the GPU and in the smoke run, at other sizes."""

    smoke: bool
    backbones: tuple[str, ...]
    batch_size: int  # sequences per throughput step
    length: int  # residues per sequence of the throughput steps
    steps: int  # timed steps of each throughput figure
    warmup: int  # untimed steps before them
    unit: str  # the budgets' unit: GiB, or MiB in the smoke run
    budgets: tuple[float, ...]  # in unit
    resolution: int  # residues to which the longest length is found
    start: int  # the envelope search's first length
    cap: int | None  # the search's longest length; None: the backbone's maximum (Profiler.length_cap)
    time_budget: float  # seconds for the whole run
    precision_epochs: int  # epochs of each precision run (ESM2-8M, disorder, study protocol)
    precision_limit: int | None  # --limit-train and --limit-eval of the precision runs (None: whole splits)

    @property
    def unit_bytes(self) -> int:
        return MIB if self.unit == "MiB" else GIB

    def budget_bytes(self) -> list[int]:
        return [int(b * self.unit_bytes) for b in self.budgets]


GPU_PLAN = Plan(smoke=False, backbones=BACKBONES, batch_size=8, length=512, steps=10, warmup=3, unit="GiB",
                budgets=STUDY_BUDGETS_GIB, resolution=64, start=64, cap=None, time_budget=420.0, precision_epochs=1,
                precision_limit=None)
SMOKE_PLAN = Plan(smoke=True, backbones=tuple(SMOKE_CHECKPOINTS), batch_size=2, length=32, steps=1, warmup=1,
                  unit="MiB", budgets=STUDY_BUDGETS_GIB, resolution=128, start=128, cap=256, time_budget=420.0,
                  precision_epochs=1, precision_limit=4)
PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
DATA_DIR = REPO.parent / "shared" / "datasets"  # beside the checkout, where the sessions keep the task data


class Log:
    """Plain progress lines with the seconds since the start: a run never sits silent for minutes."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[device-check {self.elapsed:6.1f} s] {message}", flush=True)


def rate_section(rate: Rate) -> dict:
    return dataclasses.asdict(rate)


def envelope_section(envelope: Envelope, plan: Plan) -> dict:
    """Longest length per budget and what stopped it: memory, the length cap, or nothing fits."""
    longest, limit = {}, {}
    for (label, budget) in zip(budget_labels(plan), plan.budget_bytes(), strict=True):
        found = envelope.longest[budget]
        longest[label] = found
        limit[label] = "cap" if found >= envelope.max_length else "none fits" if found == 0 else "memory"
    return {"longest": longest, "limit": limit, "cap": envelope.max_length, "resolution": envelope.resolution,
            "peaks_bytes": {str(n): p for n, p in envelope.peaks.items()}}


def budget_labels(plan: Plan) -> list[str]:
    return [f"{b:g} {plan.unit}" for b in plan.budgets]


def measure_backbone(name: str, source: str | None, plan: Plan, device: torch.device, peak: float,
                     log: Callable[[str], None]) -> dict:
    """Every figure of one backbone: embedding and training rates, envelopes, full and LoRA."""
    init = "pretrained" if source else "random"
    weights = (f"tiny checkpoint of the family (tests/checkpoints.py), not {name}'s size" if plan.smoke
               else "random init of the registry's architecture (--init random)")
    section: dict = {"weights": weights, "parameters": None, "dtype": None, "trainable": {}, "embedding": None,
                     "finetune": {}, "memory": {}}
    for method in METHODS:
        log(f"{name} {method}: building the model, {weights}")
        profiler = Profiler(profile_config(name, method, backbone_path=source, init=init), device, peak_flops=peak)
        if method == "full":
            section["parameters"] = profiler.parameters
            section["dtype"] = dtype_name(profiler.backbone.parameters())
            rate = profiler.rate("inference", plan.batch_size, plan.length, plan.steps, plan.warmup)
            section["embedding"] = rate_section(rate)
            log(f"{name}: embedding {rate.residues_per_second:,.0f} residues/s, MFU {rate.mfu:.1%}")
        section["trainable"][method] = sum(p.numel() for p in profiler.model.trainable_parameters())
        rate = profiler.rate("train", plan.batch_size, plan.length, plan.steps, plan.warmup)
        section["finetune"][method] = rate_section(rate)
        log(f"{name} {method}: fine-tuning {rate.residues_per_second:,.0f} residues/s, MFU {rate.mfu:.1%}")

        def probed(n: int, bytes_: int | None, method: str = method) -> None:
            took = "out of memory" if bytes_ is None else f"{bytes_ / plan.unit_bytes:.2f} {plan.unit}"
            log(f"{name} {method}: envelope probe, {n} residues at batch 1 took {took}")

        envelope = profiler.envelope(plan.budget_bytes(), profiler.length_cap(plan.cap), plan.resolution,
                                     plan.start, on_probe=probed)
        section["memory"][method] = envelope_section(envelope, plan)
        del profiler, envelope
        release(device)  # the next model is measured without this one's memory
    full, lora = (section["finetune"][m]["residues_per_second"] for m in METHODS)
    section["finetune"]["lora_over_full"] = lora / full
    log(f"{name}: LoRA/full {lora / full:.2f}x")
    return section


def measure_precisions(plan: Plan, device: torch.device, data_dir: Path, scratch: Path,
                       log: Callable[[str], None]) -> dict:
    """ESM2-8M (random init; smoke: the tiny ESM2) fully fine-tuned on disorder under the study
    protocol, seed 1, in each precision: what the run records say, plus the wall time."""
    settings: dict = {"backbone": "esm2-8m", "task": "disorder", "method": "full", "protocol": "study", "seed": 1,
                      "epochs": plan.precision_epochs, "limit_train": plan.precision_limit,
                      "limit_eval": plan.precision_limit}
    if plan.smoke:
        settings["backbone_path"] = smoke_checkpoint("esm2-650m", scratch)  # the tiny ESM2 of the tests
    else:
        settings["init"] = "random"
    section: dict = {"settings": {k: v for k, v in settings.items() if k != "backbone_path"}, "runs": {}}
    for precision in PRECISIONS:
        log(f"precision {precision}: esm2-8m full fine-tuning on disorder, study protocol, "
            f"{plan.precision_epochs} epoch(s)")
        started = time.perf_counter()
        try:
            record = execute(RunConfig(**settings, precision=precision).resolved(),
                             RunContext(data_dir=data_dir, device=device.type))
        except BenchError as exc:  # a stop on a non-finite loss is a result too
            section["runs"][precision] = {"error": str(exc), "wall_seconds": time.perf_counter() - started}
            log(f"precision {precision}: stopped, {exc}")
            continue
        history = record["history"]
        run = {"precision": record["precision"], "test_spearman": record["metrics"]["test"]["spearman"],
               "valid_loss": [h["valid_loss"] for h in history], "train_loss": [h["train_loss"] for h in history],
               "epochs_run": record["early_stopping"]["epochs_run"], "wall_seconds": time.perf_counter() - started,
               "train_seconds": record["cost"]["train_seconds"], "peak_memory": record["cost"]["peak_memory"]}
        section["runs"][precision] = run
        log(f"precision {precision}: test Spearman {run['test_spearman']:.3f}, best valid loss "
            f"{min(run['valid_loss']):.4f}, {run['precision']['skipped_steps']} skipped step(s), "
            f"{run['wall_seconds']:.0f} s")
        release(device)
    return section


def release(device: torch.device) -> None:
    """Give back what a dropped model held (on CUDA, the caching allocator's blocks too)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def machine(device: torch.device) -> dict:
    """Where the figures were measured: device, library versions, memory."""
    info = {**environment(device), "device_type": device.type, "name": device_name(device),
            "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(memory_bytes=properties.total_memory, multiprocessors=properties.multi_processor_count,
                    datasheet_bf16_flops=bf16_peak_flops(device))
    return info


def estimate(name: str, done: dict[str, float]) -> float | None:
    """Seconds ``name`` would take at the slowest seconds-per-parameter of the backbones done."""
    if not done:
        return None
    per_parameter = max(seconds / (plugins.get("backbone", b).parameters or 1) for b, seconds in done.items())
    return per_parameter * (plugins.get("backbone", name).parameters or 1)


def run(plan: Plan, device: torch.device, out: Path, log: Log, data_dir: Path = DATA_DIR) -> bool:
    """The precision runs, then every backbone of ``plan``, rewriting the report after each;
    False if one failed."""
    peak_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    report: dict = {"check": "plm-bench device check", "smoke": plan.smoke, "complete": False,
                    "machine": machine(device), "settings": dataclasses.asdict(plan), "backbones": {},
                    "study_reference": STUDY_FIGURE_5A}
    log(f"machine: {report['machine']['name']}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    log(f"measuring the dense GEMM peak ({str(peak_dtype).removeprefix('torch.')})")
    peak, size = gemm_peak(device.type, peak_dtype)
    report["gemm_peak"] = {"dtype": str(peak_dtype).removeprefix("torch."), "flops_per_second": peak, "size": size}
    log(f"GEMM peak {peak / 1e12:.3g} TFLOP/s at {size} x {size}")
    ok, done = True, {}
    with tempfile.TemporaryDirectory(prefix="plm-bench-device-check-") as scratch:
        try:
            report["precision"] = measure_precisions(plan, device, data_dir, Path(scratch) / "precision", log)
        except Exception as exc:  # noqa: BLE001 - recorded; the throughput figures still run
            report["precision"], ok = {"error": f"{type(exc).__name__}: {exc}"}, False
            log(f"precision runs: FAILED, {report['precision']['error']}")
        ok = ok and all("error" not in r for r in report["precision"].get("runs", {}).values())
        write(report, out)
        for name in plan.backbones:
            expected = estimate(name, done)
            if expected is not None and log.elapsed + expected > plan.time_budget:
                why = (f"time budget: {log.elapsed:.0f} s spent, about {expected:.0f} s more needed, "
                       f"{plan.time_budget:.0f} s in all")
                report["backbones"][name] = {"skipped": why}
                log(f"{name}: skipped, {why}")
                continue
            started = log.elapsed
            try:
                source = smoke_checkpoint(name, Path(scratch)) if plan.smoke else None
                dtype = resolve_dtype("auto", plugins.get("backbone", name).dtypes, device, name)
                peak_here = peak if dtype == peak_dtype else gemm_peak(device.type, dtype)[0]
                section = measure_backbone(name, source, plan, device, peak_here, log)
            except Exception as exc:  # noqa: BLE001 - one backbone's failure is recorded, the others still run
                section, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
                log(f"{name}: FAILED, {section['error']}")
            release(device)
            section["seconds"] = log.elapsed - started
            done[name] = section["seconds"]
            report["backbones"][name] = section
            report["elapsed_seconds"] = log.elapsed
            write(report, out)
    report["complete"] = True
    report["elapsed_seconds"] = log.elapsed
    write(report, out)
    log(f"wrote {out / 'device_check.json'} and {out / 'device_check.md'}")
    return ok and all("skipped" not in s for s in report["backbones"].values())


def smoke_checkpoint(name: str, scratch: Path) -> str:
    """The tiny checkpoint of ``name``'s family that the tests use, written to ``scratch``."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import checkpoints

    return str(getattr(checkpoints, SMOKE_CHECKPOINTS[name])(scratch / name))


def write(report: dict, out: Path) -> None:
    (out / "device_check.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "device_check.md").write_text(markdown(report))


def count(parameters: int) -> str:
    return f"{parameters / 1e6:,.1f}M" if parameters >= 100_000 else f"{parameters:,}"


def rate_cell(rate: dict) -> str:
    return f"{rate['residues_per_second']:,.0f} ({rate['mfu']:.1%})"


def longest_cell(memory: dict, label: str) -> str:
    found, limit = memory["longest"][label], memory["limit"][label]
    if limit == "cap":
        return f"≥ {found} (cap)"
    if limit == "none fits":
        return f"< {min(int(n) for n in memory['peaks_bytes'])}"
    return str(found)


def markdown(report: dict) -> str:
    """The report as README-ready markdown: machine line, throughput table, envelope table, study reference."""
    m, s, peak = report["machine"], report["settings"], report["gemm_peak"]
    labels = [f"{b:g} {s['unit']}" for b in s["budgets"]]
    lines = []
    if report["smoke"]:
        lines += ["**Smoke run** (`--smoke`): tiny random-weight checkpoints on CPU, budgets scaled from GiB to "
                  "MiB. It checks that the device check runs; its figures are not figures to report.", ""]
    memory = f", {m['memory_bytes'] / GIB:.0f} GiB" if "memory_bytes" in m else ""
    lines += [f"Machine: {m['name']}{memory}; torch {m['torch']}, CUDA {m['cuda'] or 'none'}, transformers "
              f"{m['transformers']}, peft {m['peft']}. Dense GEMM peak measured here: "
              f"{peak['flops_per_second'] / 1e12:.3g} TFLOP/s ({peak['dtype']}, {peak['size']}³ `torch.mm`), "
              f"the denominator of every MFU. `bash benchmarks/device_check.sh{' --smoke' if report['smoke'] else ''}`"
              f", {report.get('elapsed_seconds', 0):.0f} s{'' if report['complete'] else ' (INCOMPLETE)'}.", "",
              f"Throughput: batch {s['batch_size']} × {s['length']} residues, {s['steps']} timed step(s) after "
              f"{s['warmup']} warm-up; a training step is forward, backward and AdamW step. Cells: residues/s "
              "(MFU).", "",
              "| backbone | weights, dtype | parameters | embedding | full fine-tuning | LoRA | LoRA/full | "
              "study's Fig. 5a LoRA/full |",
              "|---|---|---|---|---|---|---|---|"]
    study = report["study_reference"]["lora_over_full"]
    envelope_rows = []
    for name, b in report["backbones"].items():
        if "embedding" not in b:
            why = " ".join(str(b.get("skipped") or b.get("error")).split()).replace("|", "/")  # one table cell
            lines.append(f"| {name} | {why} | | | | | | |")
            continue
        weights = "tiny (smoke)" if report["smoke"] else "random"
        cited = f"{study[name]:.2f}x (study)" if name in study else "—"
        lines.append(f"| {name} | {weights}, {b['dtype']} | {count(b['parameters'])} | "
                     f"{rate_cell(b['embedding'])} | {rate_cell(b['finetune']['full'])} | "
                     f"{rate_cell(b['finetune']['lora'])} | {b['finetune']['lora_over_full']:.2f}x | {cited} |")
        envelope_rows.append(f"| {name} | " + " | ".join(longest_cell(b["memory"][method], label)
                                                          for method in METHODS for label in labels) + " |")
    memory_kind = ("the process's peak resident memory above what it held apart from the model"
                   if m["device_type"] == "cpu" else "torch's peak reserved GPU memory")
    lines += ["", f"Longest sequence that trains at batch 1 within each budget (residues, to {s['resolution']}; "
              f"{memory_kind} during one AdamW step, weights, gradients and optimizer state included; the budgets "
              "are the study's Figure 5b columns):", "",
              "| backbone | " + " | ".join(f"{'full' if method == 'full' else 'LoRA'} {label}"
                                         for method in METHODS for label in labels) + " |",
              "|---|" + "---|" * (len(METHODS) * len(labels)),
              *envelope_rows, "",
              f"Study reference ({report['study_reference']['source']}): LoRA/full "
              + ", ".join(f"{v:.2f}x for {k}" for k, v in study.items()) + ".", ""]
    return "\n".join(lines + precision_markdown(report.get("precision")))


def precision_markdown(section: dict | None) -> list[str]:
    """The precision runs as a table: one row per precision, the loss curve in the last column."""
    if not section:
        return []
    if "error" in section:
        return [f"Precision runs failed: {section['error']}", ""]
    s = section["settings"]
    limit = f", {s['limit_train']} train / {s['limit_eval']} valid and test proteins" if s["limit_train"] else ""
    lines = [f"Precision (trainable weights and AdamW state fp32 in every row): {s['backbone']} "
             f"({s.get('init', 'tiny checkpoint')}) full fine-tuning on {s['task']}, `--protocol {s['protocol']}`, "
             f"seed {s['seed']}, {s['epochs']} epoch(s){limit}.", "",
             "| precision | test Spearman | best valid loss | epochs run | wall (s) | skipped fp16 steps | "
             "valid loss per validation |", "|---|---|---|---|---|---|---|"]
    for precision, run in section["runs"].items():
        if "error" in run:
            lines.append(f"| {precision} | stopped: {' '.join(run['error'].split()).replace('|', '/')} | | | "
                         f"{run['wall_seconds']:.0f} | | |")
            continue
        curve = " ".join(f"{v:.3f}" for v in run["valid_loss"])
        lines.append(f"| {run['precision']['compute']} | {run['test_spearman']:.3f} | {min(run['valid_loss']):.4f} | "
                     f"{run['epochs_run']:g} | {run['wall_seconds']:.0f} | {run['precision']['skipped_steps']} | "
                     f"{curve} |")
    return [*lines, ""]


@click.command()
@click.option("--smoke", is_flag=True, help="Tiny checkpoints on CPU in seconds (CI); the same report shape.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), envvar="OUT",
              help="Folder for device_check.json and .md (default: $OUT).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Task data for the precision runs (default: $PLM_BENCH_DATA, else ../shared/datasets beside "
                   "the checkout).")
@click.option("--backbone", "backbones", multiple=True,
              help=f"Measure only these (repeatable; default {', '.join(BACKBONES)}; smoke: "
                   f"{', '.join(SMOKE_CHECKPOINTS)}).")
def main(smoke: bool, out: Path | None, data_dir: Path | None, backbones: tuple[str, ...]) -> None:
    """Throughput, LoRA/full speed-up, memory envelope and MFU of the study's large backbones on this GPU."""
    if out is None:
        raise click.ClickException("no output folder: give --out DIR or set $OUT")
    plan = SMOKE_PLAN if smoke else GPU_PLAN
    if backbones:
        unknown = [b for b in backbones if b not in SMOKE_CHECKPOINTS] if smoke else []
        if unknown:
            raise click.ClickException(f"--backbone {unknown[0]}: the smoke run has {', '.join(SMOKE_CHECKPOINTS)}")
        plan = dataclasses.replace(plan, backbones=backbones)
    if not smoke and not torch.cuda.is_available():
        raise click.ClickException("the device check needs a CUDA GPU and torch sees none: run it on the GPU "
                                   "machine, or pass --smoke for the CPU check")
    device = torch.device("cpu" if smoke else "cuda")
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name in plan.backbones:
            plugins.get("backbone", name)  # an unknown name fails here, in one line, before any work
        data_dir = data_dir or Path(os.environ.get("PLM_BENCH_DATA", DATA_DIR))
        ok = run(plan, device, out, Log(), data_dir)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
