"""The study's own training logs as a reference: what each published condition logged, per seed.

Schmirler, Heinzinger & Rost (Nat Commun 2024) published ``training_logs.zip`` in their repository
RSchmirler/data-repo_plm-finetune-eval: one CSV per run with a row per validation (epoch, the
test set's primary metric, training and validation loss). It is fetched and verified like task
data (``bench data fetch study-logs``, ``<data-dir>/study-logs/training_logs.zip``) and read in
memory, never extracted.

For a condition (backbone, task, method, init) :func:`condition_logs` gives each seed's logged
schedule and its test value under each selection rule, so a reproduction can be compared with
the value the study's own runs reached under the same rule:

- ``valid-loss``: the validation with the lowest validation loss (the first, on ties, as HF
  Trainer's ``load_best_model_at_end`` keeps it); the rule behind the published values;
- ``best-test``: the validation with the best test value (how the published ESM2-3B values and
  Ankh-base/large LoRA on subcellular location were picked);
- ``last``: the last validation.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from plm_bench.errors import BenchError
from plm_bench.results.intervals import mean_ci
from plm_bench.tasks.sources import Source, verified_path

FOLDER = "study-logs"  # <data-dir>/<FOLDER>/training_logs.zip, like a task's data folder
COMMIT = "1f1529814077b4613d5f1fa1bb76778337c81263"
SOURCE = Source(file="training_logs.zip",
                url=f"https://raw.githubusercontent.com/RSchmirler/data-repo_plm-finetune-eval/{COMMIT}/"
                    "training_logs.zip",
                sha256="d69421603d5b31021fcf44d2319e6cf1ad5d6ed744265c4fd646a59c16c2171c")
ROOT = "training_logs/training_logs/"
RULES = ("valid-loss", "best-test", "last")
# the logs' experiment folders -> (method, init) of the harness
EXPERIMENTS = {"embedding_results": ("frozen", "pretrained"), "finetuning_ESM2_full_model": ("full", "pretrained"),
               "finetuning_ESM2_random_init": ("full", "random"), "finetuning_LoRA": ("lora", "pretrained")}
BACKBONES = {"ESM2_8M": "esm2-8m", "ESM2_35M": "esm2-35m", "ESM2_150M": "esm2-150m", "ESM2_650M": "esm2-650m",
             "ESM2_3B": "esm2-3b", "PT": "prott5", "ankh-base": "ankh-base", "ankh-large": "ankh-large"}
TASKS = {"aav": "aav", "fluor": "gfp", "gb1": "gb1", "stab": "stability", "thermo": "meltome",
         "local": "subcellular_location", "disorder": "disorder", "secstr": "secondary_structure"}
# (test value, validation loss) columns; five ProtT5 LoRA subcellular-location logs name them otherwise
# (hard_acc: accuracy on setHARD, the study's test set)
COLUMNS = (("spearman", "val_Loss"), ("hard_acc", "val_loss"))


@dataclass(frozen=True)
class Pick:
    """One validation of a run: its fractional epoch and logged test value."""

    epoch: float
    test: float


@dataclass(frozen=True)
class RunLog:
    """One logged run: its file (``<experiment folder>/<name>.csv`` under ROOT), its schedule and
    its pick under each rule."""

    file: str
    seed: int
    epochs: int
    val_per_epoch: int
    picks: dict[str, Pick | None]  # rule -> pick; valid-loss is None where no validation loss was logged


@dataclass(frozen=True)
class Summary:
    """A condition's seeds under one rule: mean ± 1.96·SD/√n (the study's tables' rule)."""

    rule: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return mean_ci(list(self.values), "normal")[0]

    @property
    def half_width(self) -> float | None:
        return mean_ci(list(self.values), "normal")[1]


def logs_path(data_dir: Path) -> Path:
    """The verified local copy of training_logs.zip, else one error saying how to fetch it."""
    return verified_path(data_dir, FOLDER, FOLDER, SOURCE)


def parse_name(member: str) -> tuple[str, str, str, str, int] | None:
    """(backbone, task, method, init, seed) of a log file's path in the zip; None for folders."""
    parts = member[len(ROOT):].split("/") if member.startswith(ROOT) else []
    if len(parts) != 2 or not parts[1].endswith(".csv") or parts[0] not in EXPERIMENTS:
        return None
    tokens = parts[1][:-4].split("_")
    model = "_".join(tokens[:2]) if tokens[0] == "ESM2" else tokens[0]
    task = [TASKS[t] for t in tokens if t in TASKS]
    seed = [int(t) for t in tokens if re.fullmatch(r"9\d", t)]
    if model not in BACKBONES or len(task) != 1 or len(seed) != 1:
        raise BenchError(f"training_logs.zip: cannot read backbone, task and seed from {member}")
    return (BACKBONES[model], task[0], *EXPERIMENTS[parts[0]], seed[0])


def read_run(name: str, text: str, seed: int) -> RunLog:
    """A log's schedule and picks. Epochs are fractional (a validation every 1/k epoch)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    test, loss = next(((t, v) for t, v in COLUMNS if rows and t in rows[0]), (None, None))
    if test is None:
        raise BenchError(f"training_logs.zip: {name} has no test-value column ({', '.join(t for t, _ in COLUMNS)})")
    points = [(float(r["epoch"]), float(r[test]), float(r[loss]) if r.get(loss) else None) for r in rows]
    epochs = round(points[-1][0])
    losses = [p for p in points if p[2] is not None]
    picks = {"valid-loss": Pick(*min(losses, key=lambda p: p[2])[:2]) if len(losses) == len(points) else None,
             "best-test": Pick(*max(points, key=lambda p: p[1])[:2]),
             "last": Pick(*points[-1][:2])}
    return RunLog(name[len(ROOT):], seed, epochs, round(len(points) / epochs), picks)


@cache
def load(path: Path) -> dict[tuple[str, str, str, str], tuple[RunLog, ...]]:
    """Every logged run, by condition (backbone, task, method, init), seeds in order."""
    found: dict[tuple[str, str, str, str], list[RunLog]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                parsed = parse_name(member)
                if parsed:
                    *key, seed = parsed
                    found.setdefault(tuple(key), []).append(read_run(member, archive.read(member).decode(), seed))
    except zipfile.BadZipFile as exc:
        raise BenchError(f"{path}: not a readable zip ({exc}); delete it and run `bench data fetch {FOLDER}`") from None
    return {key: tuple(sorted(runs, key=lambda r: r.seed)) for key, runs in sorted(found.items())}


def condition_logs(data_dir: Path, backbone: str, task: str, method: str, init: str = "pretrained"
                   ) -> tuple[RunLog, ...]:
    """The logged runs of one condition; one error listing what the logs hold if none."""
    logs = load(logs_path(data_dir))
    runs = logs.get((backbone, task, method, init))
    if not runs:
        held = sorted({(b, m, i) for b, t, m, i in logs if t == task})
        listed = "; ".join(f"{b} {m} {i}" for b, m, i in held) or "none"
        raise BenchError(f"the study's logs hold no run of {backbone} {method} ({init} init) on {task}; "
                         f"they hold for {task}: {listed}")
    return runs


def summaries(runs: tuple[RunLog, ...]) -> dict[str, Summary | None]:
    """Per rule, the seeds' values (None where a run lacks the rule's column, e.g. no validation loss)."""
    out: dict[str, Summary | None] = {}
    for rule in RULES:
        picks = [r.picks[rule] for r in runs]
        out[rule] = Summary(rule, tuple(p.test for p in picks)) if all(picks) else None
    return out


def describe(runs: tuple[RunLog, ...], rule: str | None = None) -> str:
    """One line for a leaderboard cell: ``rule``'s mean ± 1.96·SD/√n, n and seeds; without a rule,
    the lowest validation loss where every run logged it, else the best test epoch (so marked)."""
    found = summaries(runs)
    rule = rule or ("valid-loss" if found["valid-loss"] else "best-test")
    summary = found[rule]
    if summary is None:
        return f"no {rule} (not logged)"
    spread = f" ± {summary.half_width:.3f}" if summary.half_width is not None else ""
    seeds = ",".join(str(r.seed) for r in runs)
    return f"{summary.mean:.3f}{spread} ({rule}, n={len(runs)}: seeds {seeds})"
