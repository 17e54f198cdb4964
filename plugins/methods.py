"""Built-in adaptation methods: frozen embeddings, full fine-tuning and the PEFT family.

The PEFT ``prepare`` functions live in :mod:`plm_bench_plugins.peft_methods`, imported only
when a run prepares a backbone, so ``bench list`` does not pay for importing peft.
"""

from __future__ import annotations

from typing import Any

from plm_bench import hookimpl
from plm_bench.plugins.specs import MethodSpec

# The study's LoRA: rank 4, alpha 1, every bias trained; no targets = the backbone's attention
# q, k, v, o (its adapter_targets); ffn=true adds its feed-forward layers.
LORA_OPTIONS = {"rank": 4, "alpha": 1.0, "dropout": 0.0, "bias": "all", "targets": (), "ffn": False}


def train_everything(backbone, options: dict[str, Any]):
    return backbone.requires_grad_(True)


def peft_method(name: str):
    """``prepare`` of PEFT method ``name``, importing peft only when it runs."""

    def prepare(backbone, options: dict[str, Any]):
        from plm_bench_plugins import peft_methods

        return getattr(peft_methods, f"prepare_{name}")(backbone, options)

    return prepare


@hookimpl
def register_methods(register) -> None:
    register(MethodSpec("frozen", default_lr=1e-3, default=True,
                        description="Embeddings computed once and cached on disk; only the head trains."))
    register(MethodSpec("full", default_lr=2e-5, prepare=train_everything,
                        description="Every backbone weight trains with the head."))
    register(MethodSpec("lora", default_lr=3e-4, prepare=peft_method("lora"), options=LORA_OPTIONS,
                        description="LoRA (peft): rank 4, alpha 1, biases trained, on attention (+FFN) layers."))
    register(MethodSpec("dora", default_lr=3e-4, prepare=peft_method("dora"), options=LORA_OPTIONS,
                        description="DoRA (peft): LoRA with a learned magnitude per output weight."))
    register(MethodSpec("ia3", default_lr=3e-3, prepare=peft_method("ia3"),
                        options={"targets": (), "feedforward": ()},
                        description="IA3 (peft): learned rescaling of keys, values and FFN inputs."))
    register(MethodSpec("prefix", default_lr=1e-3, prepare=peft_method("prefix"), options={"virtual_tokens": 20},
                        description="Prefix tuning (peft): learned attention prefixes; encoders that honour them."))
