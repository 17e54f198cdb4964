"""The standardized run protocol: seed, train, validate every epoch, keep the best
validation checkpoint, test it once.

One config in, one run record out. Frozen methods embed each split once and train the head on
those embeddings; other methods train backbone and head end to end. The data is the task's
splits after ``--limit-*``/``--train-fraction`` (:func:`limit`), then ``--dedup`` and
``--max-identity`` (harness/tasks/overlap.py), so repeats and identities are those of what the run
trains on and scores.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.measure.memory import peak_memory, per_second, reset_peak_memory
from plm_bench.models import embedding_files
from plm_bench.models.backbone import Backbone, load_backbone
from plm_bench.models.embeddings import EmbeddingCache, fingerprint
from plm_bench.models.precision import Precision, resolve_precision
from plm_bench.plugins.specs import HeadSpec
from plm_bench.results import artifacts, baselines, records
from plm_bench.results.intervals import bootstrap_ci
from plm_bench.run import frozen_heads, inputs, threads
from plm_bench.run.batching import length_buckets
from plm_bench.run.progress import Progress
from plm_bench.run.training import Checkpoint, Model, Outcome, predict, restore, split_loss, train
from plm_bench.tasks.metrics import CORRELATIONS, constant_labels, evaluate, score
from plm_bench.tasks.overlap import identity_subset, repeats
from plm_bench.tasks.sources import forget_hashes, read_digests, unverified_reads
from plm_bench.tasks.task import Example, Task


@dataclass
class RunContext:
    """Where and how to run: none of it changes what a run computes."""

    data_dir: Path
    device: str = "auto"
    progress: Progress = field(default_factory=Progress)  # silent by default; workers get its event log only
    artifact_dir: Path | None = None  # where runs save their trained weights; None: not saved
    pending_dir: Path | None = None  # where a finished run journals its record until the store holds it
    # where a run saves its training state after each validation, for a rerun to resume from (the store's
    # resume_folder, which deletes it once the record is stored); None: no checkpointing
    resume_dir: Path | None = None
    # config hash -> its input files' digests when the command planned it (run.inputs.planned); a run
    # whose files differ by the time it starts stops (the seeds of one command read one version)
    planned: dict[str, dict] = field(default_factory=dict)

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


@dataclass
class Prepared:
    """A run up to its training: its data, embeddings and fresh model, and what its record says
    about its inputs."""

    config: RunConfig
    context: RunContext
    task: Task
    splits: dict[str, list[Example]]
    features: dict | None
    backbone: Backbone
    model: Model
    duplicates: dict
    test_subset: dict | None
    unverified: list[str]
    warnings: list[str]
    truncated: dict | None
    embed_seconds: float
    untrained: list[np.ndarray]  # test predictions before any training step: a baseline
    started: float
    inputs: dict  # digests of what the run read (run.inputs) and of the weights as loaded
    together: int = 1  # seeds whose heads trained as one model with this run's (:mod:`plm_bench.run.frozen_heads`)

    def validate(self) -> Callable[[], tuple[float, float]]:
        valid = self.features and self.features["valid"]
        return validation(self.model, self.task, self.splits["valid"], valid, self.config)


def execute(config: RunConfig, context: RunContext) -> dict:
    """Run one (resolved) config; return its run record."""
    with threads.using(work_threads(config)):
        return trained_alone(prepare(config, context))


def trained_alone(run: Prepared) -> dict:
    """The record of a prepared run trained on its own."""
    return finish(run, train_model(run.model, run.task, run.splits, run.features, run.config, run.context,
                                   run.validate()))


def execute_together(configs: Sequence[RunConfig], context: RunContext) -> list[dict | Exception]:
    """Run the seeds ``configs`` of one frozen condition (same settings but the seed: what
    :func:`~plm_bench.run.driver.seed_groups` groups) and return each one's record, or the
    exception that failed it. The first seed loads the data, backbone and embeddings, the others
    share them; their heads train as one stacked model (:mod:`plm_bench.run.frozen_heads`); each
    is tested and recorded as alone, so its record equals its record run alone up to rounding."""
    device = context.torch_device
    with threads.using(work_threads(configs[0])):
        contexts = [replace(context, progress=copy.copy(context.progress)) for _ in configs]  # events per seed
        for config, own in zip(configs, contexts, strict=True):
            own.progress.start(config)
        first = prepare(configs[0], contexts[0])
        if not frozen_heads.fits(first.model, first.task, first.config):  # a head that does not stack: one by one
            return [_attempted(trained_alone, first),
                    *(_attempted(execute, config, own) for config, own in zip(configs[1:], contexts[1:], strict=True))]
        runs: list[Prepared | Exception] = [first]
        randoms = {id(first): frozen_heads.Randoms.capture(device)}  # each seed's, as its preparation left them
        for config, own in zip(configs[1:], contexts[1:], strict=True):
            runs.append(run := _attempted(prepare, config, own, like=first))
            randoms[id(run)] = frozen_heads.Randoms.capture(device)
        prepared = [run for run in runs if isinstance(run, Prepared)]
        jobs = {id(run): frozen_heads.Job(run.model, run.task, run.splits["train"], run.features["train"], run.config,
                                          run.context, run.validate(), randoms[id(run)]) for run in prepared}
        for run in prepared:
            run.together = len(prepared)
        outcomes = dict(zip(jobs, frozen_heads.train_together(list(jobs.values())), strict=True))
        finished: list[dict | Exception] = []
        for run in runs:
            outcome = run if isinstance(run, Exception) else outcomes[id(run)]
            if isinstance(outcome, Exception):
                finished.append(outcome)
                continue
            jobs[id(run)].randoms.apply(device)  # the random states the run would have after training alone
            finished.append(_attempted(finish, run, outcome))
        return finished


def work_threads(config: RunConfig) -> int:
    """Threads for a run's work (:mod:`plm_bench.run.threads`): a fine-tuning run's is the
    backbone's throughout; a frozen run's is its head's (training, validation, testing) but for
    computing embeddings, which :func:`prepare` gives the backbone's."""
    return threads.for_backbone() if plugins.get("method", config.method).trains_backbone else threads.for_head()


def _attempted(function: Callable, *args: object, **kwargs: object) -> object:
    """``function``'s result, or the exception it raised (one seed's failure is its own)."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:  # handed back: the caller turns it into that seed's failed record
        return exc


def train_model(model: Model, task: Task, splits: dict, features: dict | None, config: RunConfig,
                context: RunContext, validate: Callable[[], tuple[float, float]]) -> Outcome:
    """Train a run's model: a frozen head that stacks through :mod:`plm_bench.run.frozen_heads`
    (at the per-step floor), anything else through :func:`~plm_bench.run.training.train`."""
    if frozen_heads.fits(model, task, config):
        device = context.torch_device
        job = frozen_heads.Job(model, task, splits["train"], features["train"], config, context, validate,
                               frozen_heads.Randoms.capture(device))
        [outcome] = frozen_heads.train_together([job])
        job.randoms.apply(device)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return train(model, task, splits, features, config, context, validate)


def prepare(config: RunConfig, context: RunContext, like: Prepared | None = None) -> Prepared:
    """A run up to its training. ``like``: a prepared run of the same frozen condition but its
    seed, whose inputs (data, backbone, embeddings) this one shares instead of loading them again;
    only the head is built anew (seeded as alone, so its weights and random states are the same)."""
    run_started = time.perf_counter()
    seed_everything(config.seed)
    device = context.torch_device
    reset_peak_memory(device)
    if like is not None:
        inputs.check_planned(config, {k: v for k, v in like.inputs.items() if k != "weights"},
                             context.planned.get(config.hash))
        model = frozen_model(config, like.task, like.backbone, device, like.model.precision)
        if config.standardize:
            model.head.fit_standardization(like.features["train"])
        untrained = predict(model, like.splits["test"], like.features["test"], config.batch_size)
        return replace(like, config=config, context=context, model=model, untrained=untrained, embed_seconds=0.0,
                       started=run_started)
    task: Task = plugins.get("task", config.task)
    unverified_reads.clear()
    forget_hashes()  # every input is read from its content at least once per run
    splits, duplicates = repeats(limit(task.load(context.data_dir), config), config.dedup, task.name)
    files = inputs.of_run(config, read_digests)
    inputs.check_planned(config, files, context.planned.get(config.hash))
    splits, test_subset = identity_subset(splits, config.max_identity, task.name, threads=threads.for_backbone())
    unverified = sorted(unverified_reads)  # read with --allow-unverified: the record says which
    warnings = [w for split in ("valid", "test") if (w := constant_labels(task, split, splits[split]))]
    if warnings and task.metric in CORRELATIONS:  # the result (or the checkpoint choice) would be undefined
        raise BenchError(f"task {task.name}: {warnings[0].split(':')[0]}, so its primary metric {task.metric} is "
                         "undefined there; give that split varied labels (with --limit-eval, draw more records)")
    loaded = load(config, device)
    weights = fingerprint(loaded)  # the weights as loaded, before any adapter: the record names them
    backbone, model = build(config, task, device, loaded)
    splits, truncated = truncate(splits, config, backbone)
    embed_started = time.perf_counter()
    with threads.using(threads.for_backbone()):
        features = (frozen_features(backbone, splits, config, context, weights, model.precision)
                    if model.backbone is None else None)
    embed_seconds = time.perf_counter() - embed_started
    if config.standardize:
        model.head.fit_standardization(features["train"])  # build() checked that the head can
    untrained = predict(model, splits["test"], features and features["test"], config.batch_size)
    return Prepared(config, context, task, splits, features, backbone, model, duplicates, test_subset, unverified,
                    warnings, truncated, embed_seconds, untrained, run_started,
                    {**files, "weights": f"blake2b:{weights}"})


def finish(run: Prepared, outcome: Outcome) -> dict:
    """Test a trained run's checkpoints and build its record."""
    config, context, task, splits, features, backbone, model = (
        run.config, run.context, run.task, run.splits, run.features, run.backbone, run.model)
    device = context.torch_device

    def predictions(split: str) -> list[np.ndarray]:
        return predict(model, splits[split], features and features[split], config.batch_size)

    context.progress.testing(len(splits["test"]))
    eval_started = time.perf_counter()
    chosen = reported(outcome, config)
    candidates = {"early-stop": outcome.early_stop}
    if config.checkpoint == "best-of-N" or outcome.stopped_at_epoch is None:
        candidates["best-of-N"] = outcome.best  # only known when training ran every epoch
    checkpoints = {}
    for name, checkpoint in candidates.items():
        restore(model, checkpoint.state)
        checkpoints[name] = {"epoch": checkpoint.epoch, "step": checkpoint.step, "valid": checkpoint.valid,
                             "valid_loss": checkpoint.valid_loss,
                             "test": score(task, splits["test"], predictions("test"))}
    restore(model, chosen.state)  # the model leaves the run at the checkpoint it reports
    artifact = artifacts.save(model, context.artifact_dir, config.hash) if context.artifact_dir else None
    test_predictions = predictions("test")
    low, high = bootstrap_ci(task, splits["test"], test_predictions, seed=config.seed)
    controls = {"untrained head": run.untrained}
    if config.shuffled_labels:
        controls["shuffled labels"] = shuffled_label_predictions(config, task, backbone, splits, features, context,
                                                                 model.precision)
    versus = baselines.margin(task, splits["train"], splits["test"], test_predictions, seed=config.seed,
                              controls=controls)
    eval_seconds = time.perf_counter() - eval_started
    return records.finished(
        config,
        primary_metric=task.metric,
        metrics={
            "valid": {task.metric: chosen.valid},
            "test": evaluate(task, splits["test"], test_predictions),  # primary and secondary metrics
        },
        test_ci={"low": low, "high": high, "level": 0.95, "resampled": "proteins"},
        baseline=versus,
        checkpoints=checkpoints,
        early_stopping={
            "patience": config.patience, "min_delta": config.min_delta,
            "stopped_at_epoch": outcome.stopped_at_epoch, "epochs_run": outcome.epochs_run,
            "epochs_saved": config.epochs - outcome.epochs_run,
            "still_improving": still_improving(outcome),
        },
        history=outcome.history,
        precision=precision_section(config, backbone, model, outcome),
        **({"resumed_from": outcome.resumed_from} if outcome.resumed_from else {}),
        **({"truncation": run.truncated} if run.truncated else {}),
        duplicates=run.duplicates,
        inputs=run.inputs,
        **({"test_subset": run.test_subset} if run.test_subset else {}),
        parameters=parameter_counts(backbone, model),
        adapter=artifacts.adapter_config(model),
        **({"artifact": artifact} if artifact else {}),
        **({"unverified_data": run.unverified} if run.unverified else {}),
        **({"warnings": run.warnings} if run.warnings else {}),
        cost={
            "train_seconds": outcome.train_seconds,
            "embed_seconds": run.embed_seconds,
            "eval_seconds": eval_seconds,
            "time_to_best_seconds": chosen.seconds,
            "total_seconds": time.perf_counter() - run.started,
            "train_samples_per_second": per_second(outcome.samples, outcome.train_seconds),
            "train_residues_per_second": per_second(outcome.residues, outcome.train_seconds),
            "peak_memory": peak_memory(device),
            "micro_batch": outcome.micro_batch,
            "oom_backoffs": outcome.backoffs,
            "dtype": dtype_name(model.parameters()),  # the trained weights' (the head's when frozen)
            "backbone_dtype": dtype_name(backbone.parameters(), backbone.buffers()),
        },
        environment={**environment(device),
                     **({"trained_together": f"{run.together} seeds"} if run.together > 1 else {})},
    )


def precision_section(config: RunConfig, backbone: Backbone, model: Model, outcome: Outcome) -> dict:
    """What the run computed and stored in which precision, and what loss scaling skipped:
    ``compute`` is the backbone's (embedding included), ``training`` the training steps'."""
    frozen = [p for p in (*backbone.parameters(), *model.parameters()) if not p.requires_grad]
    section = {"setting": config.precision, "compute": model.precision.name, "training": model.compute.name,
               "trainable": dtype_name(model.trainable_parameters()), "frozen": dtype_name(frozen),
               "loss_scaling": model.compute.name == "fp16-mixed", "skipped_steps": outcome.skipped_steps}
    if outcome.scaler:
        section["final_loss_scale"] = outcome.scaler["scale"]
    return section


def still_improving(outcome: Outcome) -> bool:
    """Whether training ended while validation still improved: every epoch ran and the best
    checkpoint is the last evaluation, so more epochs (or patience) might have done better.
    A closed-form probe, which tries each strength once, never is."""
    fitted = bool(outcome.history) and "strength" in outcome.history[-1]
    return (not fitted and outcome.stopped_at_epoch is None
            and outcome.best.step == len(outcome.history))


def parameter_counts(backbone: Backbone, model: Model) -> dict:
    """Trainable and total parameters of a run's model, the backbone counted once (a frozen
    method's model holds only the head), as run records and profiles store them."""
    total = sum(p.numel() for p in model.parameters())
    if model.backbone is None:
        total += sum(p.numel() for p in backbone.parameters())
    return {"trainable": sum(p.numel() for p in model.trainable_parameters()), "total": total}


def dtype_name(*tensors) -> str:
    """The dtype of the first floating-point tensor (a one-hot backbone has only a buffer); "none"
    where there is none."""
    first = next((t for group in tensors for t in group if t.is_floating_point()), None)
    return "none" if first is None else str(first.dtype).removeprefix("torch.")


def load(config: RunConfig, device: torch.device) -> Backbone:
    """The run's backbone as loaded, seeded first (random-init weights depend on the seed). Weights
    that will train load in fp32 (never rounded through 16-bit on the way); frozen ones in the
    precision's storage dtype."""
    spec = plugins.get("backbone", config.backbone)
    trains = plugins.get("method", config.method).trains_backbone
    precision = resolve_precision(config.precision, config.dtype, spec.dtypes, device, spec.name)
    seed_everything(config.seed)
    return load_backbone(spec, config.backbone_path or spec.hub_id, device,
                         dtype="fp32" if trains else precision.storage, init=config.init,
                         long_policy=config.long_policy)


def build(config: RunConfig, task: Task, device: torch.device, loaded: Backbone | None = None
          ) -> tuple[Backbone, Model]:
    """The run's model before training: the backbone as loaded (``loaded``, else :func:`load`),
    adapted by the method (or frozen), and a fresh head. Predicting with a saved run rebuilds it
    exactly this way."""
    method = plugins.get("method", config.method)
    head_spec = plugins.get("head", config.head)
    if task.level not in head_spec.levels:
        raise BenchError(f"head {head_spec.name} cannot serve {task.level}-level task {task.name}")
    options = method.resolve_options(config.method_options)

    spec = plugins.get("backbone", config.backbone)
    precision = resolve_precision(config.precision, config.dtype, spec.dtypes, device, spec.name)
    backbone = loaded if loaded is not None else load(config, device)
    if method.configure:
        method.configure(backbone, options)
    if head_spec.tokens and not method.trains_backbone:
        raise BenchError(f"head {head_spec.name} reads token-level states, which frozen embeddings do not keep; "
                         f"use it with a fine-tuning method or pick --head mlp-{task.level}")
    seed_everything(config.seed)  # loading may consume random numbers (random-init layers)
    head = fresh_head(config, task, backbone, method.trains_backbone).to(device)
    if method.trains_backbone:
        model = Model(method.prepare(backbone, options), head, tokens=head_spec.tokens, precision=precision).to(device)
        precision.apply(model)
        return backbone, model
    backbone.requires_grad_(False)
    return backbone, Model(None, head, precision=precision).to(device)


def frozen_model(config: RunConfig, task: Task, backbone: Backbone, device: torch.device,
                 precision: Precision) -> Model:
    """A frozen method's model as :func:`build` makes it: a fresh head seeded with the run's seed."""
    seed_everything(config.seed)
    return Model(None, fresh_head(config, task, backbone, False).to(device), precision=precision).to(device)


def fresh_head(config: RunConfig, task: Task, backbone: Backbone, trains_backbone: bool) -> torch.nn.Module:
    """The run's head as built before training (seed it first for a reproducible one)."""
    head_spec = plugins.get("head", config.head)
    return head_spec.build(backbone.hidden_size, task.out_dim, task.level,
                           **head_options(head_spec, config, trains_backbone))


def shuffled_label_predictions(config: RunConfig, task: Task, backbone: Backbone, splits: dict[str, list[Example]],
                               features: dict, context: RunContext, precision: Precision) -> list[np.ndarray]:
    """Test predictions of a fresh head trained, as the run's was, on the frozen training embeddings
    with the training labels permuted (across proteins, or across scored residues for per-residue
    tasks) and selected on the true validation labels: what the head learns without the label
    signal, so a result near it learned little."""
    rng = np.random.default_rng([config.seed, 7])  # its own stream: the run's draws stay as they were
    train_set = splits["train"]
    if task.level == "protein":
        order = rng.permutation(len(train_set))
        permuted = [replace(e, label=train_set[j].label) for e, j in zip(train_set, order, strict=True)]
    else:
        known = [baselines.known(e) for e in train_set]
        pool = np.concatenate([np.asarray(e.label)[m] for e, m in zip(train_set, known, strict=True)])
        pool = iter(rng.permutation(pool))
        permuted = []
        for e, m in zip(train_set, known, strict=True):
            label = np.array(e.label, copy=True)
            label[m] = [next(pool) for _ in range(int(m.sum()))]
            permuted.append(replace(e, label=label))
    model = frozen_model(config, task, backbone, context.torch_device, precision)
    if config.standardize:
        model.head.fit_standardization(features["train"])
    quiet = replace(context, progress=Progress(), resume_dir=None)  # the saved training state is the run's
    outcome = train_model(model, task, {**splits, "train": permuted}, features, config, quiet,
                          validate=validation(model, task, splits["valid"], features["valid"], config))
    restore(model, reported(outcome, config).state)
    return predict(model, splits["test"], features["test"], config.batch_size)


def validation(model: Model, task: Task, valid: list[Example], features: Sequence[torch.Tensor] | None,
               config: RunConfig) -> Callable[[], tuple[float, float]]:
    """``validate()`` for :func:`train`: the model's primary metric and loss on ``valid`` now."""
    def validate() -> tuple[float, float]:
        predictions = predict(model, valid, features, config.batch_size)
        return score(task, valid, predictions), split_loss(task, valid, predictions)

    return validate


def reported(outcome: Outcome, config: RunConfig) -> Checkpoint:
    """The checkpoint a run reports: where patience stopped it, or the best of every validation."""
    return outcome.early_stop if config.checkpoint == "early-stop" else outcome.best


def head_options(head_spec: HeadSpec, config: RunConfig, trains_backbone: bool) -> dict:
    """The run's head settings that the head's ``build`` takes. Standardizing needs fixed inputs
    (frozen embeddings) and a head that can; otherwise it is refused, never silently skipped."""
    accepted = inspect.signature(head_spec.build).parameters
    if config.standardize and ("standardize" not in accepted or trains_backbone):
        raise BenchError(f"--standardize true: head {head_spec.name} with method {config.method} cannot standardize "
                         "its inputs (the MLP heads on frozen embeddings can); pass --standardize false")
    given = {"dropout": config.head_dropout, "standardize": config.standardize}
    return {key: value for key, value in given.items() if value is not None and key in accepted}


def truncate(splits: dict[str, list[Example]], config: RunConfig,
             backbone: Backbone) -> tuple[dict[str, list[Example]], dict | None]:
    """Cut every sequence (and its per-residue labels) to ``max_tokens`` tokens, the backbone's
    special tokens included, as the study's tokenizer did (notebooks/finetune: ``max_length=1024,
    truncation=True``); the record counts what was cut."""
    if not config.max_tokens:
        return splits, None
    keep = config.max_tokens - backbone.special_tokens
    if keep < 1:
        raise BenchError(f"--max-tokens {config.max_tokens} leaves no residue next to backbone {backbone.name}'s "
                         f"{backbone.special_tokens} special tokens; raise it")
    cut = {name: [cut_example(e, keep) for e in examples] for name, examples in splits.items()}
    counts = {name: sum(len(e.sequence) > keep for e in examples) for name, examples in splits.items()}
    return cut, {"max_tokens": config.max_tokens, "residues_kept": keep, "records": counts}


def frozen_features(backbone: Backbone, splits: dict[str, list[Example]], config: RunConfig,
                    context: RunContext, weights: str | None = None, precision: Precision | None = None
                    ) -> dict[str, Sequence[torch.Tensor]]:
    """Each split's embeddings from the on-disk cache, computed with :func:`embed_all` on a miss;
    the entry depends on the weights, the settings below, the layers the backbone outputs and the
    sequences, not on the seed, head or learning rate, so those reuse it. With ``--embeddings``
    they come from that file. ``precision``: the policy the backbone computes in (default fp32)."""
    if config.embeddings:
        if config.pooling == "tokens":
            raise BenchError("--embeddings reads per-residue embeddings; --pooling tokens needs the backbone's "
                             "token-level states: drop one or the other")
        if backbone.output_layers:
            raise BenchError("--embeddings reads the file's embeddings as they are; the frozen method's layer "
                             "options choose what the backbone computes: drop one or the other")
        path = embedding_files.path_of(embedding_files.identified(config.embeddings))  # refused if it changed
        device = context.torch_device
        return {name: [t.to(device) for t in embedding_files.read(path, examples, backbone.hidden_size)]
                for name, examples in splits.items()}
    # "whole" embeds what "error" embeds, and more: entries of sequences within the limit are the same
    policy = config.long_policy or "error"  # unset (a config no protocol resolved): as load_backbone reads it
    settings = {"dtype": config.dtype, "long_policy": "error" if policy == "whole" else policy}
    precision = precision or Precision("fp32", context.torch_device.type, "fp32")
    if precision.mixed:  # fp32 entries keep the key of releases before mixed precision, which computed the same
        settings["precision"] = precision.name
    if backbone.output_layers:  # the final output keeps its key, so its entries of earlier releases stay valid
        settings["layers"] = list(backbone.output_layers)
    tokens = config.pooling == "tokens"
    if tokens:  # token rows, special tokens included: entries of their own; residue entries keep their key
        settings["pooling"] = "tokens"
    extra = backbone.special_tokens if tokens else 0
    cache = EmbeddingCache(backbone, backbone.hidden_size, settings, extra_rows=extra, weights=weights)
    embed = partial(embed_all, backbone, context=context, tokens=tokens, precision=precision)
    return {name: cache.features(examples, embed, context.torch_device) for name, examples in splits.items()}


def cut_example(example: Example, keep: int) -> Example:
    """The example's first ``keep`` residues, with the labels and mask of those residues."""
    if len(example.sequence) <= keep:
        return example
    per_residue = np.ndim(example.label) > 0
    return replace(example, sequence=example.sequence[:keep],
                   label=np.asarray(example.label)[:keep] if per_residue else example.label,
                   mask=None if example.mask is None else np.asarray(example.mask)[:keep])


def limit(splits: dict[str, list[Example]], config: RunConfig) -> dict[str, list[Example]]:
    """A random subset of ``limit_train``/``limit_eval`` examples of each split, drawn with
    ``limit_seed`` (recorded in the config, so the record reproduces it) and kept in file order.

    The first N rows of a file sorted by label or length would bias a quick run; a seeded draw
    does not. The draw ignores the run's seed, so every seed and method of a quick run sees the
    same subset: seed CIs measure training noise, deltas pair, frozen embeddings are shared.
    """
    caps = {"train": config.limit_train, "valid": config.limit_eval, "test": config.limit_eval}
    out = {}
    for name, examples in splits.items():
        cap = caps.get(name)
        if cap is None or cap >= len(examples):
            out[name] = examples
            continue
        picks = sorted(random.Random(f"{config.limit_seed}/{name}").sample(range(len(examples)), cap))
        out[name] = [examples[i] for i in picks]
    if config.train_fraction < 1:
        out["train"] = nested_subset(out["train"], config.train_fraction, config.limit_seed)
    return out


def nested_subset(examples: list[Example], fraction: float, seed: int) -> list[Example]:
    """The first ``ceil(fraction * n)`` of one seeded permutation, in file order: for one seed a
    larger fraction's subset contains every smaller one's (a learning curve adds data, it never
    swaps it)."""
    order = list(range(len(examples)))
    random.Random(f"{seed}/train-fraction").shuffle(order)
    return [examples[i] for i in sorted(order[: math.ceil(fraction * len(examples))])]


@torch.no_grad()
def embed_all(backbone: Backbone, examples: list[Example], context: RunContext,
              batch_size: int = 8, tokens: bool = False, precision: Precision | None = None) -> list[torch.Tensor]:
    """Per-residue embeddings of each example, computed once, kept on the run's device; with
    ``tokens``, one row per token the backbone saw, special tokens included and padding left out
    (what the study's embedding notebook averaged, one sequence at a time).

    Batches group sequences of similar length under a residue budget (at most ``batch_size``
    sequences each), so padding stays small and a batch of long proteins does not blow memory.
    The backbone computes under ``precision``'s autocast (none: as its weights are stored).
    """
    backbone.eval()
    backbone.check_lengths([e.sequence for e in examples], [e.id for e in examples])
    out: list[torch.Tensor | None] = [None] * len(examples)
    context.progress.embedding(len(examples))
    job = context.progress.add_task("embedding", total=len(examples))
    for idx in length_buckets([len(e.sequence) for e in examples], max_items=batch_size):
        with precision.autocast() if precision else contextlib.nullcontext():
            residues = backbone.embed([examples[i].sequence for i in idx], [examples[i].id for i in idx],
                                      tokens=tokens)
        if tokens and residues.tokens is None:
            raise BenchError(f"--pooling tokens: backbone {backbone.name} gives no token-level states for "
                             f"{examples[idx[0]].id} (only transformer backbones do, and not for sequences cut into "
                             "windows by --long-policy chunk); use --pooling residues")
        for row, i in enumerate(idx):
            out[i] = (residues.tokens[row, residues.token_mask[row]] if tokens
                      else residues.hidden[row, : len(examples[i].sequence)]).float()
        context.progress.advance(job, len(idx))
    context.progress.remove_task(job)
    return out  # type: ignore[return-value]


def environment(device: torch.device) -> dict:
    """Library versions, device and host name (labelled ``host`` in the record schema and README)."""
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "host": platform.node(),
        **threads.described(),
    }
