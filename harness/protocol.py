"""The standardized run protocol: seed, train, validate every epoch, keep the best
validation checkpoint, test it once.

One config in, one run record out. Frozen methods embed each split once and train the head on
those embeddings; other methods train backbone and head end to end.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from plm_bench import plugins
from plm_bench.backbone import Backbone, Residues, residue_mask
from plm_bench.errors import BenchError
from plm_bench.metrics import metric
from plm_bench.task import SPLITS, Example, Task


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result; its hash identifies the run in the store."""

    backbone: str
    task: str
    method: str = "frozen"
    head: str = "auto"
    seed: int = 1
    epochs: int = 10
    lr: float | None = None
    batch_size: int = 8
    backbone_path: str | None = None
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16 (families enforce their limits)
    init: str = "pretrained"  # pretrained | random (the study's no-pretraining control)
    long_policy: str = "error"  # error | chunk, for sequences past the backbone's max length
    method_options: dict = field(default_factory=dict)  # e.g. LoRA rank/alpha/targets
    limit_train: int | None = None  # first N training examples (quick runs on CPU)
    limit_eval: int | None = None  # first N validation and N test examples

    def resolved(self) -> RunConfig:
        """Fill the defaults that depend on plugins (head by task level, lr by method),
        so that spelling a default out and leaving it implicit hash the same."""
        task: Task = plugins.get("task", self.task)
        head = f"mlp-{task.level}" if self.head == "auto" else self.head
        lr = plugins.get("method", self.method).default_lr if self.lr is None else self.lr
        path = str(Path(self.backbone_path).resolve()) if self.backbone_path else None
        return replace(self, head=head, lr=lr, backbone_path=path)

    @property
    def hash(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class RunContext:
    """Where and how to run: none of it changes what a run computes."""

    data_dir: Path
    device: str = "auto"
    progress: Progress | None = None  # None: silent (e.g. in remote workers)

    def __post_init__(self) -> None:
        if self.progress is None:
            self.progress = Progress(disable=True)

    def __getstate__(self) -> dict:
        """Launchers ship contexts to workers; a live progress display stays behind."""
        return {**self.__dict__, "progress": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda asked for, but torch sees no CUDA device")
        return torch.device(self.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def attempt(config: RunConfig, context: RunContext) -> dict:
    """Run one config; a run that raises becomes a ``failed`` record, so a grid goes on."""
    try:
        return execute(config, context)
    except Exception as exc:  # recorded, not swallowed: the record carries the error
        return {
            "config": asdict(config),
            "config_hash": config.hash,
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "primary_metric": "",
            "metrics": {},
            "environment": environment(context.torch_device),
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }


def execute(config: RunConfig, context: RunContext) -> dict:
    """Run one (resolved) config; return its run record."""
    run_started = time.perf_counter()
    seed_everything(config.seed)
    device = context.torch_device
    task: Task = plugins.get("task", config.task)
    splits = limit(task.load(context.data_dir), config)
    spec = plugins.get("backbone", config.backbone)
    method = plugins.get("method", config.method)
    head_spec = plugins.get("head", config.head)
    if task.level not in head_spec.levels:
        raise BenchError(f"head {head_spec.name} cannot serve {task.level}-level task {task.name}")

    backbone: Backbone = spec.load(config.backbone_path or spec.hub_id, "cpu").to(device)
    seed_everything(config.seed)  # loading may consume random numbers (random-init layers)
    head = head_spec.build(backbone.hidden_size, task.out_dim, task.level).to(device)
    if method.trains_backbone:
        model = Model(method.prepare(backbone), head)
        features = None
    else:
        backbone.requires_grad_(False)
        model = Model(None, head)
        features = {s: embed_all(backbone, splits[s], context) for s in SPLITS}
    model.to(device)

    started = time.perf_counter()
    history = train(model, task, splits, features, config, context)
    train_seconds = time.perf_counter() - started
    test_predictions = predict(model, splits["test"], features and features["test"], config, context)
    best = max(history, key=lambda h: h["valid"])
    return {
        "config": asdict(config),
        "config_hash": config.hash,
        "status": "finished",
        "primary_metric": task.metric,
        "metrics": {
            "valid": {task.metric: best["valid"]},
            "test": {task.metric: score(task, splits["test"], test_predictions)},
        },
        "best_epoch": best["epoch"],
        "history": history,
        "parameters": {
            "trainable": sum(p.numel() for p in model.trainable_parameters()),
            "total": sum(p.numel() for p in model.parameters()) + (
                0 if method.trains_backbone else sum(p.numel() for p in backbone.parameters())
            ),
        },
        "timings": {
            "train_seconds": train_seconds,
            "total_seconds": time.perf_counter() - run_started,
        },
        "environment": environment(device),
        "finished_at": datetime.now(timezone.utc).isoformat(),
    }


def limit(splits: dict[str, list[Example]], config: RunConfig) -> dict[str, list[Example]]:
    """The first ``limit_train``/``limit_eval`` examples of each split (recorded in the config)."""
    caps = {"train": config.limit_train, "valid": config.limit_eval, "test": config.limit_eval}
    return {name: examples[: caps[name]] if caps[name] else examples for name, examples in splits.items()}


class Model(nn.Module):
    """Backbone (absent for frozen methods) followed by the head."""

    def __init__(self, backbone: nn.Module | None, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: Sequence[Example], features: list[torch.Tensor] | None) -> tuple:
        residues = pad_features(features) if self.backbone is None else self.backbone.embed(
            [e.sequence for e in batch]
        )
        device = residues.hidden.device
        return self.head(residues.hidden, residues.mask.to(device)), residues.mask.to(device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def pad_features(features: list[torch.Tensor]) -> Residues:
    hidden = nn.utils.rnn.pad_sequence(features, batch_first=True)
    return Residues(hidden=hidden, mask=residue_mask([len(f) for f in features]))


@torch.no_grad()
def embed_all(backbone: Backbone, examples: list[Example], context: RunContext,
              batch_size: int = 8) -> list[torch.Tensor]:
    """Per-residue embeddings of each example, computed once, kept on the run's device."""
    backbone.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].sequence))
    out: list[torch.Tensor | None] = [None] * len(examples)
    job = context.progress.add_task("embedding", total=len(examples))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        residues = backbone.embed([examples[i].sequence for i in idx])
        for row, i in enumerate(idx):
            out[i] = residues.hidden[row, : len(examples[i].sequence)].float()
        context.progress.advance(job, len(idx))
    context.progress.remove_task(job)
    return out  # type: ignore[return-value]


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


def loss_fn(task: Task, output: torch.Tensor, labels: torch.Tensor, known: torch.Tensor):
    output, labels = output[known], labels[known]
    if task.type == "classification":
        return nn.functional.cross_entropy(output, labels)
    return nn.functional.mse_loss(output.squeeze(-1), labels)


def batches(n: int, size: int, generator: torch.Generator | None = None) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist() if generator else list(range(n))
    return [order[i:i + size] for i in range(0, n, size)]


def train(model: Model, task: Task, splits: dict, features: dict | None, config: RunConfig,
          context: RunContext) -> list[dict]:
    """Train for ``config.epochs``; after each epoch validate, and keep the best weights."""
    device = context.torch_device
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    train_set = splits["train"]
    history: list[dict] = []
    best_score, best_state = -np.inf, None
    epochs = context.progress.add_task("epochs", total=config.epochs)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = batches(len(train_set), config.batch_size, generator)
        steps = context.progress.add_task(f"epoch {epoch}", total=len(order))
        total_loss = 0.0
        for idx in order:
            batch = [train_set[i] for i in idx]
            output, mask = model(batch, features and [features["train"][i] for i in idx])
            labels, known = labels_for(task, batch, mask.cpu())
            loss = loss_fn(task, output, labels.to(device), known.to(device))
            if not torch.isfinite(loss):
                raise BenchError(f"loss became {loss.item()} at epoch {epoch}; lower --lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            context.progress.advance(steps)
        context.progress.remove_task(steps)
        valid = score(task, splits["valid"],
                      predict(model, splits["valid"], features and features["valid"], config, context))
        history.append({"epoch": epoch, "train_loss": total_loss / len(train_set), "valid": valid})
        if valid > best_score:
            best_score = valid
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        context.progress.advance(epochs)
    context.progress.remove_task(epochs)
    restore(model, best_state)
    return history


@torch.no_grad()
def restore(model: nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """Copy saved trainable weights back in place (buffers and frozen weights are untouched)."""
    for name, parameter in model.named_parameters():
        if state and name in state:
            parameter.copy_(state[name])


@torch.no_grad()
def predict(model: Model, examples: list[Example], features: list | None, config: RunConfig,
            context: RunContext) -> list[np.ndarray]:
    """Per-example predictions: a value or class scores, or per-residue arrays of those."""
    model.eval()
    out: list[np.ndarray] = []
    for idx in batches(len(examples), config.batch_size):
        batch = [examples[i] for i in idx]
        output, _ = model(batch, features and [features[i] for i in idx])
        output = output.float().cpu().numpy()
        for row, e in enumerate(batch):
            value = output[row] if output.ndim == 2 else output[row, : len(e.sequence)]
            out.append(value.squeeze(-1) if value.shape[-1] == 1 else value)
    return out


def score(task: Task, examples: list[Example], predictions: list[np.ndarray]) -> float:
    """The task's primary metric over all examples (residue tasks: pooled scored residues)."""
    if task.level == "protein":
        y_true = np.array([e.label for e in examples])
        y_pred = np.stack(predictions)
    else:
        known = [np.ones(len(e.sequence), bool) if e.mask is None else e.mask for e in examples]
        y_true = np.concatenate([np.asarray(e.label)[k] for e, k in zip(examples, known, strict=True)])
        y_pred = np.concatenate([p[k] for p, k in zip(predictions, known, strict=True)])
    return metric(task.metric)(y_true, y_pred)


def environment(device: torch.device) -> dict:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "host": platform.node(),
    }
