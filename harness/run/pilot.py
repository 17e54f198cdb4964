"""``bench pilot``'s plan: the experiment that answers "does fine-tuning pay on this task?" within
a time budget, sized from measured cost.

Cost comes from ``bench profile`` measurements (harness/measure/profiler.py) of each backbone ×
method on this device, taken from the store when one matches and measured (and stored) when
none does. From them a simple model gives each run's time: the frozen embedding of every split
(once per backbone and training subset: the embedding cache is keyed by the sequences), each
fine-tuning epoch's training and validation, and the test passes of a run. The planner then
picks, among designs that fit the budget, the one that best answers the question: every
fine-tuning method that fits memory, at least 3 seeds (a paired 95% t-interval needs them to be
useful), the largest training fraction, a nested learning curve, full validation and test sets,
epochs with early stopping; each given up, in the reverse of that order, only when the budget
forces it. The runs are ordinary :class:`~plm_bench.config.RunConfig` s, ordered cheap first
(linear probe and frozen MLP, then LoRA, then full fine-tuning) so a stopped pilot has answered
what it could. The plan is kept beside the store (``<store>.pilots/``) for ``bench report``.

Torch is imported only where a profile is measured.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.files import atomic_file
from plm_bench.results import profiles as pf
from plm_bench.results import records as rec

if TYPE_CHECKING:
    from plm_bench.results.store import Store
    from plm_bench.tasks.task import Task

FROZEN = "frozen"
PROBES = {"protein": "probe-mean", "residue": "probe-residue"}  # the linear probe of each task level
METHOD_ORDER = ("frozen", "lora", "dora", "ia3", "prefix", "full")  # cheap first: what a stopped pilot has
TOPS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02)  # the largest training fraction, best first
SEEDS = (5, 4, 3, 2)  # paired over seeds; 2 give a CI too wide to decide most questions, fewer none
EVAL_CAPS = (None, 2000, 1000, 500, 250, 100)  # validation and test proteins (None: the whole splits)
MIN_EPOCHS = 3
PATIENCE = 2  # validations without improvement before a fine-tuning run stops
MIN_TRAIN = 16  # training examples at the smallest fraction
TEST_PASSES = 4  # a run predicts test untrained, at each checkpoint candidate (2) and once more when reporting
RUN_OVERHEAD_SECONDS = 5.0  # per run: loading the backbone and the data, bootstrap CIs (assumed, not measured)
MIN_GAIN = 0.01  # default smallest gain worth fine-tuning for, in the metric's units (Spearman, accuracy)
LENGTH_TOLERANCE = 2.0  # a stored throughput is reused when measured within this factor of the task's length


def cost_rank(method: str) -> float:
    """Where a method runs in a pilot: METHOD_ORDER's place, a plugin's other method just before full."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else METHOD_ORDER.index("full") - 0.5


def parse_duration(text: str) -> float:
    """``20m``, ``1h30m``, ``90s``, ``1.5h`` as seconds."""
    parts = re.fullmatch(r"\s*((\d+(\.\d+)?)\s*[hms]\s*)+", text or "")
    if not parts:
        raise BenchError(f"--budget {text!r}: write a duration such as 20m, 1h30m or 90s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[unit]
                  for n, _, unit in re.findall(r"(\d+(\.\d+)?)\s*([hms])", text))
    if seconds <= 0:
        raise BenchError(f"--budget {text!r}: the budget must be more than nothing")
    return seconds


def duration(seconds: float) -> str:
    """Seconds for people: ``45 s``, ``12.5 min``, ``2.1 h``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# --- what the task asks of a backbone -------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """A task's split sizes and sequence lengths: what its runs' cost scales with."""

    task: str
    level: str
    counts: dict[str, int]
    mean_length: dict[str, float]
    median_length: float
    max_length: int

    @classmethod
    def of(cls, task: Task, data_dir: Path) -> Shape:
        splits = task.load(data_dir)
        lengths = {name: [len(e.sequence) for e in examples] for name, examples in splits.items()}
        every = [n for found in lengths.values() for n in found]
        return cls(task.name, task.level, {k: len(v) for k, v in lengths.items()},
                   {k: statistics.fmean(v) if v else 0.0 for k, v in lengths.items()},
                   float(statistics.median(every)), max(every))

    def residues(self, split: str, fraction: float = 1.0, cap: int | None = None) -> float:
        """Residues of a split after ``--train-fraction`` (train) or ``--limit-eval`` (valid, test)."""
        n = self.counts[split]
        n = math.ceil(fraction * n) if split == "train" else min(n, cap or n)
        return n * self.mean_length[split]


# --- measured cost ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cost:
    """What ``bench profile`` measured for a backbone × method on this device, as the plan uses it."""

    backbone: str
    method: str
    profile_id: int
    reused: bool
    dtype: str
    train_rate: float | None  # residues/s of training steps (None: frozen, which only embeds)
    inference_rate: float
    trainable: int
    total: int
    memory_budget: int  # bytes the device has for it now
    fits: bool  # one step at batch 1 on the task's longest sequence within memory_budget
    peak: int | None  # that step's peak bytes, where measured

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def memory_budget(device) -> int:
    """What a run may take on ``device`` now: the GPU's memory, or nine tenths of the host's
    available memory (the rest moves while we measure: other processes, the page cache)."""
    import torch

    from plm_bench.measure.memory import MemoryMeter

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return int(0.9 * MemoryMeter(device).available())


def rate_of(profile: dict, mode: str, length: float) -> float | None:
    """A profile's residues/s for ``mode``, if measured near ``length``."""
    for rate in profile["rates"]:
        if rate["mode"] == mode and 1 / LENGTH_TOLERANCE <= rate["length"] / max(length, 1) <= LENGTH_TOLERANCE:
            return rate["residues_per_second"]
    return None


def memory_verdict(profile: dict, length: int, budget: int) -> tuple[bool, int | None] | None:
    """Whether a profile's envelope settles that a step on ``length`` residues fits ``budget``:
    (fits, peak), or None where it measured nothing that decides it."""
    peaks = (profile["envelope"] or {}).get("peaks", [])
    over = [p for p in peaks if p["length"] <= length and (p["bytes"] is None or p["bytes"] > budget)]
    if over:
        return False, over[0]["bytes"]
    within = [p for p in peaks if p["length"] >= length and p["bytes"] is not None and p["bytes"] <= budget]
    return (True, min(p["bytes"] for p in within)) if within else None


def stored_cost(profiles: Sequence[dict], backbone: str, backbone_path: str | None, method: str,
                device_label: str, shape: Shape, budget: int) -> Cost | None:
    """The latest stored profile of this backbone, method and device that answers what the plan
    needs (throughput near the task's length, memory at its longest sequence), as a cost."""
    trains = plugins.get("method", method).trains_backbone
    for profile in reversed(profiles):
        if (profile["backbone"], profile["backbone_path"] or None, profile["method"], profile["device"]) != (
                backbone, backbone_path, method, device_label):
            continue
        train = rate_of(profile, "train", shape.median_length)
        inference = rate_of(profile, "inference", shape.median_length)
        memory = memory_verdict(profile, shape.max_length, budget)
        if inference is None or (trains and train is None) or memory is None:
            continue
        return Cost(backbone, method, profile["profile_id"], True, profile["dtype"], train, inference,
                    profile["parameters"]["trainable"], profile["parameters"]["total"], budget, *memory)
    return None


def measure_cost(store: Store, backbone: str, backbone_path: str | None, init: str, method: str, device,
                 device_label: str, shape: Shape, batch_size: int, budget: int, steps: int = 3) -> Cost:
    """Profile backbone × method as ``bench profile`` does (throughput at the task's median length,
    the envelope up to its longest sequence within ``budget``), add it to the store, return the cost."""
    from plm_bench.measure.profiler import Profiler, profile_config
    from plm_bench.run import protocol

    config = profile_config(backbone, method, backbone_path=backbone_path, init=init)
    profiler = Profiler(config, device)
    if device.type == "cpu":  # the host's free memory moves: the envelope refuses a budget above it now
        budget = min(budget, int(0.9 * profiler.meter.available()))
    length = max(1, round(shape.median_length))
    rates = [profiler.rate(mode, batch_size, length, steps) for mode in
             (("train", "inference") if profiler.trains else ("inference",))]
    envelope = profiler.envelope([budget], shape.max_length, resolution=max(1, min(64, shape.max_length)),
                                 start=shape.max_length)
    counts = protocol.parameter_counts(profiler.backbone, profiler.model)
    dtype = protocol.dtype_name(profiler.backbone.parameters(), profiler.backbone.buffers())
    entry = pf.entry(config, dtype=dtype, device=device_label, parameters=counts, rates=rates,
                     peak_flops=profiler.peak_flops, envelope=envelope, environment=protocol.environment(device))
    profile_id = store.add_profile(entry)
    by_mode = {r.mode: r.residues_per_second for r in rates}
    peak = envelope.peaks.get(shape.max_length)
    return Cost(backbone, method, profile_id, False, dtype, by_mode.get("train"), by_mode["inference"],
                counts["trainable"], counts["total"], budget, envelope.longest[budget] >= shape.max_length, peak)


# --- the plan --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """The knobs the planner turns: the same for every backbone, so their answers compare."""

    methods: tuple[str, ...]  # fine-tuning methods (frozen always runs)
    fractions: tuple[float, ...]  # nested training fractions, ascending
    seeds: int
    epochs: int  # of fine-tuning runs, with early stopping (patience PATIENCE)
    limit_eval: int | None  # validation and test proteins; None: the whole splits

    def describe(self, shape: Shape) -> str:
        evaluation = "whole valid and test splits" if self.limit_eval is None else (
            f"{self.limit_eval} valid and test proteins drawn at random (--limit-eval: the same subset for every "
            "run, so the comparison stays paired; bootstrap CIs are wider than on the whole test set)")
        fractions = ", ".join(f"{f:g} ({math.ceil(f * shape.counts['train'])})" for f in self.fractions)
        return (f"training fractions {fractions} of {shape.counts['train']} (nested); seeds 1-{self.seeds}; "
                f"fine-tuning up to {self.epochs} epochs, early stop after {PATIENCE} validations without "
                f"improvement; {evaluation}")


@dataclass(frozen=True)
class Step:
    """One run of the plan and its estimated time."""

    config: RunConfig
    seconds: float
    role: str  # probe | frozen MLP | shuffled labels | the fine-tuning method


@dataclass
class Plan:
    task: str
    metric: str
    shape: Shape
    backbones: tuple[str, ...]
    budget: float
    device: str
    design: Design
    steps: list[Step]
    costs: dict[str, dict[str, Cost]]  # backbone -> method -> cost
    left_out: tuple[str, ...] = ()  # fine-tuning methods that fit memory but not the budget
    notes: list[str] = field(default_factory=list)
    min_gain: float = MIN_GAIN
    validations: dict[str, int] = field(default_factory=dict)  # validations per epoch by method
    needs: dict[str, float] = field(default_factory=dict)  # left-out method -> seconds of the smallest pilot with it

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def run_estimates(self) -> dict[str, dict[str, dict[str, float]]]:
        """backbone -> method -> fraction -> one run's estimated seconds (its embedding included),
        at the plan's fractions and at 1: what projections to full data scale by."""
        out: dict = {}
        for backbone, by in self.costs.items():
            for method, cost in by.items():
                if not cost.fits:
                    continue
                for fraction in {*self.design.fractions, 1.0}:
                    seconds = run_seconds(method, fraction, self.design, self.validations.get(method, 1), cost,
                                          self.shape, set())
                    out.setdefault(backbone, {}).setdefault(method, {})[f"{fraction:g}"] = seconds
        return out

    def document(self) -> dict:
        """The plan as kept beside the store, for ``bench report`` and a resumed pilot."""
        return {"task": self.task, "metric": self.metric, "backbones": list(self.backbones),
                "budget_seconds": self.budget, "device": self.device, "design": asdict(self.design),
                "methods": list(self.design.methods), "left_out": list(self.left_out), "min_gain": self.min_gain,
                "description": self.design.describe(self.shape), "estimated_seconds": self.seconds,
                "notes": self.notes, "created": rec.now(), "run_estimates": self.run_estimates(), "needs": self.needs,
                "serves": {b: sorted((m for m, c in by.items() if m != FROZEN and c.fits), key=cost_rank)
                           for b, by in self.costs.items()},
                "costs": {b: {m: asdict(c) for m, c in by.items()} for b, by in self.costs.items()},
                "runs": [{"hash": s.config.hash, "backbone": s.config.backbone, "method": s.config.method,
                          "head": s.config.head, "role": s.role, "train_fraction": s.config.train_fraction,
                          "seed": s.config.seed, "estimated_seconds": s.seconds} for s in self.steps]}


def fractions_for(top: float, count: int, train: int) -> tuple[float, ...] | None:
    """``count`` nested fractions up to ``top``, each about a third of the next; None where the
    smallest would train on fewer than MIN_TRAIN examples."""
    found = tuple(sorted(round(top / 3 ** i, 3 if top / 3 ** i >= 0.01 else 4) for i in range(count)))
    return None if math.ceil(found[0] * train) < MIN_TRAIN else found


def layout(backbones: Sequence[str], design: Design, serves: dict[str, set[str]]) -> list[tuple]:
    """The runs of a design as (role, backbone, method, fraction, seed), cheap first: per backbone
    and fraction the linear probe and the frozen MLP of every seed (after the smallest fraction's,
    one frozen MLP trained on shuffled labels: cheap, so even a pilot stopped early has its
    baseline), then each fine-tuning method by fraction and seed on the backbones it ``serves``."""
    runs = []
    for backbone in backbones:
        for fraction in design.fractions:
            for seed in range(1, design.seeds + 1):
                runs += [("probe", backbone, FROZEN, fraction, seed), ("frozen MLP", backbone, FROZEN, fraction, seed)]
            if fraction == design.fractions[0]:
                runs.append(("shuffled labels", backbone, FROZEN, fraction, 1))
    for method in design.methods:
        for backbone in (b for b in backbones if method in serves[b]):
            for fraction in design.fractions:
                runs += [(method, backbone, method, fraction, seed) for seed in range(1, design.seeds + 1)]
    return runs


def config_of(role: str, backbone: str, method: str, fraction: float, seed: int, task: str, level: str,
              design: Design, settings: dict) -> RunConfig:
    """The resolved run config of one run of the plan."""
    fields = {"task": task, "backbone": backbone, "method": method, "seed": seed, "train_fraction": fraction,
              "limit_eval": design.limit_eval, **settings.get(backbone, {})}
    if role == "probe":
        fields["head"] = PROBES[level]
    elif role == "shuffled labels":
        fields["shuffled_labels"] = True
    elif method != FROZEN:
        fields.update(epochs=design.epochs, patience=PATIENCE)
    return RunConfig(**fields).resolved()


def run_seconds(method: str, fraction: float, design: Design, validations: int, cost: Cost, shape: Shape,
                embedded: set) -> float:
    """Seconds one run takes by the cost model, every epoch run (early stopping only saves);
    ``embedded`` holds the frozen embeddings an earlier run of the plan computes (updated):
    the embedding cache is keyed by the sequences, so each training fraction embeds anew."""
    cap = design.limit_eval
    if method == FROZEN:
        seconds = RUN_OVERHEAD_SECONDS
        for split, key in (("train", fraction), ("valid", cap), ("test", cap)):
            if (cost.backbone, split, key) not in embedded:
                embedded.add((cost.backbone, split, key))
                seconds += shape.residues(split, fraction, cap) / cost.inference_rate
        return seconds
    per_epoch = (shape.residues("train", fraction) / cost.train_rate
                 + validations * shape.residues("valid", cap=cap) / cost.inference_rate)
    return (RUN_OVERHEAD_SECONDS + design.epochs * per_epoch
            + TEST_PASSES * shape.residues("test", cap=cap) / cost.inference_rate)


def candidates(methods: Sequence[str], shape: Shape, epochs: int, pinned: dict) -> list[Design]:
    """Every design to consider, best first: every method, 3+ seeds, the largest fraction, more
    fractions, whole evaluation splits, more epochs, more seeds (``pinned`` fixes some knobs)."""
    designs = []
    method_sets = [tuple(methods[:k]) for k in range(len(methods), -1, -1)]  # drop the costliest first
    epoch_choices = [pinned["epochs"]] if "epochs" in pinned else sorted(
        {epochs, *(e for e in (5, MIN_EPOCHS) if e < epochs)}, reverse=True)
    for chosen, seeds, top, count, cap, e in itertools.product(
            method_sets, pinned.get("seeds", SEEDS), TOPS, (3, 2, 1), EVAL_CAPS, epoch_choices):
        fractions = tuple(pinned["fractions"]) if "fractions" in pinned else fractions_for(top, count,
                                                                                          shape.counts["train"])
        if fractions is None or (cap is not None and cap >= max(shape.counts["valid"], shape.counts["test"])):
            continue
        designs.append(Design(chosen, fractions, seeds, e, cap))

    def merit(d: Design) -> tuple:
        return (len(d.methods), min(d.seeds, 3), d.fractions[-1], len(d.fractions),
                -(EVAL_CAPS.index(d.limit_eval)), d.epochs, d.seeds)

    return sorted(dict.fromkeys(designs), key=merit, reverse=True)


def make_plan(task: str, level: str, shape: Shape, backbones: Sequence[str], costs: dict[str, dict[str, Cost]],
              budget: float, device_label: str, settings: dict | None = None, pinned: dict | None = None) -> Plan:
    """The best design whose estimated time fits ``budget`` seconds (see :func:`candidates`);
    ``settings``: per backbone, settings its runs share (``backbone_path``, ``init``)."""
    settings, pinned = settings or {}, pinned or {}
    notes = []
    serves = {b: {m for m, c in costs[b].items() if m != FROZEN and c.fits} for b in backbones}
    for backbone in backbones:
        unfit = sorted((m for m, c in costs[backbone].items() if not c.fits), key=cost_rank)
        if unfit:
            notes.append(f"{', '.join(unfit)} left out on {backbone}: one training step on the longest sequence "
                         f"({shape.max_length} residues) at batch 1 does not fit its memory on this device")
    methods = sorted({m for found in serves.values() for m in found}, key=cost_rank)
    first = {m: next(b for b in backbones if m in serves[b]) for m in methods}
    resolved = {m: RunConfig(backbone=first[m], task=task, method=m, **settings.get(first[m], {})).resolved()
                for m in methods}
    epochs = min((c.epochs for c in resolved.values()), default=MIN_EPOCHS)
    validations = {m: c.val_per_epoch for m, c in resolved.items()}
    cheapest: dict[str, float] = {}  # method (or frozen: any design) -> the cheapest design with it
    for design in candidates(methods, shape, epochs, pinned):
        embedded: set = set()
        seconds = sum(run_seconds(m, f, design, validations.get(m, 1), costs[b][m], shape, embedded)
                      for _, b, m, f, _ in layout(backbones, design, serves))
        for method in (FROZEN, *design.methods):
            cheapest[method] = min(cheapest.get(method, seconds), seconds)
        if seconds > budget:
            continue
        left = tuple(m for m in methods if m not in design.methods)
        notes += [f"{m} left out: the smallest pilot with it needs about {duration(cheapest[m])} here; give that "
                  "--budget to include it" for m in left]
        embedded = set()
        steps = [Step(config_of(role, b, m, f, seed, task, level, design, settings),
                      run_seconds(m, f, design, validations.get(m, 1), costs[b][m], shape, embedded), role)
                 for role, b, m, f, seed in layout(backbones, design, serves)]
        return Plan(task, plugins.get("task", task).metric, shape, tuple(backbones), budget, device_label, design,
                    steps, costs, left, notes, validations=validations, needs={m: cheapest[m] for m in left})
    raise BenchError(f"the smallest pilot (frozen heads only, 2 seeds, {MIN_TRAIN}+ training examples) needs "
                     f"about {duration(cheapest.get(FROZEN, 0))} on this device; give a --budget of at least that")


# --- kept beside the store -------------------------------------------------------------------

def pilot_folder(store_path: Path) -> Path:
    """Where the pilots of the store at ``store_path`` keep their plans (``runs.sqlite``: ``runs.pilots/``)."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.pilots")


def plan_id(plan: Plan) -> str:
    """A pilot's file name: its task, backbones and design; a rerun of the same pilot overwrites it."""
    import hashlib

    digest = hashlib.sha256(json.dumps(sorted(s.config.hash for s in plan.steps)).encode()).hexdigest()[:10]
    task = re.sub(r"[^A-Za-z0-9_.-]", "_", plan.task)
    return f"{task}-{'-'.join(plan.backbones)}-{digest}"


def save(document: dict, store_path: Path, name: str) -> Path:
    path = pilot_folder(store_path) / f"{name}.json"
    with atomic_file(path) as replacement:
        replacement.path.write_text(json.dumps(document, indent=1))
    return path


def stored_plans(store_path: Path) -> list[dict]:
    """Every pilot plan kept beside the store, oldest first (an unreadable one is skipped with a warning)."""
    import sys

    out = []
    for path in sorted(pilot_folder(store_path).glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"warning: pilot plan {path} is unreadable ({exc}); skipped", file=sys.stderr)
    return out


# --- running it within the budget --------------------------------------------------------------

def waves(steps: Sequence[Step], one_by_one: bool) -> list[list[Step]]:
    """What :func:`run_within` hands the driver at once: each run alone (a local launcher runs one
    after another anyway), or each method × fraction's runs together (a launcher with workers)."""
    if one_by_one:
        return [[s] for s in steps]
    groups: dict[tuple, list[Step]] = {}
    for s in steps:
        groups.setdefault((s.config.method, s.config.train_fraction, s.config.backbone), []).append(s)
    return list(groups.values())


def embedding_key(config: RunConfig) -> tuple:
    """The backbone whose frozen embeddings a run reads (its splits are shared across the plan's runs)."""
    return (config.backbone, config.backbone_path, config.init)


def run_within(groups: Sequence[Sequence[Step]], budget: float, run: Callable[[list[RunConfig]], list[dict]],
               done: set[str], started: float | None = None) -> dict:
    """Run ``groups`` of steps in order through ``run`` (the driver), skipping what is ``done``;
    before each, its estimate is scaled by how far the finished runs' real times have run over
    their estimates, and a group that would end past the budget is left out (a rerun with more
    budget adds it). Returns the records, the seconds taken, the steps left out and the pace."""
    started = time.monotonic() if started is None else started
    estimated = taken = 0.0
    records, skipped = [], []
    unembedded: set[tuple] = set()  # backbones with a frozen run left out: later ones may need its embeddings
    for group in groups:
        todo = [s for s in group if s.config.hash not in done]
        if not todo:
            continue
        pace = max(taken / estimated, 1.0) if estimated > 0 else 1.0
        expected = sum(s.seconds for s in todo) * pace
        # a frozen run's estimate leaves out the embeddings an earlier run of the plan computes
        shared = {embedding_key(s.config) for s in todo if s.config.method == FROZEN} & unembedded
        if shared or time.monotonic() - started + expected > budget:
            skipped += todo
            unembedded |= {embedding_key(s.config) for s in todo if s.config.method == FROZEN}
            continue
        begun = time.monotonic()
        records += run([s.config for s in todo])
        estimated += sum(s.seconds for s in todo)
        taken += time.monotonic() - begun
    return {"records": records, "seconds": time.monotonic() - started, "skipped": skipped,
            "pace": taken / estimated if estimated else None}
