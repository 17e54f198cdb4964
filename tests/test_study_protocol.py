"""The study protocol builds the study's heads, LoRA and frozen predictor, and its training rules
hold: standardized frozen inputs, residue batches, residue-weighted micro-batches, recorded
truncation. References are computed by hand from the backbone's own outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from synthetic_tasks import CHARGE, RESIDUE_CLASSES, config, context, register_tasks

from plm_bench import TransformerBackbone, plugins
from plm_bench.config import RunConfig
from plm_bench.run import training
from plm_bench.run.predict import predict_examples
from plm_bench.run.protocol import build, execute
from plm_bench.tasks.metrics import score
from plm_bench_plugins.mlp import KERAS_EPSILON
from plm_bench_plugins.peft_methods import prepare_lora

CPU = torch.device("cpu")
TABLE_1_LORA = {"esm2-8m": 163_000, "esm2-35m": 483_000, "esm2-150m": 1_600_000}  # Table 1, trained parameters
PROTEIN_HEADS = [("esm2-8m", "tiny_esm", "esm-cls", 0.0), ("prott5", "tiny_prott5", "t5-mean", 0.2),
                 ("prostt5", "tiny_prostt5", "t5-mean", 0.2), ("ankh-base", "tiny_ankh", "t5-mean", 0.2)]


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def study(task, path, backbone: str, **fields) -> RunConfig:
    """A quick study-protocol config on a toy task (the study's tables have no epochs for it)."""
    settings = {"epochs": 2, "val_per_epoch": 1, "method": "lora", **fields}
    return RunConfig(backbone=backbone, task=task.name, backbone_path=str(path) if path else None, protocol="study",
                     **settings).resolved()


def token_states(model: training.Model, sequences: list[str]) -> torch.Tensor:
    """The backbone's last hidden state over every token (specials and padding included)."""
    inputs = model.backbone.tokenize(sequences)
    output = model.backbone.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return output.last_hidden_state


@pytest.mark.parametrize(("backbone", "fixture", "head", "dropout"), PROTEIN_HEADS)
def test_the_study_per_protein_head_of_each_family(request, backbone, fixture, head, dropout):
    run = study(CHARGE, request.getfixturevalue(fixture), backbone, precision="fp32")  # compared in fp32 below
    assert (run.head, run.head_dropout) == (head, dropout)
    _, model = build(run, CHARGE, CPU)
    layers = {name: type(m).__name__ for name, m in model.head.named_modules() if name}
    dense, out_proj = model.head.get_submodule(f"{'classifier.' if head == 'esm-cls' else ''}dense"), \
        model.head.get_submodule(f"{'classifier.' if head == 'esm-cls' else ''}out_proj")
    hidden = model.backbone.hidden_size
    assert (dense.in_features, dense.out_features, out_proj.out_features) == (hidden, hidden, 1)
    assert [m.p for m in model.head.modules() if isinstance(m, torch.nn.Dropout)] == [dropout]
    if head == "esm-cls":
        assert layers["classifier"] == "EsmClassificationHead"  # transformers' own, as the notebook's model had
        # initialized by EsmPreTrainedModel._init_weights as from_pretrained left it: N(0, 0.02), zero bias
        # (nn.Linear's default would be uniform with std 1/sqrt(3 * 32) = 0.10 and a nonzero bias)
        for layer in (dense, out_proj):
            assert torch.count_nonzero(layer.bias) == 0
        assert 0.015 < dense.weight.std().item() < 0.025
    model.eval()
    batch = sorted(CHARGE.load(None)["train"][:3], key=lambda e: len(e.sequence))
    assert len({len(e.sequence) for e in batch}) == 3  # padding is exercised
    with torch.no_grad():
        output, _ = model(batch, None)
        tokens = token_states(model, [e.sequence for e in batch])
        pooled = tokens[:, 0] if head == "esm-cls" else tokens.mean(1)  # <cls>; or every position, padding too
        expected = out_proj(torch.tanh(dense(pooled)))
    torch.testing.assert_close(output, expected)


def test_the_t5_study_head_averages_padding_in_and_the_esm_head_does_not(tiny_prott5, tiny_esm):
    """The study's quirk, kept: a T5 protein's prediction depends on how far its batch pads it."""
    short, long = CHARGE.load(None)["train"][0], max(CHARGE.load(None)["train"], key=lambda e: len(e.sequence))
    for backbone, path, depends in (("prott5", tiny_prott5, True), ("esm2-8m", tiny_esm, False)):
        _, model = build(study(CHARGE, path, backbone, precision="fp32"), CHARGE, CPU)  # fp32: exact comparison
        model.eval()
        with torch.no_grad():
            alone, padded = model([short], None)[0][0], model([short, long], None)[0][0]
        assert torch.allclose(alone, padded, atol=1e-5) is not depends, backbone


@pytest.mark.parametrize(("backbone", "fixture", "head", "dropout"),
                         [("esm2-8m", "tiny_esm", "esm-linear-residue", 0.0),
                          ("prott5", "tiny_prott5", "linear-residue", 0.2)])
def test_the_study_per_residue_head_is_dropout_and_one_linear_layer(request, backbone, fixture, head, dropout):
    run = study(RESIDUE_CLASSES, request.getfixturevalue(fixture), backbone, precision="fp32")  # compared in fp32
    assert (run.head, run.head_dropout) == (head, dropout)
    _, model = build(run, RESIDUE_CLASSES, CPU)
    children = dict(model.head.named_children())
    assert list(children) == ["dropout", "classifier"] and children["dropout"].p == dropout
    assert (children["classifier"].in_features, children["classifier"].out_features) == (model.backbone.hidden_size, 3)
    # ESM2's starts as EsmPreTrainedModel._init_weights leaves it (N(0, 0.02), zero bias); T5's plain
    # nn.Linear keeps torch's default (uniform within 1/sqrt(32), so std 0.10, and a nonzero bias)
    zero_bias = torch.count_nonzero(children["classifier"].bias) == 0
    std = children["classifier"].weight.std().item()
    assert (zero_bias, 0.01 < std < 0.03) == ((True, True) if head == "esm-linear-residue" else (False, False))
    model.eval()
    batch = RESIDUE_CLASSES.load(None)["train"][:3]
    with torch.no_grad():
        output, mask = model(batch, None)
        tokens = token_states(model, [e.sequence for e in batch])
        start = len(model.backbone.vocabulary.prefix)
        for row, e in enumerate(batch):  # residue i is token start + i; one linear map per residue
            expected = children["classifier"](tokens[row, start:start + len(e.sequence)])
            torch.testing.assert_close(output[row, : len(e.sequence)], expected)


def meta_esm2(name: str) -> TransformerBackbone:
    """The named ESM2 architecture (registry.toml) on the meta device: counts without weights."""
    return plugins.get("backbone", name).load(None, "meta", dtype="fp32", init="random")


@pytest.mark.parametrize("name", sorted(TABLE_1_LORA))
def test_study_lora_trainable_counts_equal_table_1(name):
    """Table 1 counts what peft marked trainable after injecting LoRA into the notebook's whole
    AutoModelForSequenceClassification: the backbone's adapters and biases, and the classifier
    head's (its ``dense`` matches the target ``dense`` too), before the head was unfrozen."""
    run = RunConfig(backbone=name, task="gb1", method="lora", protocol="study").resolved()
    options = run.method_options
    assert options["targets"] == ["query", "key", "value", "dense"]
    backbone = prepare_lora(meta_esm2(name), options)
    with torch.device("meta"):
        head = plugins.get("head", run.head).build(backbone.model.config.hidden_size, 1, "protein")
    head = inject_adapter_in_model(LoraConfig(r=options["rank"], lora_alpha=options["alpha"], bias=options["bias"],
                                              target_modules=options["targets"]), head)
    counted = sum(p.numel() for m in (backbone, head) for p in m.parameters() if p.requires_grad)
    assert abs(counted - TABLE_1_LORA[name]) <= 0.01 * TABLE_1_LORA[name], counted
    # the harness's attention-only default adapts far fewer: the FFN denses are the difference
    harness = RunConfig(backbone=name, task="gb1", method="lora").resolved().method_options
    attention_only = prepare_lora(meta_esm2(name), harness)
    assert sum(p.numel() for p in attention_only.parameters() if p.requires_grad) < 0.7 * counted


def test_the_study_frozen_head_standardizes_on_the_training_split(tmp_path):
    run = study(CHARGE, None, "onehot", method="frozen")
    assert (run.head, run.head_dropout, run.standardize, run.optimizer, run.adam_eps, run.lr) == \
        ("mlp-protein", 0.2, True, "adam", 1e-7, 1e-4)
    record = execute(run, context(tmp_path))
    backbone, model = build(run, CHARGE, CPU)
    assert "head.shift" in dict(model.head.named_buffers(prefix="head"))
    splits = CHARGE.load(None)
    pooled = torch.stack([backbone.embed([e.sequence]).hidden[0].mean(0) for e in splits["train"]])
    model.head.fit_standardization([backbone.embed([e.sequence]).hidden[0] for e in splits["train"]])
    torch.testing.assert_close(model.head.shift, pooled.mean(0))
    torch.testing.assert_close(model.head.scale, pooled.std(0, unbiased=False).clamp(min=KERAS_EPSILON))
    # the statistics travel with the saved head: predicting with the run reproduces its test metric
    _, predictions = predict_examples({**record, "run_id": 1}, tmp_path / "runs.sqlite", splits["test"], "cpu")
    assert score(CHARGE, splits["test"], predictions) == pytest.approx(record["metrics"]["test"]["spearman"])


def test_frozen_per_residue_heads_train_on_batches_of_residues(tmp_path):
    run = study(RESIDUE_CLASSES, None, "onehot", method="frozen", epochs=3, lr=0.01)
    assert (run.batch_unit, run.batch_size) == ("residues", 8)
    train = RESIDUE_CLASSES.load(None)["train"]
    features = [torch.zeros(len(e.sequence), 4) for e in train]
    units = training.Units(RESIDUE_CLASSES, train, features, residue_level=True)
    assert units.count == sum(int(e.mask.sum()) for e in train) > len(train)  # each scored residue is a unit
    assert units.weight([0, 1, 2]) == 3
    record = execute(run, context(tmp_path))
    assert record["history"][-1]["epoch"] == 3
    assert record["metrics"]["test"]["accuracy"] > 0.9  # one-hot residues: basic/acidic is learnable


def test_a_split_batch_weighs_residues_as_the_whole_batch_does(tiny_esm):
    """After an out-of-memory split, per-residue losses are weighted by residues, not proteins."""
    run = config(RESIDUE_CLASSES, tiny_esm, method="full", lr=1.0)
    _, model = build(run, RESIDUE_CLASSES, CPU)
    model.eval()  # no dropout: both paths compute the same function
    train = RESIDUE_CLASSES.load(None)["train"]
    idx = sorted(range(8), key=lambda i: len(train[i].sequence))  # lengths differ, so the weights matter
    units = training.Units(RESIDUE_CLASSES, train, None, residue_level=False)
    updated = []
    for micro_batch in (8, 1):
        trained = copy.deepcopy(model)
        optimizer = torch.optim.SGD(trained.trainable_parameters(), lr=1.0)
        state = training.Outcome([], None, None, None, 0.0, micro_batch, [], 0.0, 0, 0)  # type: ignore[arg-type]
        loss = training.step(trained, units, idx, optimizer, state, CPU)
        updated.append((loss, [p.detach().clone() for p in trained.trainable_parameters()]))
    assert updated[0][0] == pytest.approx(updated[1][0], rel=1e-5)
    for whole, split in zip(updated[0][1], updated[1][1], strict=True):
        torch.testing.assert_close(whole, split, rtol=1e-4, atol=1e-6)
    scored = [int(train[i].mask.sum()) for i in idx]
    assert len(set(scored)) > 1  # a per-protein mean of means would differ from this


def test_truncation_is_explicit_and_counted(tiny_esm, tmp_path):
    run = study(CHARGE, tiny_esm, "esm2-8m", epochs=1, max_tokens=14)
    record = execute(run, context(tmp_path))
    keep = 14 - 2  # <cls> and <eos>
    counts = {split: sum(len(e.sequence) > keep for e in examples) for split, examples in CHARGE.load(None).items()}
    assert record["truncation"] == {"max_tokens": 14, "residues_kept": keep, "records": counts}
    assert counts["train"] > 0
    frozen = study(CHARGE, None, "onehot", method="frozen", epochs=1)
    assert frozen.max_tokens == 0 and "truncation" not in execute(frozen, context(tmp_path))


def test_explicit_settings_override_the_protocol_and_the_record_keeps_both(tmp_path):
    run = study(CHARGE, None, "onehot", method="frozen", epochs=1, head_dropout=0.5, optimizer="adamw")
    assert (run.protocol, run.head_dropout, run.optimizer, run.adam_eps) == ("study", 0.5, "adamw", 1e-7)
    record = execute(run, context(tmp_path))
    assert record["config"]["protocol"] == "study" and record["config"]["head_dropout"] == 0.5
    assert all(value is not None for key, value in record["config"].items()
               if key in {"epochs", "batch_size", "batch_unit", "schedule", "grad_clip", "max_tokens", "select_by"})


def test_study_protocol_values_cite_the_table():
    """Spot checks against Tables S10 and S12 (source_data_SOM of the study's repository)."""
    def resolved(backbone: str, task: str, method: str) -> RunConfig:
        return RunConfig(backbone=backbone, task=task, method=method, protocol="study").resolved()

    assert resolved("onehot", "gb1", "frozen").epochs == 240 and resolved("onehot", "secondary_structure",
                                                                          "frozen").epochs == 10
    full = resolved("esm2-8m", "secondary_structure", "full")
    assert (full.epochs, full.val_per_epoch, full.batch_size, full.lr) == (5, 20, 1, 2e-5)
    # the logs, not Table S12's 20 x 1, for ProtT5 LoRA on meltome (PT_lora_avg_thermo_9x.csv: 10 x 2)
    assert [(c.epochs, c.val_per_epoch) for c in (resolved("ankh-base", "meltome", "lora"),
                                                  resolved("prott5", "meltome", "lora"))] == [(10, 2), (10, 2)]
    assert resolved("esm2-8m", "gb1", "lora").method_options["targets"] == ["query", "key", "value", "dense"]
    assert np.isclose(resolved("prott5", "gb1", "lora").lr, 3e-4)


def test_protocols_are_plugins_listed_and_checked(tmp_path):
    from click.testing import CliRunner

    from plm_bench.cli import main
    from plm_bench.errors import BenchError
    from plm_bench.plugins.protocols import load_protocol

    listed = CliRunner().invoke(main, ["list", "protocol"])
    assert listed.exit_code == 0 and "harness" in listed.output and "study" in listed.output
    assert "gb1" not in listed.output  # only protocols
    mine = tmp_path / "flip.toml"
    mine.write_text('name = "flip"\n[[rules]]\nmatch = { task = ["gb1"] }\nsettings = { epochs = 7 }\n')
    spec = load_protocol(mine)
    assert spec.settings_for(task="gb1", method="frozen") == {"epochs": 7} and spec.settings_for(task="aav") == {}
    mine.write_text('name = "flip"\n[[rules]]\nsettings = { epoch = 7 }\n')
    with pytest.raises(BenchError, match=r"flip.toml: rule 1: 'epoch' is not a setting"):
        load_protocol(mine)
    mine.write_text('name = "flip"\n[[rules]]\nsettings = { optimizer = "sgd" }\n')
    with pytest.raises(BenchError, match=r"rule 1: optimizer = 'sgd'"):
        load_protocol(mine)


def test_random_init_esm2_keeps_the_published_dropout():
    """The published ESM2 configs set dropout 0.0; transformers' EsmConfig would give 0.1."""
    config = plugins.get("backbone", "esm2-8m").load(None, "meta", dtype="fp32", init="random").model.config
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob) == (0.0, 0.0)


def test_study_frozen_protein_embeddings_average_every_token_specials_included(tiny_esm, tmp_path):
    """Embedding_Generation_GPU.ipynb (per_prot): the mean of last_hidden_state over every token of one
    unpadded sequence, <cls> and <eos> included; the harness protocol keeps the residue mean."""
    from plm_bench.run.protocol import RunContext, frozen_features

    run = study(CHARGE, tiny_esm, "esm2-8m", method="frozen")
    assert run.pooling == "tokens" and run.head == "mlp-protein"
    harness = RunConfig(backbone="esm2-8m", task=CHARGE.name, method="frozen", backbone_path=str(tiny_esm)).resolved()
    assert harness.pooling == "residues" and "pooling" not in harness.identity()  # as before: the same hash
    backbone, model = build(run, CHARGE, CPU)
    batch = CHARGE.load(None)["train"][:3]
    features = frozen_features(backbone, {"x": batch}, run, RunContext(data_dir=tmp_path, device="cpu"))["x"]
    with torch.no_grad():
        for example, rows in zip(batch, features, strict=True):
            inputs = backbone.tokenize([example.sequence])  # one sequence: no padding
            tokens = backbone.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            tokens = tokens.last_hidden_state[0]
            assert rows.shape == (len(example.sequence) + 2, backbone.hidden_size)  # <cls> ... <eos>
            torch.testing.assert_close(rows.mean(0), tokens.float().mean(0), atol=2e-3, rtol=1e-3)  # fp16 cache
    residues = frozen_features(backbone, {"x": batch}, harness, RunContext(data_dir=tmp_path, device="cpu"))["x"]
    assert [len(r) for r in residues] == [len(e.sequence) for e in batch]  # its own cache entry
    from plm_bench.errors import BenchError

    with pytest.raises(BenchError, match="--pooling tokens averages frozen per-protein"):
        study(CHARGE, tiny_esm, "esm2-8m", method="lora", pooling="tokens")
