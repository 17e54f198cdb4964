"""Progress of runs, wherever they execute: one layer for `bench run`, `bench grid` and workers.

A run reports *events* (start, embedding, training, resuming from a saved training state or
discarding an unusable one, each validation, early stop, testing; the driver adds its end).
Each event is one JSON line in the run's own file in ``<store>.events/``, written by the process
that runs it (a worker on another node too, when the folder is on a
shared file system), so `bench status` and other tools can follow a grid from another shell.
The driver shows every event once: a run in its own process directly, a worker's by following
its file; in a terminal as lines above a rich bar, otherwise as plain timestamped lines (a log
under nohup, SLURM or CI), and with ``--log-json FILE`` also as JSON lines in FILE.

Torch-free: the CLI imports it before any run starts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from plm_bench.errors import BenchError
from plm_bench.results import records

if TYPE_CHECKING:
    from plm_bench.config import RunConfig

IDENTITY = ("backbone", "task", "method", "head", "seed")  # what names a run in a line, besides its hash
FOLLOW_SECONDS = 0.5  # how often the driver looks for workers' new events


def events_folder(store_path: Path) -> Path:
    """Where the runs of the store at ``store_path`` write their event files."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.events")


def origin() -> dict:
    """Which process wrote an event: the driver skips its own when following files, and `bench
    status` tells a running run from one whose process is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def identity(config_hash: str, config: dict) -> dict:
    """The fields that name a run in each of its events."""
    from plm_bench import plugins

    return {"config_hash": config_hash, **{k: config[k] for k in IDENTITY},
            "metric": plugins.get("task", config["task"]).metric}


def label(event: dict) -> str:
    return f"{event['backbone']} {event['task']} {event['method']} {event['head']} seed {event['seed']}"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``: to the precision a person planning around a run needs."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe(event: dict) -> str:
    """The human line of an event (without its timestamp)."""
    kind, metric = event["event"], event["metric"]
    if kind == "start":
        text = f"start: {event['epochs']} epoch{'s' * (event['epochs'] != 1)}, validating on {metric}"
    elif kind == "embedding":
        text = f"embedding {event['examples']} sequences (cached on disk for later runs)"
    elif kind == "training":
        text = f"training on {event['examples']} examples"
    elif kind == "testing":
        text = f"testing on {event['examples']} examples (each checkpoint, then the bootstrap CI)"
    elif kind == "validation":
        text = (f"epoch {event['epoch']:.2f}/{event['epochs']} valid {metric} {event['value']:.4f} "
                f"(best {event['best']:.4f}), valid loss {event['valid_loss']:.4g}, "
                f"train loss {event['train_loss']:.4g}, "
                f"ETA {duration(event['eta_seconds'])}")
    elif kind == "resuming":
        text = (f"resuming from epoch {event['epoch']:.2f}/{event['epochs']}, validation {event['step']} "
                "(the training state an interrupted attempt saved)")
    elif kind == "resume_discarded":
        text = f"discarded the saved training state {event['file']} ({event['problem']}); starting over"
    elif kind == "early_stop":
        text = (f"early stop at epoch {event['epoch']:.2f}: {event['patience']} validations without "
                f"improvement, best {metric} {event['best']:.4f}"
                + ("" if event["stops"] else "; training on for the best-of-N checkpoint"))
    elif event["status"] == "finished":
        text = (f"finished in {duration(event['seconds'])}: test {metric} {event['value']:.4f} "
                f"(run {event['run_id']})" + "".join(f"; warning: {w}" for w in event["warnings"]))
    else:
        text = f"failed: {event['error'].splitlines()[0] if event['error'] else 'no error recorded'}"
    if kind == "end" and "runs_total" in event:
        text += f" [{event['runs_done']}/{event['runs_total']} runs"
        text += f", ETA {duration(event['grid_eta_seconds'])}]" if event["runs_done"] < event["runs_total"] else "]"
    return f"{label(event)}: {text}"


def local_time(iso: str) -> str:
    """An ISO time (events and records keep UTC) as people read it: local, to the second."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


class Display(Protocol):
    """What a person watching the driver sees; bars are ``rich.progress`` tasks."""

    def __enter__(self) -> Display: ...
    def __exit__(self, *exc: object) -> None: ...
    def show(self, event: dict) -> None: ...
    def add_task(self, description: str, total: float | None = None, announce: bool = False) -> TaskID: ...
    def update(self, task: TaskID, **fields: object) -> None: ...
    def advance(self, task: TaskID, amount: float = 1) -> None: ...
    def remove_task(self, task: TaskID) -> None: ...


class Lines:
    """Off a terminal: one timestamped line per event (and per announced step), nothing else."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.announced: set[TaskID] = set()  # tasks whose description changes are printed
        self.tasks = 0

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def print(self, when: str, text: str) -> None:
        self.console.print(f"{when} {text}", markup=False, highlight=False, soft_wrap=True)

    def show(self, event: dict) -> None:
        self.print(local_time(event["time"]), describe(event))

    def add_task(self, description: str, total: float | None = None, announce: bool = False) -> TaskID:
        self.tasks += 1
        if announce:
            self.announced.add(TaskID(self.tasks))
            self.print(time.strftime("%Y-%m-%d %H:%M:%S"), description)
        return TaskID(self.tasks)

    def update(self, task: TaskID, **fields: object) -> None:
        if task in self.announced and "description" in fields:
            self.print(time.strftime("%Y-%m-%d %H:%M:%S"), str(fields["description"]))

    def advance(self, task: TaskID, amount: float = 1) -> None:
        pass

    def remove_task(self, task: TaskID) -> None:
        self.announced.discard(task)


class Bars:
    """In a terminal: a transient rich bar per run (epochs) and step, event lines printed above."""

    STYLE = {"finished": "green", "failed": "red", "early_stop": "yellow"}

    def __init__(self, console: Console) -> None:
        self.bars = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.runs: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def show(self, event: dict) -> None:
        line = Text(local_time(event["time"]) + " ", style="dim")
        line.append(describe(event), style=self.STYLE.get(event.get("status") or event["event"], ""))
        self.bars.console.print(line, soft_wrap=True)
        run = event["config_hash"]
        if event["event"] == "start":
            self.runs[run] = self.bars.add_task(label(event), total=event["epochs"])
        elif event["event"] in ("validation", "resuming") and run in self.runs:
            self.bars.update(self.runs[run], completed=event["epoch"])
        elif event["event"] == "end" and run in self.runs:
            self.bars.remove_task(self.runs.pop(run))

    def add_task(self, description: str, total: float | None = None, announce: bool = False) -> TaskID:
        return self.bars.add_task(description, total=total)

    def update(self, task: TaskID, **fields: object) -> None:
        self.bars.update(task, **fields)  # type: ignore[arg-type]

    def advance(self, task: TaskID, amount: float = 1) -> None:
        self.bars.advance(task, amount)

    def remove_task(self, task: TaskID) -> None:
        self.bars.remove_task(task)


def display(console: Console) -> Display:
    """Bars where ``console`` is a terminal, plain lines otherwise."""
    return Bars(console) if console.is_terminal else Lines(console)


class EventLog:
    """The event files of a store's runs: ``<folder>/<config hash>.jsonl``, appended by whichever
    process runs that config (one at a time), so no file has two writers."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, config_hash: str) -> Path:
        return self.folder / f"{config_hash}.jsonl"

    def write(self, event: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path(event["config_hash"]), "a") as file:
            file.write(json.dumps(event) + "\n")

    def latest(self) -> dict[str, list[dict]]:
        """Each run's events since its last start (earlier attempts are history), by config hash."""
        attempts = {}
        for path in sorted(self.folder.glob("*.jsonl")):
            events = parse(path.read_text(), path)
            starts = [i for i, e in enumerate(events) if e["event"] == "start"]
            attempts[path.stem] = events[starts[-1]:] if starts else events
        return attempts


def parse(text: str, path: Path) -> list[dict]:
    """The complete lines of the event file ``path`` (a line still being written is left for later)."""
    events = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.endswith("\n") or not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}: line {number} is not a JSON event ({exc}); delete that file "
                             "(it only shows progress; the store keeps the results)") from None
    return events


class Follower:
    """The driver's view of workers' events: reads new lines of the runs' files in a thread."""

    def __init__(self, log: EventLog, hashes: Sequence[str], show: Callable[[dict], None]) -> None:
        self.log, self.show = log, show
        self.offsets = {h: self.size(h) for h in hashes}  # earlier attempts were shown back then
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="plm-bench-events", daemon=True)

    def size(self, config_hash: str) -> int:
        path = self.log.path(config_hash)
        return path.stat().st_size if path.exists() else 0

    def poll(self, hashes: Sequence[str] | None = None) -> None:
        """Show the new events of ``hashes`` (default: every run) that other processes wrote."""
        me = origin()
        with self.lock:
            for h in hashes if hashes is not None else list(self.offsets):
                if self.size(h) <= self.offsets[h]:
                    continue
                with open(self.log.path(h), "rb") as file:
                    file.seek(self.offsets[h])
                    text = file.read().decode()
                complete = text[: text.rfind("\n") + 1]
                self.offsets[h] += len(complete.encode())
                for event in parse(complete, self.log.path(h)):
                    if (event["host"], event["pid"]) != (me["host"], me["pid"]):
                        self.show(event)

    def loop(self) -> None:
        while not self.stopped.wait(FOLLOW_SECONDS):
            self.poll()

    def __enter__(self) -> Follower:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.poll()


class Progress:
    """Where runs report, carried by ``RunContext.progress``.

    In the driver it has a display (and maybe a JSON-lines file); shipped to a worker it keeps
    only its event log (``__getstate__``), so the worker's events reach the driver through the
    files. Without a log or display it is silent (tests, `bench predict`).
    """

    def __init__(self, log: EventLog | None = None, view: Display | None = None,
                 json_path: Path | None = None, show_failed: bool = True) -> None:
        self.log, self.view, self.json_path, self.show_failed = log, view, json_path, show_failed
        self.held: dict[str, dict] = {}  # start events not shown yet (show_failed=False), by config hash
        self.json_file = None
        self.run: dict | None = None  # the identity of the run this process executes now
        self.epochs = 0
        self.training_started = 0.0
        self.resumed_epoch = 0.0  # where training of this attempt began: the ETA counts from there
        self.follower: Follower | None = None
        self.lock = threading.Lock()
        self.runs_total = self.runs_done = 0
        self.runs_bar = TaskID(0)
        self.grid_started = 0.0

    def __getstate__(self) -> dict:
        return {"log": self.log}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["log"])

    def __enter__(self) -> Progress:
        if self.json_path:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_file = open(self.json_path, "a")  # noqa: SIM115 — open while the command runs
        if self.view:
            self.view.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.view:
            self.view.__exit__(*exc)
        if self.json_file:
            self.json_file.close()

    def emit(self, run: dict, event: str, **fields: object) -> None:
        """Write one event of ``run`` (its :func:`identity`) to its file, and show it if this is the driver."""
        line = {"time": records.now(), "event": event, **run, "epoch": None, **fields, **origin()}
        if self.log:
            self.log.write(line)
        self.show(line)

    def show(self, event: dict) -> None:
        with self.lock:  # the follower's thread shows workers' events meanwhile
            if self.json_file:
                self.json_file.write(json.dumps(event) + "\n")
                self.json_file.flush()
            if not self.view:
                return
            if self.show_failed:
                self.view.show(event)
                return
            # A run's start waits for its next event: one that fails at once (missing data or
            # weights) shows nothing here, and the command reports its error as one line.
            if event["event"] == "start":
                self.held[event["config_hash"]] = event
                return
            start = self.held.pop(event["config_hash"], None)
            if event.get("status") == "failed":
                return
            if start:
                self.view.show(start)
            self.view.show(event)

    # -- the run's side (in whichever process runs it) --

    def start(self, config: RunConfig) -> None:
        self.run = identity(config.hash, asdict(config))
        self.epochs = config.epochs
        self.emit(self.run, "start", epochs=config.epochs)

    def embedding(self, examples: int) -> None:
        if self.run:
            self.emit(self.run, "embedding", examples=examples)

    def training(self, examples: int) -> None:
        """Training begins: the clock of the ETA starts here, after loading and embedding."""
        self.training_started = time.monotonic()
        self.resumed_epoch = 0.0
        if self.run:
            self.emit(self.run, "training", examples=examples, epoch=0)

    def resuming(self, epoch: float, step: int) -> None:
        """Training goes on from the state saved at validation ``step`` (epoch ``epoch``)."""
        self.resumed_epoch = epoch
        if self.run:
            self.emit(self.run, "resuming", epoch=epoch, epochs=self.epochs, step=step)

    def resume_discarded(self, file: str, problem: str) -> None:
        """A saved training state could not be used (``problem``): it was deleted, training starts over."""
        if self.run:
            self.emit(self.run, "resume_discarded", file=file, problem=problem)

    def validation(self, epoch: float, step: int, value: float, best: float, train_loss: float,
                   valid_loss: float) -> None:
        elapsed, trained = time.monotonic() - self.training_started, epoch - self.resumed_epoch
        eta = elapsed / trained * (self.epochs - epoch) if trained > 0 else 0.0
        if self.run:
            self.emit(self.run, "validation", epoch=epoch, epochs=self.epochs, step=step, value=value,
                      best=best, valid_loss=valid_loss, train_loss=train_loss, eta_seconds=eta)

    def early_stop(self, epoch: float, best: float, patience: int, stops: bool) -> None:
        if self.run:
            self.emit(self.run, "early_stop", epoch=epoch, best=best, patience=patience, stops=stops)

    def testing(self, examples: int) -> None:
        if self.run:
            self.emit(self.run, "testing", examples=examples)

    # -- the driver's side --

    @contextmanager
    def following(self, configs: Sequence[RunConfig]) -> Iterator[None]:
        """While ``configs`` run, show what their workers write to the event files."""
        self.runs_total, self.runs_done, self.grid_started = len(configs), 0, time.monotonic()
        self.runs_bar = self.add_task("runs", total=len(configs))
        try:
            if self.log and (self.view or self.json_file):  # someone to show workers' events to
                with Follower(self.log, [c.hash for c in configs], self.show) as self.follower:
                    yield
            else:
                yield
        finally:
            self.follower = None
            self.remove_task(self.runs_bar)

    def end(self, record: dict) -> None:
        """A stored record: the run's last event, after any of its own not yet shown."""
        if self.follower:
            self.follower.poll([record["config_hash"]])
        self.runs_done += 1
        self.advance(self.runs_bar)
        elapsed = time.monotonic() - self.grid_started
        finished = record["status"] == "finished"
        self.emit(identity(record["config_hash"], record["config"]), "end", status=record["status"],
                  run_id=record["run_id"],
                  epoch=record["early_stopping"]["epochs_run"] if finished else None,
                  value=records.test_score(record) if finished else None,
                  seconds=record["cost"]["total_seconds"] if finished else None,
                  error=record.get("error"), warnings=record.get("warnings", []),
                  runs_done=self.runs_done, runs_total=self.runs_total,
                  grid_eta_seconds=elapsed / self.runs_done * (self.runs_total - self.runs_done))
        if self.run and self.run["config_hash"] == record["config_hash"]:
            self.run = None

    # -- bars of the driver's own work (no-ops in workers) --

    def add_task(self, description: str, total: float | None = None) -> TaskID:
        return self.view.add_task(description, total) if self.view else TaskID(0)

    def advance(self, task: TaskID, amount: float = 1) -> None:
        if self.view:
            self.view.advance(task, amount)

    def remove_task(self, task: TaskID) -> None:
        if self.view:
            self.view.remove_task(task)


def for_command(store_path: Path, console: Console, json_path: Path | None = None,
                show_failed: bool = True) -> Progress:
    """The progress of `bench run` / `bench grid` on the store at ``store_path``; ``show_failed=False``
    leaves failed runs to the command, which reports them itself (a user's error as one line)."""
    return Progress(EventLog(events_folder(store_path).resolve()), display(console), json_path, show_failed)

