"""Mid-run training state on disk, so that a killed run (a SLURM time limit, a preemption, a
crash) resumes where its last validation left it instead of starting over.

After every validation :func:`~plm_bench.run.training.train` saves, atomically, all that the
rest of training depends on: the trainable weights, the optimizer and scheduler state, the
state of the generator that shuffles batches *as it was when the epoch began* (with the number
of that epoch's batches done, the rerun draws the same batch order and skips those), the
python/numpy/torch/CUDA random states, the training record so far (history, best and
early-stop checkpoints with their weights, patience count, timings, micro-batch and OOM
backoffs) and the last training loss. A rerun of the same config (the file is named by config
hash, in ``<store>.resume/``) loads it and continues, so that its record equals an uninterrupted
run's in everything but timings and its ``resumed_from``. The store deletes the file once it
holds the finished record (:meth:`~plm_bench.results.store.Store.add`).

A file that cannot be read or does not fit the run (truncated, another format, weights that do
not fit the rebuilt model) is reported by its path, deleted, and the run starts over: that
costs time, never a wrong result. Work since the last validation is redone either way;
``--val-per-epoch`` sets how much that can be.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from plm_bench.errors import BenchError
from plm_bench.files import atomic_file
from plm_bench.results.artifacts import copy_trainable, trainable_state
from plm_bench.results.store import resume_file

if TYPE_CHECKING:
    from plm_bench.config import RunConfig
    from plm_bench.run.progress import Progress
    from plm_bench.run.training import Checkpoint, Outcome

FORMAT = "plm-bench-resume/1"
OUTCOME_FIELDS = ("history", "stopped_at_epoch", "epochs_run", "micro_batch", "backoffs", "train_seconds",
                  "samples", "residues", "skipped_steps", "scaler")


@dataclass
class Position:
    """Where training stands after a validation, and what of the loop it carries on with."""

    epoch: int  # the epoch under way (1-based)
    batches_done: int  # batches of that epoch already trained on
    epoch_generator: torch.Tensor  # the batch-order generator's state when that epoch began
    loss: float  # the last training loss (the next history entry's, if no batch after it is scored)
    since_improvement: int
    early_best: Checkpoint | None  # the best validation patience counts from (fields only, no weights)


def save(folder: Path, config: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, outcome: Outcome, device: torch.device,
         position: Position) -> Path:
    """Write the training state of ``config``'s run, replacing the previous one only once the new
    file is complete (a kill while writing leaves the last validation's state)."""
    best_is_now = outcome.best is not None and outcome.best.step == len(outcome.history)  # the model's weights
    # the early-stop checkpoint is the best one when patience ran out (the same object until best moves on)
    early_is_best = outcome.early_stop is not None and outcome.early_stop is outcome.best
    record = {  # JSON: history and scores hold python floats again after loading, whatever type a metric gave
        "epoch": position.epoch, "batches_done": position.batches_done, "loss": position.loss,
        "since_improvement": position.since_improvement, "early_best": _checkpoint_fields(position.early_best),
        "outcome": {name: getattr(outcome, name) for name in OUTCOME_FIELDS},
        "best": _checkpoint_fields(outcome.best), "best_is_now": best_is_now,
        "early_stop": "best" if early_is_best else _checkpoint_fields(outcome.early_stop),
    }
    state = {
        "format": FORMAT,
        "config_hash": config.hash,
        "record": json.dumps(record),
        "weights": trainable_state(model),
        "best_weights": None if outcome.best is None or best_is_now else outcome.best.state,
        "early_stop_weights": None if outcome.early_stop is None or early_is_best else outcome.early_stop.state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch_generator": position.epoch_generator,
        "random": {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
    }
    path = resume_file(folder, config.hash)
    with atomic_file(path) as replacement, open(replacement.path, "wb") as out:
        torch.save(state, out)
        out.flush()
        os.fsync(out.fileno())
    return path


def load(folder: Path, config: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: torch.optim.lr_scheduler.LRScheduler, outcome: Outcome, device: torch.device,
         progress: Progress) -> Position | None:
    """Put the saved training state of ``config``'s run into ``model``, ``optimizer``,
    ``scheduler``, ``outcome`` and the random generators, and return where to go on; ``None``
    (nothing changed) if there is none, or if it is unusable (then reported and deleted)."""
    path = resume_file(folder, config.hash)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        problem = _mismatch(state, config, model, optimizer)
    except Exception as exc:  # whatever a damaged file raises (zip, unpickling, missing keys): it is discarded
        problem = f"not a readable training state ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
    if problem:
        path.unlink(missing_ok=True)
        progress.resume_discarded(str(path), problem)
        return None
    try:
        return _apply(state, model, optimizer, scheduler, outcome, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # checked above; the model may be half-restored
        raise BenchError(f"{path}: cannot resume from this training state ({type(exc).__name__}: {exc}); "
                         "delete the file to start the run over") from None


def _mismatch(state: object, config: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer
              ) -> str | None:
    """Why ``state`` cannot resume this run (checked before anything is changed), or None."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        return f"format {found!r}, not {FORMAT!r}"
    if state["config_hash"] != config.hash:
        return f"it belongs to config {state['config_hash']}, not {config.hash}"
    expected = trainable_state(model)
    weights = state["weights"]
    if set(weights) != set(expected) or any(weights[k].shape != t.shape for k, t in expected.items()):
        return "its weights do not fit the rebuilt model (the plugins changed since it was saved)"
    groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if groups != [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimizer state does not fit the rebuilt model"
    return None


def _apply(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler, outcome: Outcome, device: torch.device) -> Position:
    from plm_bench.run.training import snapshot

    saved = json.loads(state["record"])
    copy_trainable(model, state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for name in OUTCOME_FIELDS:  # a state saved before a field existed keeps the field's start value
        setattr(outcome, name, saved["outcome"].get(name, getattr(outcome, name)))
    if saved["best"] is not None:
        outcome.best = _checkpoint(saved["best"], snapshot(model) if saved["best_is_now"] else state["best_weights"])
    early = saved["early_stop"]
    outcome.early_stop = outcome.best if early == "best" else (
        None if early is None else _checkpoint(early, state["early_stop_weights"]))
    python, numpy, cpu, cuda = (state["random"][k] for k in ("python", "numpy", "torch", "cuda"))
    random.setstate(python)
    np.random.set_state((numpy["kind"], np.asarray(numpy["keys"], dtype=np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(cpu)
    if cuda is not None and device.type == "cuda":  # a run moved between CPU and GPU keeps going without it
        torch.cuda.set_rng_state(cuda, device)
    early_best = None if saved["early_best"] is None else _checkpoint(saved["early_best"], {})
    return Position(saved["epoch"], saved["batches_done"], state["epoch_generator"], saved["loss"],
                    saved["since_improvement"], early_best)


def _checkpoint_fields(checkpoint: Checkpoint | None) -> dict | None:
    """Where and how well, without the weights (``asdict`` would deep-copy those)."""
    if checkpoint is None:
        return None
    return {f.name: getattr(checkpoint, f.name) for f in fields(checkpoint) if f.name != "state"}


def _checkpoint(fields_: dict, weights: dict) -> Checkpoint:
    from plm_bench.run.training import Checkpoint

    return Checkpoint(**fields_, state=weights)


def _numpy_state() -> dict:
    """numpy's global random state as plain types (what ``torch.load(weights_only=True)`` reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
