"""The packed (unpadded) path of ESM2 and BERT against transformers' own padded forward: same
numbers, independent of batch order, same gradients, and the path embedding and training take."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from plm_bench import plugins
from plm_bench.alphabet import AMINO_ACIDS
from plm_bench.models.backbone import load_backbone, unpack
from plm_bench.models.transformer import PACKED_ATTENTION
from plm_bench.run.protocol import RunContext, embed_all
from plm_bench.tasks.task import Example

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "GSUZBOXW", "MA", AMINO_ACIDS * 3, "PEPTIDEKLMNQ", "W"]


PACKING = {"tiny_esm": "esm2-8m", "tiny_bert": "protbert"}  # checkpoint fixture -> registered backbone


@pytest.fixture(params=sorted(PACKING))
def checkpoint(request) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture
def backbone(request, checkpoint):
    """A backbone of a family that packs."""
    return load_backbone(plugins.get("backbone", PACKING[request.node.callspec.params["checkpoint"]]),
                         str(checkpoint), "cpu")


def padded_reference(folder: Path, backbone, sequences: list[str]) -> list[torch.Tensor]:
    """transformers' model as shipped (SDPA, one padded batch with its attention mask)."""
    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    assert model.config._attn_implementation == "sdpa"
    inputs = backbone.vocabulary.encode(sequences)
    with torch.no_grad():
        states = model(**inputs).last_hidden_state
    return [states[row, 1:1 + len(s)] for row, s in enumerate(sequences)]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def test_packed_tokens_restart_positions_and_locate_residues(backbone):
    packed = backbone.vocabulary.encode_packed(["MKV", "GS"])
    cls, eos = backbone.vocabulary.prefix[0], backbone.vocabulary.suffix[0]
    ids = backbone.vocabulary.ids
    assert packed["input_ids"][0].tolist() == [cls, ids["M"], ids["K"], ids["V"], eos, cls, ids["G"], ids["S"], eos]
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert packed["cu_seq_lens"].tolist() == [0, 5, 9]
    assert packed["residues"].tolist() == [1, 2, 3, 6, 7]


def test_unpack_puts_each_sequence_in_its_row():
    flat = torch.arange(10.0).reshape(5, 2)
    residues = unpack(flat, [3, 2])
    assert residues.hidden.tolist() == [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [0, 0]]]
    assert residues.mask.tolist() == [[True, True, True], [True, True, False]]


def test_packed_equals_transformers_padded_forward(checkpoint, backbone):
    assert backbone.packs and backbone.model.config._attn_implementation == PACKED_ATTENTION
    expected = padded_reference(checkpoint, backbone, SEQUENCES)
    with torch.no_grad():
        got = backbone.eval().embed(SEQUENCES)
    for row, (sequence, reference) in enumerate(zip(SEQUENCES, expected, strict=True)):
        assert relative_error(got.hidden[row, : len(sequence)], reference) <= 1e-4, sequence
    assert got.mask.sum(1).tolist() == [len(s) for s in SEQUENCES]


def test_padded_calls_of_a_packing_model_are_transformers_sdpa(checkpoint, backbone):
    """The fallback (tokenize + forward) still computes what transformers' SDPA computes."""
    expected = padded_reference(checkpoint, backbone, SEQUENCES)
    with torch.no_grad():
        got = backbone.eval()(**backbone.tokenize(SEQUENCES))
    for row, reference in enumerate(expected):
        torch.testing.assert_close(got.hidden[row, : len(reference)], reference)


def test_packed_is_batch_order_invariant(backbone):
    backbone.eval()
    order = [3, 0, 5, 2, 4, 1]
    with torch.no_grad():
        straight = backbone.embed(SEQUENCES)
        shuffled = backbone.embed([SEQUENCES[i] for i in order])
        alone = [backbone.embed([s]).hidden[0] for s in SEQUENCES]
    for row, i in enumerate(order):
        n = len(SEQUENCES[i])
        assert relative_error(shuffled.hidden[row, :n], straight.hidden[i, :n]) <= 1e-5
        assert relative_error(alone[i], straight.hidden[i, :n]) <= 1e-5


def gradients(backbone, sequences: list[str]) -> dict[str, torch.Tensor]:
    """Gradients of a fixed weighting of every residue's state (a stand-in for a head's loss);
    in eval mode, so dropout draws no random numbers that would differ between the paths."""
    backbone.eval()
    backbone.zero_grad(set_to_none=True)
    residues = backbone.embed(sequences)
    weights = torch.linspace(-1, 1, residues.hidden.shape[-1])
    (residues.hidden[residues.mask] @ weights).square().mean().backward()
    return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_packed_gradients_equal_padded_gradients(backbone, method):
    if method != "full":
        backbone = plugins.get("method", method).prepare(backbone, plugins.get("method", method).resolve_options({}))
        with torch.no_grad():  # LoRA's B starts at zero, which would leave A without gradient
            for name, parameter in backbone.named_parameters():
                if "lora_B" in name:
                    parameter.normal_()
    padded = copy.deepcopy(backbone)
    padded.packs = False
    got, expected = gradients(backbone, SEQUENCES), gradients(padded, SEQUENCES)
    assert got.keys() == expected.keys() and len(got) > 4
    # BERT's key bias adds the same q.b to every score of a query, which softmax cancels: its true
    # gradient is 0, so both sides hold rounding noise, compared against the largest gradient
    largest = max(float(g.abs().max()) for g in expected.values())
    for name, grad in expected.items():
        scale = max(float(grad.abs().max()), 1e-3 * largest)
        assert float((got[name] - grad).abs().max()) <= 1e-4 * scale, name


def test_embedding_frozen_caches_and_training_take_the_packed_path(backbone, monkeypatch):
    def refuse(**_):
        raise AssertionError("the padded forward ran")

    monkeypatch.setattr(backbone, "forward", refuse)
    examples = [Example(f"r{i}", s, 0.0) for i, s in enumerate(SEQUENCES)]
    features = embed_all(backbone, examples, RunContext(data_dir=Path(".")))  # frozen caches embed through this
    assert [len(f) for f in features] == [len(s) for s in SEQUENCES]
    hidden = backbone.train().embed(SEQUENCES[:2]).hidden  # Model.forward's call when fine-tuning
    assert hidden.requires_grad
