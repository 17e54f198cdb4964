"""Training and prediction: the inner loops of the run protocol.

Validation happens ``val_per_epoch`` times per epoch on the task's primary metric. Two
checkpoints are tracked: *best-of-N* (the best validation score over every evaluation) and
*early-stop* (the best score at the moment ``patience`` evaluations passed without an
improvement of at least ``min_delta``). With ``checkpoint="early-stop"`` training halts there;
with ``best-of-N`` it runs on to the last epoch, so the record shows the gap between both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.models.backbone import Residues, residue_mask
from plm_bench.results.artifacts import trainable_state
from plm_bench.run.batching import length_buckets
from plm_bench.tasks.task import Example, Task

if TYPE_CHECKING:
    from plm_bench.config import RunConfig
    from plm_bench.run.protocol import RunContext


class Model(nn.Module):
    """Backbone (absent for frozen methods) followed by the head."""

    def __init__(self, backbone: nn.Module | None, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: Sequence[Example], features: list[torch.Tensor] | None) -> tuple:
        residues = pad_features(features) if self.backbone is None else self.backbone.embed(
            [e.sequence for e in batch], [e.id for e in batch]
        )
        device = residues.hidden.device
        return self.head(residues.hidden, residues.mask.to(device)), residues.mask.to(device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def pad_features(features: list[torch.Tensor]) -> Residues:
    hidden = nn.utils.rnn.pad_sequence(features, batch_first=True)
    return Residues(hidden=hidden, mask=residue_mask([len(f) for f in features]))


def labels_for(task: Task, batch: Sequence[Example], mask: torch.Tensor) -> tuple:
    """Label tensor and the mask of scored positions for a batch."""
    dtype = torch.long if task.type == "classification" else torch.float32
    if task.level == "protein":
        labels = torch.tensor([e.label for e in batch], dtype=dtype)
        return labels, torch.ones(len(batch), dtype=torch.bool)
    labels = torch.zeros(mask.shape, dtype=dtype)
    known = torch.zeros(mask.shape, dtype=torch.bool)
    for row, e in enumerate(batch):
        n = len(e.sequence)
        labels[row, :n] = torch.as_tensor(np.asarray(e.label), dtype=dtype)
        known[row, :n] = torch.ones(n, dtype=torch.bool) if e.mask is None else torch.as_tensor(e.mask)
    return labels, known


def loss_fn(task: Task, output: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    output, labels = output[known], labels[known]
    if task.type == "classification":
        return nn.functional.cross_entropy(output.float(), labels)
    return nn.functional.mse_loss(output.squeeze(-1).float(), labels)


def batches(examples: Sequence[Example], size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """Index batches of ``size`` examples of similar length (:func:`length_buckets`); seeded and
    different every epoch when a generator is given (training), short to long otherwise.

    No residue budget: a training batch holds the configured number of examples, as the study's
    (memory is the OOM backoff's business, which keeps the effective batch).
    """
    return length_buckets([len(e.sequence) for e in examples], max_residues=None, max_items=size,
                          generator=generator)


@dataclass
class Checkpoint:
    """Trainable weights at one evaluation, with where and how well."""

    epoch: float
    step: int
    valid: float
    seconds: float  # training time until this evaluation
    state: dict[str, torch.Tensor] = field(repr=False)


@dataclass
class Outcome:
    """What training produced, for the run record."""

    history: list[dict]
    best: Checkpoint  # best-of-N over every evaluation run
    early_stop: Checkpoint  # best when patience ran out (== best if it never did)
    stopped_at_epoch: float | None  # where patience ran out, None if never
    epochs_run: float
    micro_batch: int
    backoffs: list[dict]
    train_seconds: float
    samples: int
    residues: int


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights now (a checkpoint kept in memory)."""
    return {name: t.clone() for name, t in trainable_state(model).items()}


@torch.no_grad()
def restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved trainable weights back in place (buffers and frozen weights are untouched)."""
    for name, parameter in model.named_parameters():
        if name in state:
            parameter.copy_(state[name])


def train(model: Model, task: Task, splits: dict, features: dict | None, config: RunConfig,
          context: RunContext, validate: Callable[[], float]) -> Outcome:
    """Train under the run protocol; ``validate()`` returns the primary metric on valid."""
    if hasattr(model.head, "fit") and model.backbone is None:
        return fit_closed_form(model, task, splits["train"], features["train"], config, validate)
    device = context.torch_device
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    train_set = splits["train"]
    state = Outcome(history=[], best=None, early_stop=None, stopped_at_epoch=None,  # type: ignore[arg-type]
                    epochs_run=0.0, micro_batch=config.batch_size, backoffs=[], train_seconds=0.0,
                    samples=0, residues=0)
    since_improvement, early_best = 0, -np.inf
    epochs_bar = context.progress.add_task("epochs", total=config.epochs)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = batches(train_set, config.batch_size, generator)
        checks = {max(0, round(len(order) * j / config.val_per_epoch) - 1) for j in range(1, config.val_per_epoch + 1)}
        steps_bar = context.progress.add_task(f"epoch {epoch}", total=len(order))
        for b, idx in enumerate(order):
            started = time.perf_counter()
            loss = step(model, task, [train_set[i] for i in idx], features and [features["train"][i] for i in idx],
                        optimizer, state, device)
            state.train_seconds += time.perf_counter() - started
            state.samples += len(idx)
            state.residues += sum(len(train_set[i].sequence) for i in idx)
            context.progress.advance(steps_bar)
            if b not in checks:
                continue
            valid = validate()
            model.train()
            state.epochs_run = epoch - 1 + (b + 1) / len(order)
            state.history.append({"epoch": round(state.epochs_run, 4), "step": len(state.history) + 1,
                                  "train_loss": loss, "valid": valid})
            if state.best is None or valid > state.best.valid:
                state.best = Checkpoint(state.epochs_run, len(state.history), valid, state.train_seconds,
                                        snapshot(model))
            if state.stopped_at_epoch is None:
                if valid > early_best + config.min_delta:
                    early_best, since_improvement = valid, 0
                else:
                    since_improvement += 1
                if config.patience is not None and since_improvement >= config.patience:
                    state.stopped_at_epoch, state.early_stop = state.epochs_run, state.best
                    if config.checkpoint == "early-stop":
                        break
        context.progress.remove_task(steps_bar)
        context.progress.advance(epochs_bar)
        if state.stopped_at_epoch is not None and config.checkpoint == "early-stop":
            break
    context.progress.remove_task(epochs_bar)
    state.early_stop = state.early_stop or state.best
    return state


def fit_closed_form(model: Model, task: Task, train_set: list[Example], features: Sequence[torch.Tensor],
                    config: RunConfig, validate: Callable[[], float]) -> Outcome:
    """A head fitted in closed form (a linear probe) instead of by gradient steps: fitted once per
    regularization strength it offers, the strength scoring best on valid kept; each fit is one
    entry of the history (one pass over the training data: ``epoch`` 1, with its ``strength``)."""
    started = time.perf_counter()
    rows, targets = [], []
    for idx in batches(train_set, config.batch_size):  # rows and targets stay aligned; order is immaterial
        residues = pad_features([features[i] for i in idx])
        labels, known = labels_for(task, [train_set[i] for i in idx], residues.mask)
        rows.append(model.head.design(residues.hidden, residues.mask)[known].cpu())
        targets.append(labels[known])
    x, y = torch.cat(rows).numpy(), torch.cat(targets).numpy()
    state = Outcome(history=[], best=None, early_stop=None, stopped_at_epoch=None,  # type: ignore[arg-type]
                    epochs_run=1.0, micro_batch=config.batch_size, backoffs=[], train_seconds=0.0,
                    samples=len(train_set), residues=sum(len(e.sequence) for e in train_set))
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for number, strength in enumerate(model.head.strengths, 1):
        model.head.fit(x, y, strength)
        with torch.no_grad():
            fitted = model.head.linear(inputs.to(model.head.linear.weight.device)).cpu()
        train_loss = loss_fn(task, fitted, labels, torch.ones(len(labels), dtype=torch.bool)).item()
        valid = validate()
        state.history.append({"epoch": 1.0, "step": number, "strength": strength, "train_loss": train_loss,
                              "valid": valid})
        if state.best is None or valid > state.best.valid:
            state.best = Checkpoint(1.0, number, valid, time.perf_counter() - started, snapshot(model))
    state.train_seconds = time.perf_counter() - started
    state.early_stop = state.best
    return state


def step(model: Model, task: Task, batch: list[Example], features: list | None,
         optimizer: torch.optim.Optimizer, state: Outcome, device: torch.device) -> float:
    """One optimizer step over ``batch``, in micro-batches of ``state.micro_batch``.

    On CUDA out-of-memory the micro-batch halves and gradient accumulation doubles, so the
    effective batch (and the result) stays the same; the backoff is recorded.
    """
    while True:
        try:
            optimizer.zero_grad()
            total = 0.0
            for start in range(0, len(batch), state.micro_batch):
                part = slice(start, start + state.micro_batch)
                output, mask = model(batch[part], features and features[part])
                labels, known = labels_for(task, batch[part], mask.cpu())
                loss = loss_fn(task, output, labels.to(device), known.to(device))
                if not torch.isfinite(loss):
                    raise BenchError(f"training loss became {loss.item()}; lower --lr or use --dtype fp32")
                share = len(batch[part]) / len(batch)
                (loss * share).backward()
                total += loss.item() * share
            optimizer.step()
            return total
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            longest = max(len(e.sequence) for e in batch)
            if state.micro_batch == 1:
                raise BenchError(f"out of GPU memory even at micro-batch 1 (longest sequence {longest} residues): "
                                 "use a smaller backbone, --method lora, --dtype bf16, or a bigger GPU") from None
            state.micro_batch //= 2
            state.backoffs.append({"micro_batch": state.micro_batch, "longest_sequence": longest,
                                   "epoch": state.epochs_run})


@torch.no_grad()
def predict(model: Model, examples: list[Example], features: list | None, batch_size: int) -> list[np.ndarray]:
    """Per-example predictions: a value or class scores, or per-residue arrays of those."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(examples)
    for idx in batches(examples, batch_size):
        batch = [examples[i] for i in idx]
        output, _ = model(batch, features and [features[i] for i in idx])
        output = output.float().cpu().numpy()
        for row, (i, e) in enumerate(zip(idx, batch, strict=True)):
            value = output[row] if output.ndim == 2 else output[row, : len(e.sequence)]
            out[i] = value.squeeze(-1) if value.shape[-1] == 1 else value
    return out  # type: ignore[return-value]
