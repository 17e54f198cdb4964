"""Built-in adaptation methods: frozen embeddings, full fine-tuning and the PEFT family.

The PEFT ``prepare`` functions live in :mod:`plm_bench_plugins.peft_methods`, imported only
when a run prepares a backbone, so ``bench list`` does not pay for importing peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plm_bench import MethodSpec, Option, hookimpl

if TYPE_CHECKING:
    from plm_bench import Backbone

# Rank 4, alpha 1, dropout 0, every bias trained: the study's LoraConfig (notebooks/finetune/
# Finetuning_per_protein.ipynb). No targets = the
# backbone's attention q, k, v, o (its adapter_targets; the harness protocol), ffn=true adds its
# feed-forward layers; the study protocol names its targets (ESM2: query, key, value, dense).
# top_layers=k: adapters (and trained biases) only in the last k blocks; 0: every block.
TOP_LAYERS = Option(0, "Adapt only the last k blocks (0: every block).", min=0)
TARGETS = Option((), "Module-name suffixes to adapt (default: the backbone's attention q, k, v, o).")
LORA_OPTIONS = {
    "rank": Option(4, "Rank of the update matrices.", min=1),
    "alpha": Option(1.0, "Scaling numerator: updates are scaled by alpha / rank.", min=0.0),
    "dropout": Option(0.0, "Dropout on the adapter's input.", min=0.0, max=1.0),
    "bias": Option("all", "Biases that train: none, all, or those of adapted layers.",
                   choices=("none", "all", "lora_only")),
    "targets": TARGETS,
    "ffn": Option(False, "Also adapt the backbone's feed-forward layers (its registry ffn_targets)."),
    "top_layers": TOP_LAYERS,
}
# The mean of hidden states layer-last_k+1 .. layer (0: the embedding output; negative counts from
# the end); the default is the final output.
FROZEN_OPTIONS = {
    "layer": Option(-1, "Hidden state to embed from: 0 the embedding output, negative counts from the end."),
    "last_k": Option(1, "Average this many hidden states ending at layer.", min=1),
}


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
                        description="Embeddings (of any layer) computed once, cached on disk; only the head trains."))
    register(MethodSpec("full", default_lr=2e-5, prepare=fine_tune, options={"top_layers": TOP_LAYERS},
                        description="Every backbone weight (or the top_layers blocks') trains with the head."))
    register(MethodSpec("lora", default_lr=3e-4, adapts=True, prepare=peft_method("lora"), options=LORA_OPTIONS,
                        description="LoRA (peft): rank 4, alpha 1, biases trained, on attention (+FFN) layers."))
    register(MethodSpec("dora", default_lr=3e-4, adapts=True, prepare=peft_method("dora"), options=LORA_OPTIONS,
                        description="DoRA (peft): LoRA with a learned magnitude per output weight."))
    register(MethodSpec("ia3", default_lr=3e-3, adapts=True, prepare=peft_method("ia3"),
                        options={"targets": TARGETS, "top_layers": TOP_LAYERS,
                                 "feedforward": Option((), "Which targets rescale FFN inputs (default: peft's).")},
                        description="IA3 (peft): learned rescaling of keys, values and FFN inputs."))
    register(MethodSpec("prefix", default_lr=1e-3, adapts=True, prepare=peft_method("prefix"),
                        options={"virtual_tokens": Option(20, "Prefix length, in tokens.", min=1)},
                        description="Prefix tuning (peft): learned attention prefixes; encoders that honour them."))
