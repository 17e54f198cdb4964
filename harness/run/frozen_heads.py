"""Frozen heads trained at the per-step floor, the seeds of one frozen condition as one model.

A frozen method's head reads fixed inputs, so everything a step reads is gathered once: each
training unit's first-layer input (the head's ``rows``: one residue, or a protein's pooled
embedding, standardized) and its label. A step is then a gather, a forward, a backward and a
fused optimizer step: no Python work that grows with the data, no host sync between
validations. The study's per-residue heads take ~15,600 such steps per epoch on disorder
(batches of 8 residues, Table S10), so the per-step overhead is the whole cost.

A head that offers ``forward_stacked`` (the MLP heads) trains the seeds of a condition
together: its parameters stacked along a leading seed axis (``torch.func.stack_module_state``),
one optimizer over the stacked tensors (Adam and AdamW act elementwise, so each seed's slice
takes exactly its own update), one backward of the summed per-seed losses (a seed's gradient is
its own loss's). Each seed keeps what it has alone: its initialization (its head is built as
alone), its batch order (its own generator, drawn by :func:`~plm_bench.run.training.batches`),
its dropout stream (a generator holding the torch state its run had when training began) and
its validations, checkpoints, early stopping and resume file (the shared bookkeeping of
:mod:`plm_bench.run.training` and :mod:`plm_bench.run.resume`, run per seed on its own model,
optimizer and scheduler, into which the stack writes back at every validation). A seed that
stops early or diverges leaves the stack; the others go on. Its record equals the record of that
seed trained alone up to float rounding (the stacked matrix products and the fused optimizer
may round differently from the per-seed ones).
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.run import resume, threads
from plm_bench.run.training import (
    Checkpoint,
    Model,
    Outcome,
    Units,
    batches,
    halted,
    optimizer_for,
    remedy,
    resume_training,
    schedule_for,
    validated,
)

if TYPE_CHECKING:
    from plm_bench.config import RunConfig
    from plm_bench.run.protocol import RunContext
    from plm_bench.tasks.task import Example, Task

PROGRESS_EVERY = 1024  # steps between progress-bar updates (a bar update per step costs more than the step)


def fits(model: Model, task: Task, config: RunConfig) -> bool:
    """Whether this module trains the run's head: a frozen method, a head that can stack, and
    units it gathers (single residues of a per-residue task, or whole proteins of a per-protein one)."""
    unit = {"residue": "residues", "protein": "proteins"}[task.level]
    return (model.backbone is None and hasattr(model.head, "forward_stacked") and not hasattr(model.head, "fit")
            and config.batch_unit == unit)


@dataclass
class Randoms:
    """The global random states of a run at one moment (python, numpy, torch CPU and CUDA), so
    that runs prepared one after another each train and finish with their own."""

    python: object
    numpy: object
    torch: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> Randoms:
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(),
                   torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    def apply(self, device: torch.device) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)

    def dropout(self, device: torch.device) -> torch.Tensor:
        """The state of the generator that the run's dropout draws from on ``device``."""
        return self.cuda if device.type == "cuda" else self.torch

    def set_dropout(self, device: torch.device, state: torch.Tensor) -> None:
        if device.type == "cuda":
            self.cuda = state
        else:
            self.torch = state


@dataclass
class Job:
    """One seed's head training, as :func:`~plm_bench.run.training.train` takes it, and its
    random states when training begins (they end as they would after training alone)."""

    model: Model
    task: Task
    train_set: Sequence[Example]
    features: Sequence[torch.Tensor]
    config: RunConfig
    context: RunContext
    validate: Callable[[], tuple[float, float]]
    randoms: Randoms


class Rows:
    """A condition's training units gathered once, on the run's device: each unit's first-layer
    input (the head's ``rows``), its label, its length (what batches group by) and residues."""

    def __init__(self, job: Job) -> None:
        task, head, device = job.task, job.model.head, job.context.torch_device
        with torch.no_grad():
            if task.level == "residue":
                units = Units(task, job.train_set, job.features, residue_level=True)
                self.x = head.rows(units.hidden.unsqueeze(0), torch.ones(1, units.count, dtype=torch.bool,
                                                                         device=units.hidden.device))[0]
                self.y, self.lengths = units.labels, units.lengths()
                self.residues = self.lengths
            else:
                self.x = torch.cat([head.rows(f.unsqueeze(0), torch.ones(1, len(f), dtype=torch.bool, device=f.device))
                                    for f in job.features])
                dtype = torch.long if task.type == "classification" else torch.float32
                self.y = torch.tensor([e.label for e in job.train_set], dtype=dtype)
                self.lengths = self.residues = [len(e.sequence) for e in job.train_set]
        self.x, self.y = self.x.to(device).contiguous(), self.y.to(device)
        self.classification = task.type == "classification"
        self.residue_level = task.level == "residue"


@dataclass
class Seat:
    """One seed in the stack: its job, its own optimizer and scheduler (holders of their state at
    validations), generators, training record and where it stands."""

    job: Job
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: Outcome
    order: torch.Generator  # the batch order's, seeded with the run's seed as train() seeds it
    dropout: torch.Generator
    first_epoch: int = 1
    batches_done: int = 0
    loss: float = math.nan
    since_improvement: int = 0
    early_best: Checkpoint | None = None
    epoch_generator: torch.Tensor | None = None
    error: BenchError | None = None
    plan: dict = field(default_factory=dict)  # this epoch's steps: sizes, residues


class Stack:
    """The heads of several seats as one model: stacked parameters, one fused optimizer, one scheduler."""

    def __init__(self, seats: list[Seat], rows: Rows, steps: int) -> None:
        self.seats, self.rows = seats, rows
        config = seats[0].job.config
        self.head = seats[0].job.model.head
        heads = [seat.job.model.head for seat in seats]
        self.names = [name for name, p in self.head.named_parameters() if p.requires_grad]
        params, _ = torch.func.stack_module_state(heads)
        self.params = {name: params[name] for name in self.names}
        self.optimizer = optimizer_for(seats[0].job.model, config, list(self.params.values()), fused=True)
        self.scheduler = schedule_for(self.optimizer, config, steps)
        saved = [seat.optimizer.state_dict() for seat in seats]
        if saved[0]["state"]:  # a resumed run's moments, stacked in the order of the parameters
            own = self.optimizer.state_dict()
            self.optimizer.load_state_dict({
                "state": {k: {name: torch.stack([s["state"][k][name] for s in saved]) if value.dim() else value.clone()
                              for name, value in moments.items()} for k, moments in saved[0]["state"].items()},
                "param_groups": [{**group, "lr": theirs["lr"]}
                                 for group, theirs in zip(own["param_groups"], saved[0]["param_groups"], strict=True)],
            })
        self.scheduler.load_state_dict(seats[0].scheduler.state_dict())
        self.generators = [seat.dropout for seat in seats]
        self.clip = config.grad_clip
        self.last: torch.Tensor | None = None  # the last step's per-seed loss terms (read at validations)

    def step(self, index: torch.Tensor, sizes: list[int], weights: torch.Tensor) -> None:
        """One optimizer step of every seat: ``index`` (S, B) units (padded), ``weights`` (S, B) each
        term's share of its seed's batch loss (0 on padding)."""
        x, y = self.rows.x[index], self.rows.y[index]
        out = self.head.forward_stacked(self.params, x, sizes, self.generators).float()
        if self.rows.classification:
            terms = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        else:
            terms = (out[..., 0] - y).square()
        terms = terms * weights
        self.optimizer.zero_grad()
        terms.sum().backward()
        if self.clip:
            self.clip_per_seed()
        self.optimizer.step()
        self.scheduler.step()
        self.last = terms.detach()

    def clip_per_seed(self) -> None:
        """``clip_grad_norm_`` of each seed's gradients on their own."""
        grads = [p.grad for p in self.params.values()]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
        coefficient = (self.clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coefficient.view(-1, *[1] * (g.dim() - 1)))

    @torch.no_grad()
    def write_back(self, with_optimizer: bool) -> None:
        """Each seat's model gets its slice of the weights (and, ``with_optimizer``, its optimizer
        and scheduler their state), as if it had trained alone."""
        stacked = self.optimizer.state_dict() if with_optimizer else None
        for i, seat in enumerate(self.seats):
            for name, p in seat.job.model.head.named_parameters():
                if name in self.params:
                    p.copy_(self.params[name][i])
            if stacked is None:
                continue
            own = seat.optimizer.state_dict()
            seat.optimizer.load_state_dict({
                "state": {k: {name: (value[i] if value.dim() else value).clone() for name, value in moments.items()}
                          for k, moments in stacked["state"].items()},
                "param_groups": [{**group, "lr": theirs["lr"]}
                                 for group, theirs in zip(own["param_groups"], stacked["param_groups"], strict=True)],
            })
            seat.scheduler.load_state_dict(self.scheduler.state_dict())


def train_together(jobs: list[Job]) -> list[Outcome | BenchError]:
    """Train the heads of ``jobs`` (the seeds of one frozen condition: same head, data and
    settings but the seed) as one stacked model; each job's outcome, or the error that ended it.

    With ``context.resume_dir`` each seed saves and resumes its own training state, as alone;
    seeds that resume from different points train as separate stacks.
    """
    with threads.using(threads.for_head()):  # whoever calls it: a frozen head's steps are tiny
        rows = Rows(jobs[0])
        seats = [_seat(job, rows) for job in jobs]
        waiting: dict[tuple[int, int], list[Seat]] = defaultdict(list)
        for seat in seats:
            if not halted(seat.state, seat.job.config):
                waiting[(seat.first_epoch, seat.batches_done)].append(seat)
        for group in waiting.values():
            _train(group, rows)
        for seat in seats:
            seat.state.early_stop = seat.state.early_stop or seat.state.best
            seat.job.randoms.set_dropout(seat.job.context.torch_device, seat.dropout.get_state())
    return [seat.error or seat.state for seat in seats]


def _seat(job: Job, rows: Rows) -> Seat:
    """A seat for ``job`` as :func:`~plm_bench.run.training.train` would begin it: fresh, or from
    the training state the run saved."""
    config, context, device = job.config, job.context, job.context.torch_device
    steps_per_epoch = -(-len(rows.lengths) // config.batch_size)
    optimizer = optimizer_for(job.model, config)
    scheduler = schedule_for(optimizer, config, steps_per_epoch * config.epochs)
    state = Outcome(history=[], best=None, early_stop=None, stopped_at_epoch=None,  # type: ignore[arg-type]
                    epochs_run=0.0, micro_batch=config.batch_size, backoffs=[], train_seconds=0.0,
                    samples=0, residues=0)
    order = torch.Generator().manual_seed(config.seed)
    context.progress.training(len(job.train_set))
    job.randoms.apply(device)
    saved = resume_training(job.model, optimizer, scheduler, state, config, context, order)
    job.randoms = Randoms.capture(device)  # a resumed run goes on with the states it saved
    dropout = torch.Generator(device=device)
    dropout.set_state(job.randoms.dropout(device))
    seat = Seat(job, optimizer, scheduler, state, order, dropout)
    if saved:
        seat.first_epoch, seat.batches_done, seat.loss = saved.epoch, saved.batches_done, saved.loss
        seat.since_improvement, seat.early_best = saved.since_improvement, saved.early_best
    return seat


def _plan(seats: list[Seat], rows: Rows, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Draw each seat's batch order for the epoch (its generator, as train() draws it) and pack
    them: unit indices (S, steps, B), loss weights (S, steps, B), sizes per step (steps x S)."""
    index, sizes = [], []
    for seat in seats:
        seat.epoch_generator = seat.order.get_state()
        order = batches(rows.lengths, batch_size, seat.order)
        sizes_of = [len(b) for b in order]
        seat.plan = {"sizes": sizes_of,
                     "residues": sizes_of if rows.residue_level else [sum(rows.residues[i] for i in b) for b in order]}
        index.append([b + [b[0]] * (batch_size - len(b)) for b in order])  # padding repeats a unit, weight 0
        sizes.append(seat.plan["sizes"])
    if len({len(s) for s in sizes}) != 1:
        raise BenchError("seeds trained together drew epochs of different lengths; train them one at a time")
    device = rows.x.device
    index_tensor = torch.tensor(index, dtype=torch.long, device=device)
    counts = torch.tensor(sizes, dtype=torch.float32, device=device)
    real = torch.arange(batch_size, device=device) < counts.unsqueeze(-1)
    weights = real / counts.unsqueeze(-1)
    return index_tensor, weights, [list(step) for step in zip(*sizes, strict=True)]


def _train(seats: list[Seat], rows: Rows) -> None:
    """Train ``seats`` (all at the same point of training) together until each is done."""
    config = seats[0].job.config
    steps = -(-len(rows.lengths) // config.batch_size) * config.epochs
    stack: Stack | None = Stack(seats, rows, steps)
    progress = seats[0].job.context.progress
    first_epoch, resumed_batches = seats[0].first_epoch, seats[0].batches_done
    for epoch in range(first_epoch, config.epochs + 1):
        if stack is None:
            break
        index, weights, sizes = _plan(stack.seats, rows, config.batch_size)
        steps_in_epoch = index.shape[1]
        checks = {max(0, round(steps_in_epoch * j / config.val_per_epoch) - 1)
                  for j in range(1, config.val_per_epoch + 1)}
        bar = progress.add_task(f"epoch {epoch} ({len(stack.seats)} seeds)", total=steps_in_epoch)
        done = resumed_batches if epoch == first_epoch else 0
        progress.advance(bar, done)
        since, started = done, time.perf_counter()
        for b in range(done, steps_in_epoch):
            stack.step(index[:, b], sizes[b], weights[:, b])
            if (b + 1) % PROGRESS_EVERY == 0:
                progress.advance(bar, PROGRESS_EVERY)
            if b not in checks:
                continue
            kept = _validate(stack, epoch, b, steps_in_epoch, since, time.perf_counter() - started)
            if len(kept) < len(stack.seats):  # stopped early or diverged: the others go on without them
                stack.write_back(with_optimizer=True)
                rows_kept = [stack.seats.index(seat) for seat in kept]
                index, weights = index[rows_kept], weights[rows_kept]
                sizes = [[step[i] for i in rows_kept] for step in sizes]
                stack = Stack(kept, rows, steps) if kept else None
            if stack is None:
                break
            since, started = b + 1, time.perf_counter()
        progress.remove_task(bar)


def _validate(stack: Stack, epoch: int, b: int, steps_in_epoch: int, since: int, seconds: float) -> list[Seat]:
    """Validation after step ``b``: each seat books its share of the time and work since step
    ``since``, validates its own model, saves its training state; returns the seats that train on."""
    losses = stack.last.sum(1).tolist()  # the one host sync between validations
    seats = stack.seats
    resume_dir = seats[0].job.context.resume_dir
    stack.write_back(with_optimizer=resume_dir is not None)
    kept = []
    for seat, loss in zip(seats, losses, strict=True):
        job, state = seat.job, seat.state
        state.train_seconds += seconds / len(seats)  # a seed's share of the stack's time
        state.samples += sum(seat.plan["sizes"][since:b + 1])
        state.residues += sum(seat.plan["residues"][since:b + 1])
        if not math.isfinite(loss):
            seat.error = BenchError(f"training loss became {loss}; {remedy('fp32')}")  # stacked heads compute in fp32
            continue
        seat.loss = loss
        valid, valid_loss = job.validate()
        seat.since_improvement, seat.early_best = validated(
            job.model, job.config, job.context, state, epoch - 1 + (b + 1) / steps_in_epoch, loss, valid,
            valid_loss, seat.since_improvement, seat.early_best)
        if resume_dir:
            device = job.context.torch_device
            job.randoms.set_dropout(device, seat.dropout.get_state())
            job.randoms.apply(device)  # the random states the seed's file keeps are its own
            resume.save(resume_dir, job.config, job.model, seat.optimizer, seat.scheduler, state, device,
                        resume.Position(epoch, b + 1, seat.epoch_generator, loss, seat.since_improvement,
                                        seat.early_best))
        if not halted(state, job.config):
            kept.append(seat)
    return kept
