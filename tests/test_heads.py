"""Heads: light attention and the per-residue CNN look at the right residues, ignore padding, and
learn; ``auto`` picks the MLP of the task's level."""

from __future__ import annotations

import pytest
import torch
from synthetic_tasks import CHARGE, RESIDUE_CLASSES, config, context, loss, register_tasks, untrained_predictions

from plm_bench import plugins
from plm_bench.run.predict import predict_examples
from plm_bench.run.protocol import execute

HIDDEN = 6


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def build(name: str, out_dim: int = 3) -> torch.nn.Module:
    spec = plugins.get("head", name)
    torch.manual_seed(0)
    return spec.build(HIDDEN, out_dim, spec.levels[0]).eval()


def padded(*lengths: int, pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hidden states for proteins of ``lengths`` padded with ``pad_value``, and the mask."""
    torch.manual_seed(1)
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    hidden = torch.randn(len(lengths), max(lengths), HIDDEN).masked_fill(~mask.unsqueeze(-1), pad_value)
    return hidden, mask


@pytest.mark.parametrize("name", ["light-attention", "cnn-residue", "mlp-protein", "mlp-residue"])
def test_a_prediction_does_not_depend_on_padding_or_batch_mates(name):
    head = build(name)
    hidden, mask = padded(5, 12)
    garbage, _ = padded(5, 12, pad_value=1e4)  # what a backbone may leave at padded positions
    alone = head(hidden[:1, :5], mask[:1, :5])
    batched = head(hidden, mask)
    if batched.ndim == 3:  # per residue: [B, L, out]; outputs at padded positions are never read
        assert batched.shape == (2, 12, 3)
        assert torch.allclose(head(garbage, mask)[mask], batched[mask])
        assert torch.allclose(batched[:1, :5], alone, atol=1e-6)
    else:
        assert batched.shape == (2, 3)
        assert torch.allclose(head(garbage, mask), batched)
        assert torch.allclose(batched[:1], alone, atol=1e-6)


def test_light_attention_pools_over_every_real_residue():
    head = build("light-attention")
    hidden, mask = padded(9)
    base = head(hidden, mask)
    for position in (0, 4, 8):  # a change anywhere in the protein reaches the pooled output
        changed = hidden.clone()
        changed[0, position] += 1.0
        assert not torch.allclose(head(changed, mask), base)


def test_residue_cnn_sees_six_neighbours_each_side():
    """Two kernel-7 convolutions: residue i depends on residues i-6 .. i+6 and nothing further."""
    head = build("cnn-residue")
    hidden, mask = padded(30)
    base = head(hidden, mask)
    changed = hidden.clone()
    changed[0, 15] += 1.0
    moved = (head(changed, mask) - base).abs().sum(-1)[0] > 0
    assert moved.nonzero().flatten().tolist() == list(range(9, 22))


def test_auto_picks_the_mlp_of_the_task_level(tiny_esm):
    assert config(CHARGE, tiny_esm).head == "mlp-protein"
    assert config(RESIDUE_CLASSES, tiny_esm).head == "mlp-residue"
    assert plugins.get("head", "light-attention").levels == ("protein",)
    assert plugins.get("head", "cnn-residue").levels == ("residue",)


@pytest.mark.parametrize(("task", "head"), [(CHARGE, "light-attention"), (RESIDUE_CLASSES, "cnn-residue")])
def test_head_learns_on_frozen_embeddings(task, head, tiny_esm, tmp_path):
    run = config(task, tiny_esm, head=head)
    valid = task.load(tmp_path)["valid"]
    before = loss(task, valid, untrained_predictions(run, valid, tmp_path))
    record = execute(run, context(tmp_path))
    _, trained = predict_examples(record, tmp_path / "runs.sqlite", valid, "cpu")
    assert loss(task, valid, trained) < 0.9 * before


def test_restoring_a_checkpoint_brings_back_the_heads_batch_norm_statistics():
    """The early-stopping checkpoint is weights and the head's buffers together: a third-party
    head with batch norm must not be tested with its last epoch's running statistics."""
    from torch import nn

    from plm_bench.run.training import restore, snapshot

    model = nn.Module()
    model.head = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model.train()
    model.head(torch.randn(16, 3))
    kept = snapshot(model)
    with torch.no_grad():
        model.head[0].weight.add_(1.0)
    model.head(torch.randn(16, 3) + 5)  # another epoch moves the running statistics
    assert not torch.equal(model.head[1].running_mean, kept["head.1.running_mean"])
    restore(model, kept)
    assert torch.equal(model.head[1].running_mean, kept["head.1.running_mean"])
    assert torch.equal(model.head[1].running_var, kept["head.1.running_var"])
    assert torch.equal(model.head[0].weight, kept["head.0.weight"])
