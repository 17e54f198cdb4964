"""Built-in prediction heads; the MLPs are the ``--head auto`` choice for their level.

Builders take the run's ``head_dropout`` as ``dropout``; the MLPs also ``standardize`` their
inputs (frozen embeddings) when the run asks for it.
"""

from __future__ import annotations

from plm_bench import HeadSpec, hookimpl


def build_mlp(hidden_size: int, out_dim: int, level: str, dropout: float = 0.25, standardize: bool = False):
    from plm_bench_plugins.mlp import MLP

    return MLP(hidden_size, out_dim, level, dropout=dropout, standardize=standardize)


def build_light_attention(hidden_size: int, out_dim: int, level: str, dropout: float = 0.25):
    from plm_bench_plugins.light_attention import LightAttention

    return LightAttention(hidden_size, out_dim, dropout=dropout)


def build_cnn(hidden_size: int, out_dim: int, level: str, dropout: float = 0.25):
    from plm_bench_plugins.cnn import ResidueCNN

    return ResidueCNN(hidden_size, out_dim, dropout=dropout)


ESM2_INITIALIZER_RANGE = 0.02  # initializer_range of the published ESM2 configs (facebook/esm2_t*/config.json)


def build_esm_cls(hidden_size: int, out_dim: int, level: str, dropout: float = 0.0):
    from plm_bench_plugins.study_heads import EsmClsHead

    return EsmClsHead(hidden_size, out_dim, dropout)


def build_t5_mean(hidden_size: int, out_dim: int, level: str, dropout: float = 0.2):
    from plm_bench_plugins.study_heads import T5MeanHead

    return T5MeanHead(hidden_size, out_dim, dropout)


def build_linear(hidden_size: int, out_dim: int, level: str, dropout: float = 0.0):
    from plm_bench_plugins.study_heads import LinearResidue

    return LinearResidue(hidden_size, out_dim, dropout)


def build_esm_linear(hidden_size: int, out_dim: int, level: str, dropout: float = 0.0):
    from plm_bench_plugins.study_heads import LinearResidue

    return LinearResidue(hidden_size, out_dim, dropout, init_std=ESM2_INITIALIZER_RANGE)


def build_probe(pooling: str):
    def build(hidden_size: int, out_dim: int, level: str):
        from plm_bench_plugins.probes import LinearProbe

        return LinearProbe(hidden_size, out_dim, pooling)

    return build


@hookimpl
def register_heads(register) -> None:
    register(HeadSpec("mlp-protein", ("protein",), build_mlp,
                      "Masked mean pooling, then a 32-unit MLP.", default_for=("protein",)))
    register(HeadSpec("mlp-residue", ("residue",), build_mlp,
                      "The same 32-unit MLP applied to every residue.", default_for=("residue",)))
    register(HeadSpec("light-attention", ("protein",), build_light_attention,
                      "Light attention (Stärk et al. 2021): attention- and max-pooled convolutions, 32-unit MLP."))
    register(HeadSpec("cnn-residue", ("residue",), build_cnn,
                      "Two 1D convolutions (kernel 7, 32 channels) over the residues."))
    register(HeadSpec("esm-cls", ("protein",), build_esm_cls, tokens=True, revision=2,  # 2: the notebooks' init
                      description="The study's ESM2 head (notebooks/finetune/Finetuning_per_protein.ipynb): "
                                  "transformers' EsmClassificationHead on the <cls> token."))
    register(HeadSpec("t5-mean", ("protein",), build_t5_mean, tokens=True,
                      description="The study's T5 head (Finetuning_per_protein.ipynb): mean over every position "
                                  "(padding and </s> included), dense + tanh."))
    register(HeadSpec("linear-residue", ("residue",), build_linear,
                      "The study's per-residue head (notebooks/finetune/Finetuning_per_residue_*.ipynb): "
                      "dropout and one linear layer."))
    register(HeadSpec("esm-linear-residue", ("residue",), build_esm_linear,
                      "The study's ESM2 per-residue head (Finetuning_per_residue_*.ipynb: EsmForTokenRegression, "
                      "EsmForTokenClassificationCustom): dropout and one linear layer started as transformers' "
                      "_init_weights does (normal, std 0.02, zero bias)."))
    probe = "ridge (regression) or logistic regression (classification), regularization chosen on valid"
    register(HeadSpec("probe-mean", ("protein",), build_probe("mean"),
                      f"Linear probe on mean-pooled residues: {probe}."))
    register(HeadSpec("probe-flat", ("protein",), build_probe("flat"),
                      f"Linear probe on every residue's features in order (equal-length tasks; with onehot: "
                      f"position-aware one-hot, FLIP's baseline): {probe}."))
    register(HeadSpec("probe-residue", ("residue",), build_probe("residue"), f"Linear probe per residue: {probe}."))
