"""Adaptation methods: each trains with both head levels, counts what peft counts, leaves the base
weights alone, and refuses what it cannot do in one line."""

from __future__ import annotations

import pytest
import torch
from synthetic_tasks import CHARGE, RESIDUE_CLASSES, TASKS, config, context, keep_model, register_tasks, trains

from plm_bench import plugins
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.run import protocol
from plm_bench.run.protocol import execute


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


@pytest.mark.parametrize("level", ["protein", "residue"])
@pytest.mark.parametrize("method", ["frozen", "full", "lora", "dora", "ia3"])
def test_each_method_lowers_the_validation_loss_at_both_levels(method, level, tiny_esm, tmp_path, monkeypatch):
    run = config(TASKS[level], tiny_esm, method=method)
    built = keep_model(monkeypatch)
    record = trains(run, tmp_path)
    assert record["config"]["head"] == f"mlp-{level}"
    assert record["parameters"]["trainable"] == record["artifact"]["parameters"]
    head = sum(p.numel() for p in built["model"].head.parameters())
    if method in ("frozen", "full"):
        assert record["adapter"] is None
        backbone = sum(p.numel() for p in built["backbone"].parameters())
        assert record["parameters"] == {"trainable": head + (backbone if method == "full" else 0),
                                        "total": head + backbone}
    else:
        assert record["adapter"]["peft_type"] == method.upper().replace("DORA", "LORA")
        peft_trainable, peft_total = built["model"].backbone.model.get_nb_trainable_parameters()
        assert record["parameters"] == {"trainable": peft_trainable + head, "total": peft_total + head}
        assert 0 < peft_trainable < peft_total / 2


@pytest.mark.parametrize("level", ["protein", "residue"])
def test_prefix_tuning_lowers_the_validation_loss_on_bert(level, tiny_bert, tmp_path):
    record = trains(config(TASKS[level], tiny_bert, backbone="protbert", method="prefix"), tmp_path)
    assert record["adapter"]["peft_type"] == "PREFIX_TUNING"
    assert record["adapter"]["num_virtual_tokens"] == 20


@pytest.mark.parametrize(("backbone", "fixture", "why"), [
    ("esm2-8m", "tiny_esm", "rejects"),  # prefix tuning runs padded, where ESM2's mask misfits the prefix
    ("prott5", "tiny_prott5", "ignores"),  # T5's encoder drops them without a word
])
def test_prefix_tuning_says_which_backbones_it_cannot_serve(backbone, fixture, why, request, tmp_path):
    run = config(CHARGE, request.getfixturevalue(fixture), backbone=backbone, method="prefix")
    with pytest.raises(BenchError, match=rf"prefix tuning is unsupported for backbone {backbone} .*{why}") as error:
        execute(run, context(tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("bias", ["all", "none"])
def test_lora_leaves_the_base_weights_bit_identical(bias, tiny_esm, tmp_path, monkeypatch):
    """The study's LoRA (bias "all") trains adapters and biases; every other weight stays as loaded."""
    run = config(CHARGE, tiny_esm, method="lora", epochs=2, method_options={"bias": bias})
    _, untrained = protocol.build(run, CHARGE, torch.device("cpu"))
    loaded = dict(untrained.backbone.model.get_base_model().named_parameters())
    built = keep_model(monkeypatch)
    record = execute(run, context(tmp_path))
    after = dict(built["model"].backbone.model.get_base_model().named_parameters())
    trainable = {n for n, p in after.items() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_" in n}
    assert adapters and all(torch.count_nonzero(after[n]) for n in adapters if "lora_B" in n)  # it trained
    assert trainable - adapters == ({n for n in after if n.endswith(".bias")} if bias == "all" else set())
    frozen = set(after) - trainable
    assert any(".base_layer.weight" in n for n in frozen)
    assert all(torch.equal(after[n], loaded[n]) for n in frozen), "a frozen base weight changed"
    if bias == "all":  # the study's defaults, and the biases moved as intended
        adapter = record["adapter"]
        assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (4, 1.0, 0.0)
        assert adapter["target_modules"] == sorted(plugins.get("backbone", "esm2-8m").adapter_targets)
        assert any(not torch.equal(after[n], loaded[n]) for n in trainable - adapters)


def test_method_options_are_checked_and_coerced(tiny_esm):
    implicit = config(CHARGE, tiny_esm, method="lora")
    explicit = RunConfig(backbone="esm2-8m", task=CHARGE.name, backbone_path=str(tiny_esm), epochs=4, lr=3e-3,
                         method="lora", method_options={"rank": 4, "alpha": 1, "targets": []}).resolved()
    assert explicit.hash == implicit.hash
    assert implicit.method_options == {"alpha": 1.0, "bias": "all", "dropout": 0.0, "ffn": False, "rank": 4,
                                       "targets": [], "top_layers": 0}
    custom = config(CHARGE, tiny_esm, method="lora", method_options={"rank": 8, "targets": "query,value"})
    assert (custom.method_options["rank"], custom.method_options["targets"]) == (8, ["query", "value"])
    for options, message in [({"rnk": 8}, r"method lora has no option 'rnk' \(its options: alpha, bias, dropout"),
                             ({"rank": "four"}, r"option rank='four': expected int"),
                             ({"rank": 2.5}, r"option rank=2.5: expected int"),
                             ({"targets": [1]}, r"option targets=\[1\]: expected names"),
                             ({"rank": 0}, r"option rank=0: expected int >= 1"),  # refused before any run
                             ({"bias": "some"}, r"option bias='some': expected one of none, all, lora_only"),
                             ({"rnk": 8}, r"; did you mean 'rank'\?")]:
        with pytest.raises(BenchError, match=message):
            config(CHARGE, tiny_esm, method="lora", method_options=options)
    with pytest.raises(BenchError, match=r"method frozen has no option 'rank' \(its options: last_k, layer\)"):
        config(CHARGE, tiny_esm, method="frozen", method_options={"rank": 8})


def test_custom_targets_and_ffn(tiny_esm, tmp_path):
    only_value = execute(config(CHARGE, tiny_esm, method="lora", epochs=1, method_options={"targets": "value"}),
                         context(tmp_path))
    with_ffn = execute(config(CHARGE, tiny_esm, method="lora", epochs=1, method_options={"ffn": True}),
                       context(tmp_path))
    assert only_value["adapter"]["target_modules"] == ["value"]
    assert {"intermediate.dense", "output.dense"} <= set(with_ffn["adapter"]["target_modules"])
    assert only_value["parameters"]["trainable"] < with_ffn["parameters"]["trainable"]


@pytest.mark.parametrize(("backbone", "method", "options", "message"), [
    ("esm2-8m", "lora", {"targets": "qkv"}, r"target 'qkv' matches no module of EsmModel; Linear layers are named "
                                            r"dense, key, query, regression, value"),
    ("esm2-8m", "ia3", {"targets": "key", "feedforward": "value"}, r"feedforward modules \['value'\] must be among"),
    ("onehot", "lora", {}, r"backbone onehot has no weights, so method lora has no layers to put adapters on"),
])
def test_unusable_method_settings_fail_in_one_line(backbone, method, options, message, tiny_esm, tmp_path):
    with pytest.raises(BenchError, match=message):  # at resolve time where the specs tell (issue 24)
        execute(config(CHARGE, tiny_esm, backbone=backbone, method=method, method_options=options), context(tmp_path))


def test_residue_head_is_refused_for_a_protein_task(tiny_esm, tmp_path):
    with pytest.raises(BenchError, match="head mlp-residue cannot serve protein-level task toy-charge"):
        execute(config(CHARGE, tiny_esm, head="mlp-residue"), context(tmp_path))
    assert config(RESIDUE_CLASSES, tiny_esm).head == "mlp-residue"
