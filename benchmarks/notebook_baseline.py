"""The study's notebook approach, re-implemented faithfully: the baseline of every benchmark.

The study (Schmirler, Heinzinger & Rost 2024) ships notebooks (RSchmirler/data-repo_plm-finetune-eval,
``notebooks/``) that work like this, in fp32 on CPU here:

- ``Embedding_Generation``: every sequence is tokenized on its own (``padding=False``) and run at
  batch 1; the special tokens are cut off the last hidden state. Frozen-embedding heads are
  trained on those embeddings, recomputed for every seed.
- ``Finetuning_per_protein`` / ``_per_residue``: the whole split is tokenized at once with
  ``tokenizer(seqs, max_length=1024, padding=True, truncation=True)``, so every sequence is
  padded to the split's longest; the Trainer then takes fixed batches of those rows (8
  sequences per protein-level batch, 1 per residue-level batch).

Both paths here use the backbone's own token ids (the same ids as its tokenizer, which the
backbone tests check) and the harness's head and loss, so a benchmark's baseline differs from
the harness only in the data path it measures. Records the notebooks would truncate (longer than
1024 tokens) are refused instead: a truncated baseline would compute something else.

Run from the ``benchmarks/`` folder or with it on ``sys.path``; the scripts import this module.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from transformers.utils import logging as transformers_logging

from plm_bench import plugins
from plm_bench.errors import BenchError
from plm_bench.models.backbone import load_backbone
from plm_bench.models.transformer import TransformerBackbone
from plm_bench.run.training import Model, labels_for, loss_fn
from plm_bench.tasks.task import Example, Task

NOTEBOOK_MAX_TOKENS = 1024  # tokenizer(..., max_length=1024, truncation=True) in the fine-tuning notebooks
# ESM2's published vocabulary, in order (its vocab.txt); `--init random` builds the same ids.
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]

console = Console()
transformers_logging.disable_progress_bar()  # loading bars would interleave with the report

# Options every script shares.
BACKBONE = click.option("--backbone", default="esm2-8m", show_default=True, help="Registered backbone name.")
BACKBONE_PATH = click.option("--backbone-path", type=click.Path(exists=True, file_okay=False),
                             help="Load the backbone's weights from this directory.")
INIT = click.option("--init", type=click.Choice(["pretrained", "random"]), default="random", show_default=True,
                    help="random: the registry's architecture with random weights (no download needed).")
DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
DATA_DIR = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="Task data folder (default $PLM_BENCH_DATA).")


def length_diverse_set(data_dir: Path, per_task: int, max_residues: int, seed: int = 0) -> list[Example]:
    """``per_task`` records each from disorder (CheZOD training set, short proteins) and subcellular
    location (DeepLoc validation set, up to thousands of residues), sampled at random with ``seed``
    among records of at most ``max_residues``: the length spread of real tasks, no synthetic lengths."""
    pools = {"disorder": ("train",), "subcellular_location": ("valid",)}
    chosen: list[Example] = []
    for name, splits in pools.items():
        examples = plugins.get("task", name).load(data_dir, splits)[splits[0]]
        eligible = [e for e in examples if len(e.sequence) <= max_residues]
        if len(eligible) < per_task:
            raise BenchError(f"task {name} has {len(eligible)} records of at most {max_residues} residues, "
                             f"fewer than the {per_task} asked for: lower --per-task")
        chosen += random.Random(seed).sample(eligible, per_task)
    return chosen


def sample(task: str, data_dir: Path, split: str, count: int, max_residues: int,
           seed: int = 0) -> tuple[list[Example], int]:
    """``count`` records of one split of ``task`` (at most ``max_residues`` each), sampled with
    ``seed``, and the length of the split's longest record (which the notebooks pad every row to)."""
    everything = plugins.get("task", task).load(data_dir, (split,))[split]
    examples = [e for e in everything if len(e.sequence) <= max_residues]
    if len(examples) < count:
        raise BenchError(f"task {task} split {split} has {len(examples)} records of at most {max_residues} "
                         f"residues, fewer than the {count} asked for: lower the count")
    return random.Random(seed).sample(examples, count), max(len(e.sequence) for e in everything)


def load(backbone: str, *, backbone_path: str | None, init: str, device: str, dtype: str = "fp32",
         seed: int = 1) -> TransformerBackbone:
    """A registered backbone as runs load it, in fp32 by default (the notebooks' CPU precision)."""
    torch.manual_seed(seed)
    spec = plugins.get("backbone", backbone)
    loaded = load_backbone(spec, backbone_path or spec.hub_id, device, dtype=dtype, init=init)
    if not isinstance(loaded, TransformerBackbone):
        raise BenchError(f"backbone {backbone} is not a transformers encoder; the notebook baseline needs one")
    return loaded


def as_shipped(backbone: TransformerBackbone) -> TransformerBackbone:
    """The backbone with its transformers model as shipped: padded batches through transformers'
    SDPA attention (the harness switches ESM2 to its packed attention), as the notebooks ran it."""
    model = backbone.model
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft wrapper
    model.set_attn_implementation("sdpa")
    backbone.packs = False
    return backbone


def save_random_esm(backbone: str, folder: Path, seed: int = 1) -> Path:
    """Save the random-init architecture of ESM2 backbone ``backbone`` like a hub checkpoint
    (weights, config and ESM2's vocab.txt), so every seed of a run loads the *same* weights
    (with ``--init random`` each seed draws its own, and no cache could be shared across seeds).

    The config is ESM2's as released (plugins/esm.py), dropout 0.0 included: transformers'
    default of 0.1 would cost more than half of a CPU training forward in random masks and
    inflate peak memory, so timings would not be ESM2's."""
    from transformers import EsmTokenizer

    if plugins.get("backbone", backbone).family != "esm2":
        raise BenchError(f"backbone {backbone} is not ESM2: pass its weights with --backbone-path instead")
    model = load(backbone, backbone_path=None, init="random", device="cpu", seed=seed).model
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    EsmTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def weights(backbone: str, backbone_path: str | None, init: str, folder: Path) -> tuple[str | None, str, str]:
    """``(backbone_path, init, label)`` to measure with: given weights as they are; random ESM2
    weights saved once with the published config (see :func:`save_random_esm`); else ``init``."""
    if backbone_path is not None:
        return backbone_path, "pretrained", f"{backbone_path}'s"
    if init == "random" and plugins.get("backbone", backbone).family == "esm2":
        return str(save_random_esm(backbone, folder)), "pretrained", "saved random (published ESM2 config)"
    return None, init, init


@torch.no_grad()
def notebook_embed(backbone: TransformerBackbone, sequences: Sequence[str]) -> list[torch.Tensor]:
    """Embedding_Generation's per-residue loop: one sequence at a time, tokenized alone, batch 1,
    special tokens cut off; one ``[length, hidden]`` fp32 tensor per sequence."""
    backbone.eval()
    start = len(backbone.vocabulary.prefix)
    out = []
    for sequence in sequences:
        inputs = backbone.vocabulary.encode([sequence])
        hidden = backbone.model(**{k: v.to(backbone.device) for k, v in inputs.items()}).last_hidden_state
        out.append(hidden[0, start:start + len(sequence)].float())
    return out


class NotebookSplit:
    """A split tokenized the fine-tuning notebooks' way: all at once, padded to its longest.

    ``examples`` are the rows to train on (a sample of the split, to keep a benchmark short);
    ``split_longest`` is the longest sequence of the whole split, which sets the notebooks'
    padded width (capped at 1024 tokens by their truncation). :meth:`loss` is what their Trainer
    computes for a batch of those rows, every one as wide as that.
    """

    def __init__(self, backbone: TransformerBackbone, examples: Sequence[Example],
                 split_longest: int | None = None) -> None:
        self.examples = list(examples)
        encoded = backbone.vocabulary.encode([e.sequence for e in self.examples])
        vocabulary = backbone.vocabulary
        width = encoded["input_ids"].shape[1]
        if width > NOTEBOOK_MAX_TOKENS:
            longest = max(self.examples, key=lambda e: len(e.sequence))
            raise BenchError(f"record {longest.id} ({len(longest.sequence)} residues) takes {width} tokens; the "
                             f"notebooks truncate at {NOTEBOOK_MAX_TOKENS}, which would change what the baseline "
                             "computes: pick records that fit (lower --max-residues)")
        specials = len(vocabulary.prefix) + len(vocabulary.suffix)
        padded = max(width, min((split_longest or 0) + specials, NOTEBOOK_MAX_TOKENS))
        self.input_ids = nn.functional.pad(encoded["input_ids"], (0, padded - width), value=vocabulary.pad)
        self.attention_mask = nn.functional.pad(encoded["attention_mask"], (0, padded - width), value=0)
        self.lengths = torch.tensor([len(e.sequence) for e in self.examples])
        self.start = len(vocabulary.prefix)
        self.width = int(self.lengths.max())
        self.row_residues = padded - specials  # residue positions every row computes

    def loss(self, model: Model, task: Task, rows: Sequence[int]) -> torch.Tensor:
        """The loss of one batch of ``rows``, computed at the split's full padded width."""
        device = next(model.parameters()).device
        index = torch.as_tensor(list(rows))
        hidden = model.backbone.model(input_ids=self.input_ids[index].to(device),
                                      attention_mask=self.attention_mask[index].to(device)).last_hidden_state
        residues = hidden[:, self.start:self.start + self.width]
        mask = torch.arange(self.width).unsqueeze(0) < self.lengths[index].unsqueeze(1)
        output = model.head(residues, mask.to(device))
        labels, known = labels_for(task, [self.examples[i] for i in rows], mask)
        return loss_fn(task, output, labels.to(device), known.to(device))


def timed(work: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall seconds of ``work()`` (CUDA work waited for)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, target: float) -> str:
    """Whether a measured speed-up meets its target, and by how much it falls short if not."""
    if ratio >= target:
        return f"target >= {target:g}x met"
    return f"target >= {target:g}x missed by {(1 - ratio / target):.0%}"


def print_report(title: str, rows: Sequence[tuple[str, ...]], columns: Sequence[str], notes: Sequence[str]) -> None:
    """The script's result: a table of figures, then one line per note (ratio verdicts, checks)."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)  # one line each, for readers and greps alike


def describe(name: str, parameters: int, weights: str, dtype: str, device: torch.device | str) -> str:
    """One line saying what was measured where, for the report."""
    return (f"{name} ({weights} weights, {parameters / 1e6:.1f}M parameters, {dtype}) on {device}, "
            f"{torch.get_num_threads()} CPU threads")


def describe_backbone(backbone: TransformerBackbone, weights: str, device: torch.device | str) -> str:
    dtype = str(next(backbone.parameters()).dtype).removeprefix("torch.")
    return describe(backbone.name, sum(p.numel() for p in backbone.parameters()), weights, dtype, device)
