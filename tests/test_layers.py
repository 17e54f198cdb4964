"""Layer choices: frozen embeddings from any layer (or the mean of several), fine-tuning only the
top blocks, both as grid sweeps and leaderboard columns.

References are transformers' own ``hidden_states`` and parameter counts worked out by hand from
each tiny checkpoint's config, never numbers read off our code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from synthetic_tasks import CHARGE, config, context, keep_model, register_tasks, trains
from transformers import AutoModel, T5EncoderModel

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.errors import BenchError
from plm_bench.models.backbone import load_backbone
from plm_bench.models.embeddings import default_folder
from plm_bench.run.grid import load_grid
from plm_bench.run.protocol import execute, frozen_features
from plm_bench.tasks.task import Example

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "GSUZBOXW", "MA", "ACDEFGHIKLMNPQRSTVWY" * 2, "W"]
FAMILIES = {"esm2-8m": ("tiny_esm", AutoModel), "protbert": ("tiny_bert", AutoModel),
            "prott5": ("tiny_prott5", T5EncoderModel)}


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def loaded(name: str, request) -> tuple[object, Path]:
    folder = request.getfixturevalue(FAMILIES[name][0])
    return load_backbone(plugins.get("backbone", name), str(folder), "cpu").eval(), folder


def reference_states(name: str, folder: Path, backbone, sequences: list[str]) -> list[list[torch.Tensor]]:
    """transformers' ``hidden_states`` (one padded batch, as shipped), per sequence, each cut to
    its residues (the family's prefix and suffix tokens dropped)."""
    kwargs = {} if name == "prott5" else {"add_pooling_layer": False}
    model = FAMILIES[name][1].from_pretrained(folder, **kwargs).eval()
    with torch.no_grad():
        states = model(**backbone.vocabulary.encode(sequences), output_hidden_states=True).hidden_states
    assert len(states) == model.config.num_hidden_layers + 1 == 3
    start = len(backbone.vocabulary.prefix)
    return [[s[row, start:start + len(seq)] for s in states] for row, seq in enumerate(sequences)]


def outputs(backbone, packed: bool) -> list[torch.Tensor]:
    backbone.packs = packed
    with torch.no_grad():
        residues = backbone.embed(SEQUENCES)
    return [residues.hidden[row, : len(s)] for row, s in enumerate(SEQUENCES)]


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return float((got - expected).abs().max() / expected.abs().max()) <= 1e-4


PATHS = [("esm2-8m", False), ("esm2-8m", True), ("protbert", True), ("prott5", False)]  # T5 runs padded only


@pytest.mark.parametrize(("name", "packed"), PATHS)
@pytest.mark.parametrize(("layer", "state"), [(-1, 2), (2, 2), (-2, 1), (1, 1), (0, 0), (-3, 0)])
def test_layer_k_is_transformers_hidden_state_k(name, packed, layer, state, request):
    backbone, folder = loaded(name, request)
    expected = reference_states(name, folder, backbone, SEQUENCES)
    backbone.select_layers(layer)
    got = outputs(backbone, packed)
    assert all(close(g, e[state]) for g, e in zip(got, expected, strict=True))
    others = [i for i in range(3) if i != state]  # and not any other layer
    assert not any(close(got[0], expected[0][i]) for i in others)
    assert backbone.output_layers == (() if state == 2 else (state,))  # the final output is the default's


@pytest.mark.parametrize(("name", "packed"), PATHS)
@pytest.mark.parametrize(("layer", "last_k", "states"), [(-1, 2, [1, 2]), (-1, 3, [0, 1, 2]), (1, 2, [0, 1])])
def test_last_k_is_the_mean_of_the_layers_up_to_layer(name, packed, layer, last_k, states, request):
    backbone, folder = loaded(name, request)
    expected = reference_states(name, folder, backbone, SEQUENCES)
    backbone.select_layers(layer, last_k)
    got = outputs(backbone, packed)
    for g, e in zip(got, expected, strict=True):
        assert close(g, sum(e[i] for i in states) / len(states))


@pytest.mark.parametrize(("layer", "last_k", "message"), [
    (3, 1, r"layer=3: backbone esm2-8m has 2 layers, so layer is 0\.\.2 \(0: the embedding output\) or -1\.\.-3"),
    (-4, 1, r"layer=-4: backbone esm2-8m has 2 layers"),
    (1, 3, r"last_k=3: the mean of the 3 layers up to layer 1 .* needs last_k in 1\.\.2"),
    (-1, 0, r"last_k=0: .* needs last_k in 1\.\.3"),
])
def test_layer_choices_out_of_range_fail_in_one_line_naming_the_layer_count(layer, last_k, message, request):
    backbone, _ = loaded("esm2-8m", request)
    with pytest.raises(BenchError, match=message) as error:
        backbone.select_layers(layer, last_k)
    assert "\n" not in str(error.value)


def test_the_embedding_cache_keys_on_the_layers(request, tmp_path):
    backbone, folder = loaded("esm2-8m", request)
    examples = [Example(f"r{i}", s, 0.0) for i, s in enumerate(SEQUENCES)]
    run = RunConfig(backbone="esm2-8m", task=CHARGE.name)
    expected = reference_states("esm2-8m", folder, backbone, SEQUENCES)
    entries = []
    for layer, state in [(-1, 2), (-2, 1), (2, 2), (0, 0)]:  # layer 2 of 2 is the final output: -1's entry
        backbone.select_layers(layer)
        features = frozen_features(backbone, {"x": examples}, run, context(tmp_path))["x"]
        entries.append(len(list(default_folder().glob("*.npy"))))
        for i, reference in enumerate(expected):  # the entry holds that layer (at fp16's precision)
            torch.testing.assert_close(features[i], reference[state], atol=2e-3, rtol=2e-3)
    assert entries == [1, 2, 2, 3]


def test_bench_embed_writes_the_layer_asked_for(tiny_esm, tmp_path, request):
    examples = [Example(f"r{i}", s, 0.0) for i, s in enumerate(SEQUENCES)]
    (tmp_path / "in.fasta").write_text("".join(f">{e.id}\n{e.sequence}\n" for e in examples))
    backbone, _ = loaded("esm2-8m", request)
    expected = reference_states("esm2-8m", tiny_esm, backbone, SEQUENCES)
    for options, state in [((), 2), (("--method-option", "layer=0"), 0), (("--method-option", "last_k=2"), None)]:
        out = tmp_path / "out.npz"
        ran = CliRunner().invoke(main, ["embed", "esm2-8m", str(tmp_path / "in.fasta"), "-o", str(out),
                                        "--backbone-path", str(tiny_esm), "--device", "cpu", *options])
        assert ran.exit_code == 0, ran.output
        written = np.load(out)
        for e, reference in zip(examples, expected, strict=True):
            want = (reference[1] + reference[2]) / 2 if state is None else reference[state]
            np.testing.assert_allclose(written[e.id], want.numpy(), rtol=2e-3, atol=2e-3)  # fp16, as cached
    refused = CliRunner().invoke(main, ["embed", "esm2-8m", str(tmp_path / "in.fasta"), "-o", str(out),
                                        "--backbone-path", str(tiny_esm), "--method-option", "layer=5"])
    assert refused.exit_code == 2 and "backbone esm2-8m has 2 layers" in refused.output


def test_a_frozen_run_from_an_inner_layer_trains_on_that_layer(tiny_esm, tmp_path, monkeypatch):
    built = keep_model(monkeypatch)
    run = config(CHARGE, tiny_esm, method="frozen", method_options={"layer": -2})
    assert run.method_options == {"layer": -2, "last_k": 1}  # the record splits rows by it
    record = trains(run, tmp_path)
    assert record["config"]["method_options"] == {"layer": -2, "last_k": 1}
    assert built["backbone"].output_layers == (1,)
    train = CHARGE.load(tmp_path)["train"]
    states = reference_states("esm2-8m", tiny_esm, built["backbone"], [e.sequence for e in train[:4]])
    features = frozen_features(built["backbone"], {"train": train}, run, context(tmp_path))["train"]
    for i, reference in enumerate(states):  # the head trained on hidden_states[1], read back from the cache
        torch.testing.assert_close(features[i], reference[1], atol=2e-3, rtol=2e-3)
    default = execute(config(CHARGE, tiny_esm, method="frozen", epochs=1), context(tmp_path))
    assert default["config_hash"] != record["config_hash"]


def test_backbones_without_layers_take_the_defaults_and_refuse_the_rest_in_one_line(tmp_path):
    default = execute(RunConfig(backbone="onehot", task=CHARGE.name, epochs=1).resolved(), context(tmp_path))
    assert default["status"] == "finished" and default["config"]["method_options"] == {"layer": -1, "last_k": 1}
    for method, options, message in [
        ("frozen", {"layer": -2}, "method options layer=-2 last_k=1: backbone onehot has no layers to choose from"),
        ("frozen", {"last_k": 2}, "backbone onehot has no layers to choose from"),
        ("full", {"top_layers": 1}, "method full option top_layers=1: backbone onehot has no transformer blocks"),
    ]:
        run = RunConfig(backbone="onehot", task=CHARGE.name, method=method, method_options=options,
                        epochs=1).resolved()
        with pytest.raises(BenchError, match=message) as error:
            execute(run, context(tmp_path))
        assert "\n" not in str(error.value)


# --- fine-tuning the top blocks ----------------------------------------------------------------

def esm_block(c) -> int:
    """One EsmLayer: query, key, value and attention output (H×H + H each), two layer norms (2H
    each), the FFN's intermediate (H×F + F) and output (F×H + H) denses."""
    h, f = c.hidden_size, c.intermediate_size
    return 4 * (h * h + h) + 2 * 2 * h + (h * f + f) + (f * h + h)


def t5_block(c) -> int:
    """A T5Block after the first (the first also holds the relative position bias): q, k, v, o
    without biases, two RMS norms (H each), the ReLU FFN's wi and wo."""
    inner = c.num_heads * c.d_kv
    return 4 * c.d_model * inner + 2 * c.d_model + 2 * c.d_model * c.d_ff


# Per family, from the checkpoint's config: one block (after the first), what the first block adds
# (T5's relative position bias), what runs after the blocks (the final norm), LoRA on q/k/v/o at
# rank r, and the biases of the last block and after it.
COUNTS = {  # by family
    "esm2": {"block": esm_block, "first": lambda c: 0, "after": lambda c: 2 * c.hidden_size,
                "lora": lambda c, r: 4 * r * 2 * c.hidden_size,
                "biases": lambda c: 7 * c.hidden_size + c.intermediate_size + c.hidden_size},
    "t5-encoder": {"block": t5_block, "first": lambda c: c.relative_attention_num_buckets * c.num_heads,
               "after": lambda c: c.d_model, "lora": lambda c, r: 4 * r * (c.d_model + c.num_heads * c.d_kv),
               "biases": lambda c: 0},  # T5 has no biases
}
LAST = {"esm2-8m": ("encoder.layer.1.", "encoder.emb_layer_norm_after."),
        "prott5": ("encoder.block.1.", "encoder.final_layer_norm.")}


def trainable(module) -> dict[str, int]:
    return {n: p.numel() for n, p in module.named_parameters() if p.requires_grad}


def prepared(name: str, method: str, options: dict, request):
    backbone, _ = loaded(name, request)
    spec = plugins.get("method", method)
    return spec.prepare(backbone, spec.resolve_options(options))


@pytest.mark.parametrize("name", LAST)
def test_full_top_layers_1_trains_the_last_block_and_the_final_norm_only(name, request):
    backbone = prepared(name, "full", {"top_layers": 1}, request)
    count, c = COUNTS[plugins.get("backbone", name).family], backbone.model.config
    assert sum(trainable(backbone).values()) == count["block"](c) + count["after"](c)
    assert all(n.removeprefix("model.").startswith(LAST[name]) for n in trainable(backbone))
    both = prepared(name, "full", {"top_layers": 2}, request)  # every block, still not the embeddings
    assert sum(trainable(both).values()) == 2 * count["block"](c) + count["first"](c) + count["after"](c)
    assert not any("embed" in n or "shared" in n for n in trainable(both))


@pytest.mark.parametrize("name", LAST)
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_top_layers_1_adapts_only_the_last_block(name, method, request):
    backbone = prepared(name, method, {"top_layers": 1, "bias": "none"}, request)
    count, c = COUNTS[plugins.get("backbone", name).family], backbone.model.base_model.model.config
    magnitudes = 4 * c.hidden_size if method == "dora" else 0  # DoRA: one per output of each target
    names = trainable(backbone)
    assert sum(names.values()) == count["lora"](c, 4) + magnitudes
    assert all(".1." in n and "lora_" in n for n in names) and len(names) == 4 * (3 if method == "dora" else 2)
    assert backbone.model.peft_config["default"].layers_to_transform == [1]
    with_biases = prepared(name, method, {"top_layers": 1}, request)  # bias="all": those of the tuned part
    assert sum(trainable(with_biases).values()) == count["lora"](c, 4) + magnitudes + count["biases"](c)
    assert all(n.split("base_model.model.")[1].startswith(LAST[name]) for n in trainable(with_biases))


@pytest.mark.parametrize(("name", "top"), [("esm2-650m", 4), ("prott5", 24)])
def test_top_layers_on_the_published_architectures_counts_blocks_from_their_config(name, top):
    """Full-size architectures on the meta device (no weights): ESM2-650M's 33 blocks, ProtT5's 24."""
    backbone = plugins.get("backbone", name).load(None, "meta", dtype="fp32", init="random")
    c = backbone.model.config
    assert backbone.num_layers == c.num_hidden_layers == {"esm2-650m": 33, "prott5": 24}[name]
    spec = plugins.get("method", "full")
    spec.prepare(backbone, spec.resolve_options({"top_layers": top}))
    count = COUNTS[plugins.get("backbone", name).family]
    expected = top * count["block"](c) + (count["first"](c) if top == c.num_hidden_layers else 0) + count["after"](c)
    assert sum(trainable(backbone).values()) == expected
    with pytest.raises(BenchError, match=rf"has {c.num_hidden_layers} blocks; use 1\.\.{c.num_hidden_layers}"):
        backbone.top_blocks(c.num_hidden_layers + 1, "full")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_top_layers_out_of_range_fails_in_one_line_naming_the_block_count(method, request):
    with pytest.raises(BenchError, match=rf"method {method} option top_layers=3: backbone esm2-8m has 2 "
                                         r"blocks; use 1\.\.2, or 0 for every layer") as error:
        prepared("esm2-8m", method, {"top_layers": 3}, request)
    assert "\n" not in str(error.value)
    with pytest.raises(BenchError, match=rf"method {method} option top_layers=-1: expected int >= 0"):
        prepared("esm2-8m", method, {"top_layers": -1}, request)  # refused by the declaration, before loading


@pytest.mark.parametrize("method", ["full", "lora"])
def test_top_layers_training_changes_only_the_top_block(method, tiny_esm, tmp_path, monkeypatch, request):
    built = keep_model(monkeypatch)
    record = trains(config(CHARGE, tiny_esm, method=method, method_options={"top_layers": 1}), tmp_path)
    fresh, _ = loaded("esm2-8m", request)
    before = dict(fresh.named_parameters())
    after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
             for n, p in built["model"].backbone.named_parameters() if "lora_" not in n}
    changed = {n for n, p in after.items() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("model.encoder.layer.1.", "model.encoder.emb_layer_norm_after."))
                           for n in changed)
    if method == "lora":  # the adapters learned (B starts at zero) and only the top block has them
        lora_b = {n: p for n, p in built["model"].backbone.named_parameters() if "lora_B" in n}
        assert lora_b and all(".layer.1." in n and p.abs().sum() > 0 for n, p in lora_b.items())
    head = sum(p.numel() for p in built["model"].head.parameters())
    count, c = COUNTS["esm2"], fresh.model.config
    tuned = count["block"](c) + count["after"](c) if method == "full" else count["lora"](c, 4) + count["biases"](c)
    assert record["parameters"]["trainable"] == tuned + head


# --- grids and leaderboards --------------------------------------------------------------------

def test_a_grid_sweeps_layers_and_top_layers_and_the_leaderboard_splits_by_them(tiny_esm, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'backbones = ["esm2-8m"]\ntasks = ["{CHARGE.name}"]\nmethods = ["frozen", "full"]\n'
                    '[settings]\nepochs = 2\nlr = 3e-3\n'
                    f'[backbone_paths]\nesm2-8m = "{tiny_esm}"\n'
                    '[sweep.method_options.frozen]\nlayer = [-1, -2, 0]\n'
                    '[sweep.method_options.full]\ntop_layers = [0, 1]\n')
    plan = load_grid(grid)
    assert [(c.method, c.method_options) for c in plan.configs] == [
        ("frozen", {"last_k": 1, "layer": -1}), ("frozen", {"last_k": 1, "layer": -2}),
        ("frozen", {"last_k": 1, "layer": 0}), ("full", {"top_layers": 0}), ("full", {"top_layers": 1})]
    store = tmp_path / "runs.sqlite"
    ran = CliRunner().invoke(main, ["grid", str(grid), "--store", str(store), "--device", "cpu"])
    assert ran.exit_code == 0, ran.output
    assert "5 finished, 0 failed" in ran.output

    def board(*flags: str) -> list[dict]:
        shown = CliRunner().invoke(main, ["leaderboard", "--store", str(store), "--format", "json", *flags])
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.output)["rows"]

    by_layer = board("--by", "layer")
    assert list(by_layer[0])[:2] == ["layer", "method"]
    assert sorted((r["layer"], r["method"], r["method_options"]) for r in by_layer) == [
        ("-1", "frozen", "last_k=1"), ("-2", "frozen", "last_k=1"), ("0", "frozen", "last_k=1"),
        ("—", "full", "top_layers=0"), ("—", "full", "top_layers=1")]
    scores = {r["layer"]: r[CHARGE.name]["mean"] for r in by_layer if r["method"] == "frozen"}
    assert len(set(scores.values())) == 3  # three layers, three results: nothing pooled
    by_top = board("--method", "full", "--by", "top_layers")
    assert [(r["top_layers"], r[CHARGE.name]["n"]) for r in by_top] == [("0", 1), ("1", 1)]
    assert "method_options" not in by_top[0]  # the option is the column now; nothing else varies
    unknown = CliRunner().invoke(main, ["leaderboard", "--store", str(store), "--by", "rank"])
    assert unknown.exit_code == 2 and "--by rank: unknown setting" in unknown.output
    assert "method option of the shown runs (last_k, layer, top_layers)" in unknown.output


@pytest.mark.parametrize("name", LAST)
def test_ia3_top_layers_1_rescales_only_in_the_last_block(name, request):
    """peft's IA3 has no layers_to_transform: the lower blocks are excluded instead, so the
    vectors trained are exactly every-block IA3's that sit in the last block."""
    every = trainable(prepared(name, "ia3", {}, request))
    top = trainable(prepared(name, "ia3", {"top_layers": 1}, request))
    block = LAST[name][0]
    assert top and top == {n: c for n, c in every.items() if block in n}
    assert len(every) == 2 * len(top)  # the tiny models have two blocks
    with pytest.raises(BenchError, match="option top_layers=3: backbone .* has 2 blocks"):
        prepared(name, "ia3", {"top_layers": 3}, request)
