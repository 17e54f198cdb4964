"""Built-in adaptation methods: frozen embeddings, full fine-tuning and the PEFT family.

The PEFT ``prepare`` functions live in :mod:`plm_bench_plugins.peft_methods`, imported only
when a run prepares a backbone, so ``bench list`` does not pay for importing peft.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plm_bench import hookimpl
from plm_bench.errors import BenchError
from plm_bench.plugins.specs import MethodSpec

if TYPE_CHECKING:
    from plm_bench.models.backbone import Backbone

# Rank 4, alpha 1, dropout 0, every bias trained: the study's LoraConfig (notebooks/finetune/
# Finetuning_per_protein.ipynb). No targets = the
# backbone's attention q, k, v, o (its adapter_targets; the harness protocol), ffn=true adds its
# feed-forward layers; the study protocol names its targets (ESM2: query, key, value, dense).
# top_layers=k: adapters (and trained biases) only in the last k blocks; 0: every block.
LORA_OPTIONS = {"rank": 4, "alpha": 1.0, "dropout": 0.0, "bias": "all", "targets": (), "ffn": False,
                "top_layers": 0}
# The mean of hidden states layer-last_k+1 .. layer (0: the embedding output; negative counts from
# the end); the default is the final output.
FROZEN_OPTIONS = {"layer": -1, "last_k": 1}


def at_least(method: str, options: dict[str, Any], **lowest: int) -> None:
    """Refuse an option below its lowest sensible value, before the run (a rank of 0 is no adapter)."""
    for key, low in lowest.items():
        if options[key] < low:
            raise BenchError(f"method {method} option {key}={options[key]}: must be at least {low}; "
                             "fix --method-option")


def lora_check(method: str) -> Callable[[dict[str, Any]], None]:
    """The option check of LoRA and DoRA."""
    def check(options: dict[str, Any]) -> None:
        at_least(method, options, rank=1)
        if not 0 <= options["dropout"] < 1:
            raise BenchError(f"method {method} option dropout={options['dropout']}: must be in [0, 1); "
                             "fix --method-option")
    return check


def embed_from_layers(backbone: Backbone, options: dict[str, Any]) -> None:
    """Point the frozen backbone's output at the layers the options name."""
    backbone.select_layers(options["layer"], options["last_k"])


def fine_tune(backbone: Backbone, options: dict[str, Any]) -> Backbone:
    """Every weight trains, or with ``top_layers=k`` only the last k blocks and what their stack
    runs after them (a final layer norm); the embeddings and lower blocks stay frozen."""
    if not options["top_layers"]:
        return backbone.requires_grad_(True)
    tuned = backbone.top_blocks(options["top_layers"], "full")
    backbone.requires_grad_(False)
    for module in tuned:
        module.requires_grad_(True)
    return backbone


def peft_method(name: str):
    """``prepare`` of PEFT method ``name``, importing peft only when it runs."""

    def prepare(backbone, options: dict[str, Any]):
        from plm_bench_plugins import peft_methods

        return getattr(peft_methods, f"prepare_{name}")(backbone, options)

    return prepare


@hookimpl
def register_methods(register) -> None:
    register(MethodSpec("frozen", default_lr=1e-3, default=True, configure=embed_from_layers, options=FROZEN_OPTIONS,
                        check=lambda options: at_least("frozen", options, last_k=1),
                        description="Embeddings (of any layer) computed once, cached on disk; only the head trains."))
    register(MethodSpec("full", default_lr=2e-5, prepare=fine_tune, options={"top_layers": 0},
                        description="Every backbone weight (or the top_layers blocks') trains with the head."))
    register(MethodSpec("lora", default_lr=3e-4, adapts=True, prepare=peft_method("lora"), options=LORA_OPTIONS,
                        check=lora_check("lora"),
                        description="LoRA (peft): rank 4, alpha 1, biases trained, on attention (+FFN) layers."))
    register(MethodSpec("dora", default_lr=3e-4, adapts=True, prepare=peft_method("dora"), options=LORA_OPTIONS,
                        check=lora_check("dora"),
                        description="DoRA (peft): LoRA with a learned magnitude per output weight."))
    register(MethodSpec("ia3", default_lr=3e-3, adapts=True, prepare=peft_method("ia3"),
                        options={"targets": (), "feedforward": (), "top_layers": 0},
                        description="IA3 (peft): learned rescaling of keys, values and FFN inputs."))
    register(MethodSpec("prefix", default_lr=1e-3, adapts=True, prepare=peft_method("prefix"),
                        options={"virtual_tokens": 20},
                        check=lambda options: at_least("prefix", options, virtual_tokens=1),
                        description="Prefix tuning (peft): learned attention prefixes; encoders that honour them."))
