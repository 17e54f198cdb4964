"""The PEFT family (LoRA, DoRA, IA3, prefix tuning) through peft's own configs and wrapping.

Each ``prepare(backbone, options)`` replaces ``backbone.model`` (the wrapped Hugging Face
model) by peft's wrapper around it, which freezes the base weights and leaves only the adapter
(and, with LoRA's ``bias="all"``, the biases) trainable. The backbone's own forward keeps
working unchanged, so output alignment and special-token handling stay the family's business.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, get_peft_model
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)
from torch import nn

from plm_bench import Backbone, BenchError

# peft knows no ESM layout for IA3; ESM's layers are BERT's (query/key/value, intermediate/output
# dense), so ESM gets peft's BERT choice.
IA3_MODEL_TYPE_ALIASES = {"esm": "bert"}

LORA_BIASES = ("none", "all", "lora_only")

# The sequence the prefix-tuning probe embeds: every standard residue once.
PROBE_SEQUENCE = "ACDEFGHIKLMNPQRSTVWY"


def inner_model(backbone: Backbone, method: str) -> nn.Module:
    """The Hugging Face model a PEFT method wraps, or an error saying this backbone has none."""
    model = getattr(backbone, "model", None)
    if not isinstance(model, nn.Module) or not backbone.adapter_targets:
        raise BenchError(f"method {method} needs a transformer backbone with adapter targets; "
                         f"{backbone.name} has none: use --method frozen or full")
    return model


def check_targets(model: nn.Module, targets: list[str], method: str) -> None:
    """Every target must name modules of the model (peft's suffix rule), or we list the choices."""
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in names):
            linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                             if isinstance(m, nn.Linear)})
            raise BenchError(f"method {method}: target {target!r} matches no module of "
                             f"{type(model).__name__}; Linear layers are named {', '.join(linear)} "
                             "(fix --method-option targets=...)")


def wrap(backbone: Backbone, config: PeftConfig) -> Backbone:
    """Put peft's wrapper around the backbone's inner model; peft freezes everything else."""
    backbone.model = get_peft_model(backbone.model, config)
    return backbone


def prepare_lora(backbone: Backbone, options: dict[str, Any], dora: bool = False) -> Backbone:
    """LoRA (or DoRA: LoRA with weight decomposition). No targets given: the backbone's
    ``adapter_targets`` (attention q, k, v, o), plus its ``ffn_targets`` with ``ffn=true``.

    ``top_layers=k`` puts adapters only on the last k blocks (peft's ``layers_to_transform`` on
    the backbone's block list), and ``bias="all"`` then trains the biases of those blocks and of
    what runs after them, not of the frozen layers below (``lora_only`` and ``none`` mean what
    they mean in peft).
    """
    method = "dora" if dora else "lora"
    model = inner_model(backbone, method)
    if options["bias"] not in LORA_BIASES:
        raise BenchError(f"method {method} option bias={options['bias']!r}: use one of {', '.join(LORA_BIASES)}")
    targets = options["targets"] or list(backbone.adapter_targets)
    if options["ffn"]:  # the registry's facts about the backbone name its feed-forward layers
        ffn_targets = list(backbone.ffn_targets)
        if not ffn_targets:
            raise BenchError(f"method {method} option ffn=true: backbone {backbone.name} declares no "
                             "ffn_targets; name the layers with --method-option targets=...")
        targets += [t for t in ffn_targets if t not in targets]
    check_targets(model, targets, method)
    top = options["top_layers"]
    tuned = backbone.top_blocks(top, method) if top else None  # before peft moves the model
    layers = {"layers_to_transform": list(range(backbone.num_layers - top, backbone.num_layers)),
              "layers_pattern": backbone.blocks.rpartition(".")[2]} if tuned else {}
    wrap(backbone, LoraConfig(
        r=options["rank"], lora_alpha=options["alpha"], lora_dropout=options["dropout"],
        bias=options["bias"], target_modules=targets, use_dora=dora, **layers,
    ))
    if tuned:  # peft's bias="all" means every bias of the model; here, those of the tuned blocks
        keep = {id(p) for module in tuned for p in module.parameters()}
        for parameter in backbone.model.parameters():
            if id(parameter) not in keep:
                parameter.requires_grad_(False)
    return backbone


def prepare_dora(backbone: Backbone, options: dict[str, Any]) -> Backbone:
    return prepare_lora(backbone, options, dora=True)


def prepare_ia3(backbone: Backbone, options: dict[str, Any]) -> Backbone:
    """IA3: learned rescaling of keys, values and the feed-forward input. No targets given:
    peft's defaults for the model type. ``top_layers=k``: only in the last k blocks."""
    model = inner_model(backbone, "ia3")
    targets, feedforward = options["targets"], options["feedforward"]
    if not targets:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        model_type = IA3_MODEL_TYPE_ALIASES.get(model_type, model_type)
        if model_type not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
            raise BenchError(f"method ia3 has no default targets for {type(model).__name__}: "
                             "give them with --method-option targets=a,b feedforward=b")
        targets = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[model_type]
        feedforward = feedforward or TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[model_type]
    if not set(feedforward) <= set(targets):
        raise BenchError(f"method ia3: feedforward modules {feedforward} must be among targets {targets}; "
                         "fix --method-option feedforward=...")
    check_targets(model, targets, "ia3")
    return wrap(backbone, IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward),
                                    exclude_modules=below_top(backbone, options["top_layers"], "ia3")))


def below_top(backbone: Backbone, top: int, method: str) -> str | None:
    """``top_layers=k`` for a method whose peft config has no ``layers_to_transform`` (IA3): a
    regular expression (peft's ``exclude_modules``) matching every module inside the blocks below
    the last k; None (exclude nothing) for 0."""
    if not top:
        return None
    backbone.top_blocks(top, method)  # checks the count against the blocks
    lower = "|".join(str(i) for i in range(backbone.num_layers - top))
    return rf"{re.escape(backbone.blocks)}\.({lower})\..*" if lower else None


def prepare_prefix(backbone: Backbone, options: dict[str, Any]) -> Backbone:
    """Prefix tuning: learned key/value prefixes in every attention layer.

    peft passes the prefix as ``past_key_values``, which only some encoders honour (BERT does;
    ESM fails and T5's encoder silently ignores it). A one-sequence probe checks that the
    prefix reaches the output before any training is spent on it.
    """
    model = inner_model(backbone, "prefix")
    backbone.packs = False  # one prefix per row: a packed row's sequences would attend to one shared copy
    wrap(backbone, PrefixTuningConfig(task_type="FEATURE_EXTRACTION",
                                      num_virtual_tokens=options["virtual_tokens"]))
    prefix = list(backbone.model.prompt_encoder.parameters())
    training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            hidden = backbone.embed([PROBE_SEQUENCE]).hidden
            if hidden.requires_grad:
                hidden.float().sum().backward()
        reached = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in prefix)
        reason = "its encoder ignores peft's key/value prefix"
    except Exception as exc:  # the encoder rejects the prefix; say so in one line
        first_line = (str(exc).splitlines() or [""])[0]
        reached, reason = False, f"its encoder rejects peft's key/value prefix ({type(exc).__name__}: {first_line})"
    finally:
        backbone.zero_grad(set_to_none=True)
        backbone.train(training)
    if not reached:
        kind = getattr(model.config, "model_type", type(model).__name__)
        raise BenchError(f"prefix tuning is unsupported for backbone {backbone.name} ({kind}): "
                         f"{reason}; use --method lora, dora or ia3")
    return backbone
