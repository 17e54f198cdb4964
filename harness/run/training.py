"""Training and prediction: the inner loops of the run protocol.

Validation happens ``val_per_epoch`` times per epoch, on the task's primary metric and on the
loss; ``select_by`` says which of the two ranks checkpoints. Two checkpoints are tracked:
*best-of-N* (the best validation over every evaluation) and *early-stop* (the best at the
moment ``patience`` evaluations passed without an improvement of at least ``min_delta``). With
``checkpoint="early-stop"`` training halts there; with ``best-of-N`` it runs on to the last
epoch, so the record shows the gap between both.

A step draws from *units*: proteins, or (frozen per-residue heads, ``batch_unit="residues"``)
single scored residues of the cached embeddings, as the study's per-residue predictors trained
(batches of 8 residues, Table S10).

Steps follow the run's precision policy (:mod:`plm_bench.models.precision`): the forward and
backward passes under autocast, fp32 weights stepped, fp16 losses scaled; a non-finite loss or
gradient that loss scaling cannot absorb stops the run in one line instead of training on NaNs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from plm_bench.errors import BenchError
from plm_bench.models.backbone import Residues, residue_mask
from plm_bench.models.precision import Precision
from plm_bench.results.artifacts import trainable_state
from plm_bench.run import resume
from plm_bench.run.batching import length_buckets
from plm_bench.tasks.task import Example, Task

if TYPE_CHECKING:
    from plm_bench.config import RunConfig
    from plm_bench.run.protocol import RunContext


class Model(nn.Module):
    """Backbone (absent for frozen methods) followed by the head; ``tokens``: the head reads
    token-level states (specials and padding included) instead of the 1:1 residue states.

    ``precision`` is the run's policy (embedding included); ``compute`` the one its forward
    passes and training steps follow: the run's where a backbone computes, fp32 for a head on
    cached fp32 embeddings (a few small matmuls, which 16-bit would only make noisier).
    """

    def __init__(self, backbone: nn.Module | None, head: nn.Module, tokens: bool = False,
                 precision: Precision | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tokens = tokens
        self.precision = precision or Precision("fp32", "cpu", "fp32")
        self.compute = self.precision if backbone is not None else Precision("fp32", self.precision.device_type,
                                                                              self.precision.storage)

    def forward(self, batch: Sequence[Example], features: list[torch.Tensor] | None) -> tuple:
        with self.compute.autocast():
            return self._forward(batch, features)

    def _forward(self, batch: Sequence[Example], features: list[torch.Tensor] | None) -> tuple:
        residues = pad_features(features) if self.backbone is None else self.backbone.embed(
            [e.sequence for e in batch], [e.id for e in batch], tokens=self.tokens
        )
        device = residues.hidden.device
        mask = residues.mask.to(device)
        if not self.tokens:
            return self.head(residues.hidden, mask), mask
        if residues.tokens is None:
            raise BenchError("this head reads token-level states, which frozen embeddings, chunked long "
                             "sequences and non-transformer backbones do not give; use --head auto")
        return self.head(residues.tokens, residues.token_mask.to(device)), mask

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


def loss_sum(task: Task, output: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The loss summed over scored positions, so that micro-batches add up to the whole batch's."""
    output, labels = output[known], labels[known]
    if task.type == "classification":
        return nn.functional.cross_entropy(output.float(), labels, reduction="sum")
    return nn.functional.mse_loss(output.reshape(labels.shape).float(), labels, reduction="sum")


def loss_fn(task: Task, output: torch.Tensor, labels: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The mean loss over scored positions."""
    return loss_sum(task, output, labels, known) / known.sum().clamp(min=1)


def split_loss(task: Task, examples: Sequence[Example], predictions: list[np.ndarray]) -> float:
    """The training loss on a split from its predictions, averaged over scored positions."""
    outputs, labels, known = [], [], []
    for e, value in zip(examples, predictions, strict=True):
        value = torch.as_tensor(value, dtype=torch.float32)
        if task.level == "protein":
            outputs.append(value.reshape(1, -1))
            labels.append(torch.tensor([e.label]))
            known.append(torch.ones(1, dtype=torch.bool))
        else:
            outputs.append(value.reshape(len(e.sequence), -1))
            labels.append(torch.as_tensor(np.asarray(e.label)))
            known.append(torch.ones(len(e.sequence), dtype=torch.bool) if e.mask is None else
                         torch.as_tensor(np.asarray(e.mask), dtype=torch.bool))
    dtype = torch.long if task.type == "classification" else torch.float32
    output, label, scored = torch.cat(outputs), torch.cat(labels).to(dtype), torch.cat(known)
    if task.type == "regression":
        output = output.squeeze(-1)
    count = int(scored.sum())
    return float(loss_sum(task, output, label, scored)) / count if count else float("nan")


class Units:
    """What training steps draw from: whole proteins (``residue_level=False``), or each scored
    residue of cached embeddings on its own."""

    def __init__(self, task: Task, examples: Sequence[Example], features: list[torch.Tensor] | None,
                 residue_level: bool) -> None:
        self.task, self.examples, self.features = task, examples, features
        self.residue_level = residue_level
        if residue_level:
            if features is None or task.level != "residue":
                raise BenchError("--batch-unit residues needs a per-residue task and frozen embeddings "
                                 "(--method frozen); use --batch-unit proteins")
            dummy = torch.zeros(1, max(len(e.sequence) for e in examples), dtype=torch.bool)
            rows, targets = [], []
            for e, f in zip(examples, features, strict=True):
                labels, known = labels_for(task, [e], dummy[:, : len(e.sequence)])
                rows.append(f[known[0].to(f.device)])
                targets.append(labels[0][known[0]])
            self.hidden, self.labels = torch.cat(rows), torch.cat(targets)
            self.count = len(self.labels)
        else:
            self.count = len(examples)
            self.scored = [1 if task.level == "protein" else
                           (len(e.sequence) if e.mask is None else int(np.asarray(e.mask).sum())) for e in examples]

    def weight(self, idx: Sequence[int]) -> int:
        """Scored positions in ``idx``: the loss of a batch is their mean."""
        return len(idx) if self.residue_level else sum(self.scored[i] for i in idx)

    def residues(self, idx: Sequence[int]) -> int:
        return len(idx) if self.residue_level else sum(len(self.examples[i].sequence) for i in idx)

    def lengths(self) -> list[int]:
        """Each unit's length, which training batches are grouped by (a residue is 1 long)."""
        return [1] * self.count if self.residue_level else [len(e.sequence) for e in self.examples]

    def loss(self, model: Model, idx: Sequence[int], device: torch.device) -> torch.Tensor:
        """Summed loss of units ``idx``."""
        if self.residue_level:
            hidden = self.hidden[list(idx)].unsqueeze(0)
            output = model.head(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device))
            labels = self.labels[list(idx)].unsqueeze(0).to(device)
            return loss_sum(self.task, output, labels, torch.ones_like(labels, dtype=torch.bool))
        batch = [self.examples[i] for i in idx]
        output, mask = model(batch, self.features and [self.features[i] for i in idx])
        labels, known = labels_for(self.task, batch, mask.cpu())
        return loss_sum(self.task, output, labels.to(device), known.to(device))


def batches(lengths: Sequence[int], size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    """Index batches of ``size`` items of similar length (:func:`length_buckets`); seeded and
    different every epoch when a generator is given (training), short to long otherwise.

    No residue budget: a training batch holds the configured number of examples, as the study's
    Trainer batches did (8 or 1 sequences, its Table S12), though grouped by length where it
    shuffled; memory is the OOM backoff's business, which keeps the effective batch.
    """
    return length_buckets(lengths, max_residues=None, max_items=size, generator=generator)


@dataclass
class Checkpoint:
    """Trainable weights at one evaluation, with where and how well."""

    epoch: float
    step: int
    valid: float  # the task's primary metric on valid
    valid_loss: float
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
    resumed_from: dict | None = None  # the validation a rerun went on from (:mod:`plm_bench.run.resume`)
    skipped_steps: int = 0  # fp16 steps whose gradients overflowed: the scaler skipped them and lowered its scale
    scaler: dict = field(default_factory=dict)  # the loss scaler's state (empty without loss scaling)


class NonFinite(BenchError):
    """A loss or gradient that is not finite and that loss scaling cannot absorb."""


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights now (a checkpoint kept in memory)."""
    return {name: t.clone() for name, t in trainable_state(model).items()}


@torch.no_grad()
def restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot` back in place: trainable weights and the head's buffers (a head's
    batch-norm statistics belong to the weights they were learned with); frozen weights are untouched."""
    for name, tensor in trainable_state(model).items():
        if name in state:
            tensor.copy_(state[name])


def optimizer_for(model: Model, config: RunConfig, parameters: list[torch.Tensor] | None = None,
                  **extra: Any) -> torch.optim.Optimizer:
    """The run's optimizer over ``model``'s trainable parameters (or ``parameters``, e.g. a stack
    of seeds' heads); ``extra``: torch keyword arguments such as ``fused``."""
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[config.optimizer]
    return kind(model.trainable_parameters() if parameters is None else parameters, lr=config.lr,
                eps=config.adam_eps, weight_decay=config.weight_decay, **extra)


def schedule_for(optimizer: torch.optim.Optimizer, config: RunConfig,
                 steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant, or transformers' linear decay to 0 over ``steps`` (what HF Trainer uses by default)."""
    if config.schedule == "linear":
        from transformers import get_linear_schedule_with_warmup

        return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def better(config: RunConfig, valid: float, valid_loss: float, than: Checkpoint | None, margin: float = 0.0) -> bool:
    """Whether a validation beats checkpoint ``than`` by more than ``margin`` under ``select_by``."""
    if than is None:
        return True
    if config.select_by == "valid-loss":
        return valid_loss < than.valid_loss - margin
    return valid > than.valid + margin


def halted(state: Outcome, config: RunConfig) -> bool:
    """Whether training is over for good: patience ran out and the run reports that checkpoint."""
    return state.stopped_at_epoch is not None and config.checkpoint == "early-stop"


def validated(model: nn.Module, config: RunConfig, context: RunContext, state: Outcome, epochs_run: float,
              loss: float, valid: float, valid_loss: float, since_improvement: int,
              early_best: Checkpoint | None) -> tuple[int, Checkpoint | None]:
    """Book one validation of ``model`` (at ``epochs_run``, last training loss ``loss``) into
    ``state``: its history entry, the best-of-N checkpoint, early stopping's count; returns the
    count and the best validation it counts from. Every training loop shares it (this module's
    and the stacked frozen heads' of :mod:`plm_bench.run.frozen_heads`)."""
    state.epochs_run = epochs_run
    state.history.append({"epoch": round(state.epochs_run, 4), "step": len(state.history) + 1,
                          "train_loss": loss, "valid": valid, "valid_loss": valid_loss})
    if better(config, valid, valid_loss, state.best):
        state.best = Checkpoint(state.epochs_run, len(state.history), valid, valid_loss,
                                state.train_seconds, snapshot(model))
    context.progress.validation(state.epochs_run, len(state.history), valid, state.best.valid, loss, valid_loss)
    if state.stopped_at_epoch is None:
        if better(config, valid, valid_loss, early_best, config.min_delta):
            early_best, since_improvement = Checkpoint(state.epochs_run, 0, valid, valid_loss, 0.0, {}), 0
        else:
            since_improvement += 1
        if config.patience is not None and since_improvement >= config.patience:
            state.stopped_at_epoch, state.early_stop = state.epochs_run, state.best
            context.progress.early_stop(state.epochs_run, state.best.valid, config.patience,
                                        stops=config.checkpoint == "early-stop")
    return since_improvement, early_best


def resume_training(model: Model, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    state: Outcome, config: RunConfig, context: RunContext,
                    generator: torch.Generator) -> resume.Position | None:
    """Put the training state a previous attempt of the run saved (:mod:`plm_bench.run.resume`)
    into the model, optimizer, scheduler, ``state`` and the batch-order ``generator``; where to
    go on from, or ``None`` (no saved state: start afresh)."""
    saved = resume.load(context.resume_dir, config, model, optimizer, scheduler, state, context.torch_device,
                        context.progress) if context.resume_dir else None
    if saved:
        generator.set_state(saved.epoch_generator)  # the epoch's batch order is drawn again, the same
        state.resumed_from = {"epoch": state.history[-1]["epoch"], "step": state.history[-1]["step"]}
        context.progress.resuming(state.epochs_run, len(state.history))
    return saved


def train(model: Model, task: Task, splits: dict, features: dict | None, config: RunConfig,
          context: RunContext, validate: Callable[[], tuple[float, float]]) -> Outcome:
    """Train under the run protocol; ``validate()`` returns (primary metric, loss) on valid.

    With ``context.resume_dir`` the training state is saved after every validation, and a rerun
    of the same config goes on from the last one saved (:mod:`plm_bench.run.resume`).
    """
    if hasattr(model.head, "fit") and model.backbone is None:
        return fit_closed_form(model, task, splits["train"], features["train"], config, context, validate)
    device = context.torch_device
    units = Units(task, splits["train"], features and features["train"], config.batch_unit == "residues")
    steps_per_epoch = -(-units.count // config.batch_size)
    optimizer = optimizer_for(model, config)
    scheduler = schedule_for(optimizer, config, steps_per_epoch * config.epochs)
    scaler = model.compute.scaler()
    generator = torch.Generator().manual_seed(config.seed)
    state = Outcome(history=[], best=None, early_stop=None, stopped_at_epoch=None,  # type: ignore[arg-type]
                    epochs_run=0.0, micro_batch=config.batch_size, backoffs=[], train_seconds=0.0,
                    samples=0, residues=0)
    since_improvement, early_best = 0, None
    loss = float("nan")
    first_epoch, resumed_batches = 1, 0
    context.progress.training(len(splits["train"]))
    saved = resume_training(model, optimizer, scheduler, state, config, context, generator)
    if saved:
        first_epoch, resumed_batches, loss = saved.epoch, saved.batches_done, saved.loss
        since_improvement, early_best = saved.since_improvement, saved.early_best
        if state.scaler:
            scaler.load_state_dict(state.scaler)

    for epoch in range(first_epoch, config.epochs + 1):
        if halted(state, config):
            break
        model.train()
        epoch_generator = generator.get_state()
        order = batches(units.lengths(), config.batch_size, generator)
        checks = {max(0, round(len(order) * j / config.val_per_epoch) - 1) for j in range(1, config.val_per_epoch + 1)}
        steps_bar = context.progress.add_task(f"epoch {epoch}", total=len(order))
        done = resumed_batches if epoch == first_epoch else 0  # trained on before the run was resumed
        context.progress.advance(steps_bar, done)
        for b, idx in enumerate(order):
            if b < done:
                continue
            started = time.perf_counter()
            try:
                batch_loss = step(model, units, idx, optimizer, state, device, config.grad_clip, scheduler, scaler)
            except NonFinite as exc:
                raise BenchError(f"training stopped at epoch {epoch}, step {b + 1} of {len(order)}: {exc} under "
                                 f"--precision {model.compute.name}; {remedy(model.compute.name)}") from None
            loss = loss if batch_loss is None else batch_loss
            state.train_seconds += time.perf_counter() - started
            state.samples += len(idx)
            state.residues += units.residues(idx)
            context.progress.advance(steps_bar)
            if b not in checks:
                continue
            valid, valid_loss = validate()
            model.train()
            since_improvement, early_best = validated(model, config, context, state, epoch - 1 + (b + 1) / len(order),
                                                      loss, valid, valid_loss, since_improvement, early_best)
            if context.resume_dir:
                state.scaler = scaler.state_dict()  # empty without loss scaling
                resume.save(context.resume_dir, config, model, optimizer, scheduler, state, device,
                            resume.Position(epoch, b + 1, epoch_generator, loss, since_improvement, early_best))
            if halted(state, config):
                break
        context.progress.remove_task(steps_bar)
    state.early_stop = state.early_stop or state.best
    state.scaler = scaler.state_dict()  # empty without loss scaling
    return state


def fit_closed_form(model: Model, task: Task, train_set: list[Example], features: Sequence[torch.Tensor],
                    config: RunConfig, context: RunContext, validate: Callable[[], tuple[float, float]]) -> Outcome:
    """A head fitted in closed form (a linear probe) instead of by gradient steps: fitted once per
    regularization strength it offers, the strength best on valid (by ``select_by``) kept; each fit is one
    entry of the history (one pass over the training data: ``epoch`` 1, with its ``strength``)."""
    started = time.perf_counter()
    context.progress.training(len(train_set))
    rows, targets = [], []
    # rows and targets stay aligned; their order is immaterial
    for idx in batches([len(e.sequence) for e in train_set], config.batch_size):
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
        valid, valid_loss = validate()
        state.history.append({"epoch": 1.0, "step": number, "strength": strength, "train_loss": train_loss,
                              "valid": valid, "valid_loss": valid_loss})
        if better(config, valid, valid_loss, state.best):
            state.best = Checkpoint(1.0, number, valid, valid_loss, time.perf_counter() - started, snapshot(model))
        context.progress.validation(1.0, number, valid, state.best.valid, train_loss, valid_loss)
    state.train_seconds = time.perf_counter() - started
    state.early_stop = state.best
    return state


def remedy(precision: str) -> str:
    """What to try after a non-finite loss or gradient under ``precision``."""
    return {"fp16-mixed": "try --precision bf16-mixed (fp16's range is small) or fp32, or a lower --lr",
            "bf16-mixed": "try --precision fp32, or a lower --lr or --grad-clip 1.0"}.get(
        precision, "try a lower --lr or --grad-clip 1.0")


def step(model: Model, units: Units, idx: list[int], optimizer: torch.optim.Optimizer, state: Outcome,
         device: torch.device, grad_clip: float = 0.0,
         scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
         scaler: torch.amp.GradScaler | None = None) -> float | None:
    """One optimizer step over units ``idx``, in micro-batches of ``state.micro_batch``; returns the
    batch's mean loss (``None``: nothing in it is scored, or its loss was not finite and loss
    scaling skipped the step).

    Each micro-batch adds its summed loss over the batch's scored positions (residues for
    per-residue tasks, not proteins), so split batches compute exactly what the whole batch
    would. On CUDA out-of-memory the micro-batch halves and gradient accumulation doubles
    (same effective batch, same result); the backoff is recorded.

    With a loss ``scaler`` (fp16) an overflowed gradient skips the step and halves the scale, as
    HF Trainer's ``fp16=True`` does (the scheduler does not advance; ``state.skipped_steps``
    counts it); an overflow at a scale of 1 or less is no longer a scaling problem (the study's
    DeepSpeed config had ``min_loss_scale`` 1) and stops the run, as any non-finite loss or
    gradient does without a scaler (:class:`NonFinite`). The gradient norm is checked where it is
    computed anyway (clipping) and under bf16-mixed; an fp32 step without clipping checks its loss
    only (a norm costs a tiny head's step ~15 %), and a non-finite fp32 gradient shows up as the
    next step's non-finite loss.
    """
    total_weight = units.weight(idx)
    if total_weight == 0:
        return None
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    parameters = model.trainable_parameters()
    while True:
        try:
            optimizer.zero_grad()
            total = 0.0
            for start in range(0, len(idx), state.micro_batch):
                loss = units.loss(model, idx[start:start + state.micro_batch], device) / total_weight
                if not scaler.is_enabled() and not torch.isfinite(loss):
                    raise NonFinite(f"the training loss became {loss.item()}")
                scaler.scale(loss).backward()
                total += loss.item()
            scaler.unscale_(optimizer)
            norm = nn.utils.clip_grad_norm_(parameters, grad_clip) if grad_clip else None
            if not scaler.is_enabled():
                if norm is None and model.compute.mixed:
                    grads = [p.grad for p in parameters if p.grad is not None]
                    norm = nn.utils.get_total_norm(grads) if grads else None
                if norm is not None and not torch.isfinite(norm):
                    raise NonFinite(f"the gradient norm became {norm.item()}")
                optimizer.step()
            else:
                scale = scaler.get_scale()
                scaler.step(optimizer)  # skipped where unscale_ found inf/NaN gradients
                scaler.update()
                if scaler.get_scale() < scale:
                    state.skipped_steps += 1
                    if scale <= 1:
                        raise NonFinite(f"the fp16 gradients overflowed even at loss scale {scale:g} "
                                        f"(loss {total:.4g})")
                    return total if math.isfinite(total) else None  # the forward's loss, though not stepped on
            if scheduler is not None:
                scheduler.step()
            return total
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            longest = max(len(units.examples[i].sequence) for i in idx) if not units.residue_level else 1
            if state.micro_batch == 1:
                raise BenchError(f"out of GPU memory even at micro-batch 1 (longest sequence {longest} residues): "
                                 "use a smaller backbone, --method lora, --precision bf16-mixed, or a bigger GPU"
                                 ) from None
            state.micro_batch //= 2
            state.backoffs.append({"micro_batch": state.micro_batch, "longest_sequence": longest,
                                   "epoch": state.epochs_run})


@torch.no_grad()
def predict(model: Model, examples: list[Example], features: list | None, batch_size: int) -> list[np.ndarray]:
    """Per-example predictions: a value or class scores, or per-residue arrays of those."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(examples)
    for idx in batches([len(e.sequence) for e in examples], batch_size):
        batch = [examples[i] for i in idx]
        output, _ = model(batch, features and [features[i] for i in idx])
        output = output.float().cpu().numpy()
        for row, (i, e) in enumerate(zip(idx, batch, strict=True)):
            value = output[row] if output.ndim == 2 else output[row, : len(e.sequence)]
            out[i] = value.squeeze(-1) if value.shape[-1] == 1 else value
    return out  # type: ignore[return-value]
