"""The standardized run protocol: seed, train, validate every epoch, keep the best
validation checkpoint, test it once.

One config in, one run record out. Frozen methods embed each split once and train the head on
those embeddings; other methods train backbone and head end to end.
"""

from __future__ import annotations

import platform
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.measure.memory import peak_memory, per_second, reset_peak_memory
from plm_bench.models.backbone import Backbone, load_backbone
from plm_bench.models.embeddings import CachedFeatures, EmbeddingCache
from plm_bench.results import artifacts, records
from plm_bench.results.intervals import bootstrap_ci
from plm_bench.run.batching import length_buckets
from plm_bench.run.training import Model, predict, restore, train
from plm_bench.tasks.metrics import evaluate, score
from plm_bench.tasks.task import Example, Task


@dataclass
class RunContext:
    """Where and how to run: none of it changes what a run computes."""

    data_dir: Path
    device: str = "auto"
    progress: Progress | None = None  # None: silent (e.g. in remote workers)
    artifact_dir: Path | None = None  # where runs save their trained weights; None: not saved

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


def execute(config: RunConfig, context: RunContext) -> dict:
    """Run one (resolved) config; return its run record."""
    run_started = time.perf_counter()
    seed_everything(config.seed)
    device = context.torch_device
    reset_peak_memory(device)
    task: Task = plugins.get("task", config.task)
    splits = limit(task.load(context.data_dir), config)
    backbone, model = build(config, task, device)
    embed_started = time.perf_counter()
    features = frozen_features(backbone, splits, config, context) if model.backbone is None else None
    embed_seconds = time.perf_counter() - embed_started

    def predictions(split: str) -> list[np.ndarray]:
        return predict(model, splits[split], features and features[split], config.batch_size)

    outcome = train(model, task, splits, features, config, context,
                    validate=lambda: score(task, splits["valid"], predictions("valid")))
    eval_started = time.perf_counter()
    chosen = outcome.early_stop if config.checkpoint == "early-stop" else outcome.best
    candidates = {"early-stop": outcome.early_stop}
    if config.checkpoint == "best-of-N" or outcome.stopped_at_epoch is None:
        candidates["best-of-N"] = outcome.best  # only known when training ran every epoch
    checkpoints = {}
    for name, checkpoint in candidates.items():
        restore(model, checkpoint.state)
        checkpoints[name] = {"epoch": checkpoint.epoch, "step": checkpoint.step, "valid": checkpoint.valid,
                             "test": score(task, splits["test"], predictions("test"))}
    restore(model, chosen.state)  # the model leaves the run at the checkpoint it reports
    artifact = artifacts.save(model, context.artifact_dir, config.hash) if context.artifact_dir else None
    test_predictions = predictions("test")
    low, high = bootstrap_ci(task, splits["test"], test_predictions, seed=config.seed)
    eval_seconds = time.perf_counter() - eval_started
    return records.finished(
        config,
        primary_metric=task.metric,
        metrics={
            "valid": {task.metric: chosen.valid},
            "test": evaluate(task, splits["test"], test_predictions),  # primary and secondary metrics
        },
        test_ci={"low": low, "high": high, "level": 0.95, "resampled": "proteins"},
        checkpoints=checkpoints,
        early_stopping={
            "patience": config.patience, "min_delta": config.min_delta,
            "stopped_at_epoch": outcome.stopped_at_epoch, "epochs_run": outcome.epochs_run,
            "epochs_saved": config.epochs - outcome.epochs_run,
        },
        history=outcome.history,
        parameters={
            "trainable": sum(p.numel() for p in model.trainable_parameters()),
            "total": sum(p.numel() for p in model.parameters()) + (
                0 if model.backbone is not None else sum(p.numel() for p in backbone.parameters())
            ),
        },
        adapter=artifacts.adapter_config(model),
        **({"artifact": artifact} if artifact else {}),
        cost={
            "train_seconds": outcome.train_seconds,
            "embed_seconds": embed_seconds,
            "eval_seconds": eval_seconds,
            "time_to_best_seconds": chosen.seconds,
            "total_seconds": time.perf_counter() - run_started,
            "train_samples_per_second": per_second(outcome.samples, outcome.train_seconds),
            "train_residues_per_second": per_second(outcome.residues, outcome.train_seconds),
            "peak_memory": peak_memory(device),
            "micro_batch": outcome.micro_batch,
            "oom_backoffs": outcome.backoffs,
            "dtype": str(next(iter(model.parameters())).dtype).removeprefix("torch."),
        },
        environment=environment(device),
    )


def build(config: RunConfig, task: Task, device: torch.device) -> tuple[Backbone, Model]:
    """The run's model before training: the backbone as loaded, adapted by the method (or
    frozen), and a fresh head. Predicting with a saved run rebuilds it exactly this way."""
    spec = plugins.get("backbone", config.backbone)
    method = plugins.get("method", config.method)
    head_spec = plugins.get("head", config.head)
    if task.level not in head_spec.levels:
        raise BenchError(f"head {head_spec.name} cannot serve {task.level}-level task {task.name}")
    options = method.resolve_options(config.method_options)

    seed_everything(config.seed)
    backbone = load_backbone(spec, config.backbone_path or spec.hub_id, device, dtype=config.dtype,
                             init=config.init, long_policy=config.long_policy)
    seed_everything(config.seed)  # loading may consume random numbers (random-init layers)
    head = head_spec.build(backbone.hidden_size, task.out_dim, task.level).to(device)
    if method.trains_backbone:
        return backbone, Model(method.prepare(backbone, options), head).to(device)
    backbone.requires_grad_(False)
    return backbone, Model(None, head).to(device)


def frozen_features(backbone: Backbone, splits: dict[str, list[Example]], config: RunConfig,
                    context: RunContext) -> dict[str, CachedFeatures]:
    """Each split's embeddings from the on-disk cache, computed with :func:`embed_all` on a miss;
    the entry depends on the weights, the settings below and the sequences, not on the seed,
    head or learning rate, so those reuse it."""
    cache = EmbeddingCache(backbone, backbone.hidden_size, {"dtype": config.dtype, "long_policy": config.long_policy})
    embed = partial(embed_all, backbone, context=context)
    return {name: cache.features(examples, embed, context.torch_device) for name, examples in splits.items()}


def limit(splits: dict[str, list[Example]], config: RunConfig) -> dict[str, list[Example]]:
    """The first ``limit_train``/``limit_eval`` examples of each split (recorded in the config)."""
    caps = {"train": config.limit_train, "valid": config.limit_eval, "test": config.limit_eval}
    return {name: examples[: caps[name]] if caps[name] else examples for name, examples in splits.items()}


@torch.no_grad()
def embed_all(backbone: Backbone, examples: list[Example], context: RunContext,
              batch_size: int = 8) -> list[torch.Tensor]:
    """Per-residue embeddings of each example, computed once, kept on the run's device.

    Batches group sequences of similar length under a residue budget (at most ``batch_size``
    sequences each), so padding stays small and a batch of long proteins does not blow memory.
    """
    backbone.eval()
    backbone.check_lengths([e.sequence for e in examples], [e.id for e in examples])
    out: list[torch.Tensor | None] = [None] * len(examples)
    job = context.progress.add_task("embedding", total=len(examples))
    for idx in length_buckets([len(e.sequence) for e in examples], max_items=batch_size):
        residues = backbone.embed([examples[i].sequence for i in idx], [examples[i].id for i in idx])
        for row, i in enumerate(idx):
            out[i] = residues.hidden[row, : len(examples[i].sequence)].float()
        context.progress.advance(job, len(idx))
    context.progress.remove_task(job)
    return out  # type: ignore[return-value]


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
