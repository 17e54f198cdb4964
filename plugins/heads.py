"""Built-in prediction heads."""

from __future__ import annotations

from plm_bench import hookimpl
from plm_bench.specs import HeadSpec


def build_mlp(hidden_size: int, out_dim: int, level: str):
    from plm_bench_plugins.mlp import MLP

    return MLP(hidden_size, out_dim, level)


@hookimpl
def register_heads(register) -> None:
    register(HeadSpec("mlp-protein", ("protein",), build_mlp,
                      "Masked mean pooling, then a 32-unit MLP (the study's head)."))
    register(HeadSpec("mlp-residue", ("residue",), build_mlp,
                      "The same 32-unit MLP applied to every residue."))
