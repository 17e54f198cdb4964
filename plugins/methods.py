"""Built-in adaptation methods: frozen embeddings and full fine-tuning."""

from __future__ import annotations

from plm_bench import hookimpl
from plm_bench.specs import MethodSpec


def train_everything(backbone):
    return backbone.requires_grad_(True)


@hookimpl
def register_methods(register) -> None:
    register(MethodSpec("frozen", default_lr=1e-3,
                        description="Embeddings computed once; only the head trains."))
    register(MethodSpec("full", default_lr=2e-5, prepare=train_everything,
                        description="Every backbone weight trains with the head."))
