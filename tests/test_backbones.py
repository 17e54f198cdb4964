"""Backbone families on tiny random checkpoints: residue alignment, conventions, batching,
long sequences, precision, NaN stops and random init."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModel, AutoTokenizer, T5EncoderModel

from plm_bench import plugins
from plm_bench.alphabet import AMINO_ACIDS
from plm_bench.errors import BenchError
from plm_bench.models.backbone import chunk_spans, load_backbone, resolve_dtype
from plm_bench.models.transformer import PACKED_ATTENTION
from plm_bench.run.batching import length_buckets
from plm_bench.run.protocol import RunContext, embed_all
from plm_bench.run.training import batches
from plm_bench.tasks.task import Example
from plm_bench_plugins.backbones import spec_from_entry

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GSUZBOXW", "MA", AMINO_ACIDS, "PEPTIDEKLMNQ"]
FAMILIES = {  # registered backbone whose family loads the fixture's checkpoint
    "tiny_esm": "esm2-8m",
    "tiny_prott5": "prott5",
    "tiny_prostt5": "prostt5",
    "tiny_ankh": "ankh-base",
    "tiny_bert": "protbert",
}


def documented_ids(fixture: str, folder, sequence: str) -> list[int]:
    """Token ids as each family's own documentation tokenizes a sequence."""
    if fixture == "tiny_ankh":  # the checkpoint's tokenizer.json pipeline (it has no pre-tokenizer)
        return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(sequence).ids
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if fixture == "tiny_esm":
        return tokenizer(sequence)["input_ids"]
    spaced = " ".join(re.sub(r"[UZOB]", "X", sequence))  # ProtTrans: rare residues as X, space-separated
    return tokenizer(f"<AA2fold> {spaced}" if fixture == "tiny_prostt5" else spaced)["input_ids"]


@pytest.fixture(params=list(FAMILIES))
def family(request):
    """(fixture name, checkpoint folder, backbone loaded from it through the registry)."""
    folder = request.getfixturevalue(request.param)
    backbone = load_backbone(plugins.get("backbone", FAMILIES[request.param]), str(folder), "cpu")
    return request.param, folder, backbone.eval()


def test_no_standard_residue_is_unknown(family):
    _, _, backbone = family
    ids = backbone.tokenize([AMINO_ACIDS])["input_ids"][0].tolist()
    assert backbone.vocabulary.unknown not in ids
    assert len({backbone.vocabulary.ids[c] for c in AMINO_ACIDS}) == 20


def test_ids_follow_the_familys_documented_usage_and_outputs_drop_special_tokens(family):
    """Our ids are what the family's documented tokenization gives, and output i is the
    model's state at residue i's token (ESM <cls>, ProstT5 <AA2fold> in front; </s>, [SEP] after)."""
    fixture, folder, backbone = family
    model_class = T5EncoderModel if fixture in ("tiny_prott5", "tiny_prostt5", "tiny_ankh") else AutoModel
    model = model_class.from_pretrained(folder).eval()
    prefix = {"tiny_esm": 1, "tiny_prostt5": 1, "tiny_bert": 1}.get(fixture, 0)
    for sequence in SEQUENCES:
        expected = documented_ids(fixture, folder, sequence)
        assert backbone.tokenize([sequence])["input_ids"][0].tolist() == expected, sequence
        with torch.no_grad():
            states = model(input_ids=torch.tensor([expected])).last_hidden_state[0]
            residues = backbone.embed([sequence])
        assert residues.hidden.shape == (1, len(sequence), backbone.hidden_size)
        torch.testing.assert_close(residues.hidden[0], states[prefix:prefix + len(sequence)])


def test_attention_runs_through_pytorch_sdpa(family):
    """ESM2 and BERT pack (per-sequence SDPA, transformers' SDPA for padded calls); T5 pads."""
    fixture, _, backbone = family
    packed = fixture in ("tiny_esm", "tiny_bert")
    assert backbone.packs == packed
    assert backbone.model.config._attn_implementation == (PACKED_ATTENTION if packed else "sdpa")


def test_batched_equals_one_at_a_time(family):
    _, _, backbone = family
    with torch.no_grad():
        batched = backbone.embed(SEQUENCES)
        assert batched.mask.sum(1).tolist() == [len(s) for s in SEQUENCES]
        for row, sequence in enumerate(SEQUENCES):
            alone = backbone.embed([sequence]).hidden[0]
            torch.testing.assert_close(batched.hidden[row, : len(sequence)], alone, atol=1e-5, rtol=1e-4)


def test_rare_residues_follow_the_family(tiny_prott5, tiny_ankh, tiny_esm):
    """ProtT5 saw U/Z/O/B as X; Ankh and ESM2 have tokens of their own for them."""
    for folder, name, as_x in ((tiny_prott5, "prott5", True), (tiny_ankh, "ankh-base", False),
                               (tiny_esm, "esm2-8m", False)):
        vocabulary = load_backbone(plugins.get("backbone", name), str(folder), "cpu").vocabulary
        assert {vocabulary.ids[c] == vocabulary.ids["X"] for c in "UZOB"} == {as_x}, name
        assert all(vocabulary.ids[c] != vocabulary.unknown for c in "UZOBX")


def test_bad_residue_fails_naming_the_record(tiny_esm):
    backbone = load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu")
    with pytest.raises(BenchError, match=r"record P12345: .*'\*' at position 4"):
        backbone.embed(["MKT*A"], ["P12345"])


def test_long_sequence_chunks_into_aligned_outputs_or_fails_naming_the_record(tiny_esm):
    spec = plugins.get("backbone", "esm2-8m")
    sequence = "".join(AMINO_ACIDS[(7 * i) % 20] for i in range(3000))
    failing = load_backbone(spec, str(tiny_esm), "cpu")
    assert failing.max_length == 1024
    with pytest.raises(BenchError, match=r"record long-one has 3000 residues, more than .* 1024.*--long-policy chunk"):
        failing.embed([sequence], ["long-one"])

    chunked = load_backbone(spec, str(tiny_esm), "cpu", long_policy="chunk").eval()
    with torch.no_grad():
        out = chunked.embed([sequence, "MKV"], ["long-one", "short"])
        first_window = chunked.embed([sequence[:1024]]).hidden[0]
        last_window = chunked.embed([sequence[-1024:]]).hidden[0]
    assert out.hidden.shape[:2] == (2, 3000) and out.mask.sum(1).tolist() == [3000, 3]
    spans = chunk_spans(3000, 1024, 256)
    first_cut, last_cut = spans[0][3], spans[-1][2]
    torch.testing.assert_close(out.hidden[0, :first_cut], first_window[:first_cut])
    torch.testing.assert_close(out.hidden[0, last_cut:], last_window[last_cut - (3000 - 1024):])


@pytest.mark.parametrize(("length", "window", "overlap"), [(3000, 1024, 256), (1025, 1024, 256), (5000, 100, 30)])
def test_chunk_spans_tile_the_sequence(length, window, overlap):
    spans = chunk_spans(length, window, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(end - start <= window for start, end, _, _ in spans)
    assert all(a[1] - b[0] >= overlap - 1 for a, b in zip(spans, spans[1:], strict=False))
    kept = [i for _, _, keep_from, keep_to in spans for i in range(keep_from, keep_to)]
    assert kept == list(range(length))
    assert all(start <= keep_from < keep_to <= end for start, end, keep_from, keep_to in spans)
    assert chunk_spans(50, 1024, 256) == [(0, 50, 0, 50)]


def test_length_buckets_respect_the_budget_and_cover_every_index():
    lengths = [5, 300, 12, 7, 800, 12, 3, 40, 41, 5000]
    batches = length_buckets(lengths, max_residues=100, max_items=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)
    assert [lengths[i] for i in batches[0]] == [3, 5, 7]  # padded size 21 instead of 3 x 5000
    assert [9] in batches  # longer than the budget: alone
    shuffled = length_buckets(lengths, 100, 3, generator=torch.Generator().manual_seed(0))
    lengths_of = sorted(tuple(lengths[i] for i in b) for b in shuffled)  # one pool: the same groups, ties aside
    assert lengths_of == sorted(tuple(lengths[i] for i in b) for b in batches)
    assert shuffled == length_buckets(lengths, 100, 3, generator=torch.Generator().manual_seed(0))


def padded_positions(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_training_batches_are_length_grouped_seeded_and_differ_between_epochs():
    """training.batches: every example once per epoch in batches of exactly 8 (the last one
    excepted), the same batches for the same seed, other batches next epoch, and far less
    padding than batches drawn at random."""
    lengths = torch.randint(30, 1000, (1000,), generator=torch.Generator().manual_seed(3)).tolist()
    examples = [Example(f"r{i}", "A" * n, 0.0) for i, n in enumerate(lengths)]

    def epochs(seed: int) -> list[list[list[int]]]:
        generator = torch.Generator().manual_seed(seed)
        return [batches([len(e.sequence) for e in examples], 8, generator) for _ in range(2)]

    first, second = epochs(1)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(1000))
        assert sorted(len(b) for b in epoch) == [8] * 125
    assert epochs(1) == [first, second]
    assert first != second and epochs(2)[0] != first
    assert sorted(map(sorted, first)) != sorted(map(sorted, second))  # new groups, not just a new order
    at_random = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    random_batches = [at_random[i:i + 8] for i in range(0, 1000, 8)]
    assert padded_positions(first, lengths) < 1.1 * sum(lengths) < padded_positions(random_batches, lengths) / 1.3
    assert batches(lengths, 8) == length_buckets(lengths, None, 8)  # prediction: short to long, no shuffle


def test_precision_follows_family_limits(tiny_ankh, tiny_esm):
    with pytest.raises(BenchError, match=r"backbone ankh-base cannot run in fp16 .*use --dtype bf16"):
        load_backbone(plugins.get("backbone", "ankh-base"), str(tiny_ankh), "cpu", dtype="fp16")
    with pytest.raises(BenchError, match=r"backbone onehot cannot run in bf16"):
        load_backbone(plugins.get("backbone", "onehot"), None, "cpu", dtype="bf16")
    assert resolve_dtype("auto", ("fp32", "bf16"), "cpu", "x") == torch.float32
    backbone = load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu", dtype="bf16")
    assert {p.dtype for p in backbone.parameters()} == {torch.bfloat16}
    assert backbone.embed(["MKTAY"]).hidden.dtype == torch.bfloat16


def test_nan_activations_stop_the_run_naming_the_record(tiny_esm):
    backbone = load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu")
    with torch.no_grad():
        backbone.model.encoder.layer[0].intermediate.dense.weight.fill_(float("nan"))
    with pytest.raises(BenchError, match=r"NaN/inf activations in float32 for record\(s\) rec1, rec2: rerun"):
        backbone.embed(["MKTAY", "GGS"], ["rec1", "rec2"])


def test_random_init_builds_every_registered_architecture_offline():
    """--init random needs no files: each registry entry's architecture has exactly the
    parameter count the registry states (built on the meta device, so 15B costs nothing)."""
    for name, spec in plugins.catalog().items["backbone"].items():
        if spec.family in ("esm2", "t5-encoder", "bert", "onehot"):
            backbone = load_backbone(spec, None, "meta", init="random")
            assert sum(p.numel() for p in backbone.parameters()) == spec.parameters, name
            assert backbone.hidden_size == spec.hidden_size, name


@pytest.mark.parametrize("family", ["esm2", "t5-encoder", "bert"])
def test_random_init_embeds_and_depends_on_the_seed(family):
    arch = {"layers": 2, "hidden_size": 16, "heads": 2, "ffn_size": 32, "vocab_size": 40,
            "max_position_embeddings": 66, "d_kv": 8, "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 8, "relative_attention_max_distance": 32}
    spec = spec_from_entry("tiny", {"family": family, "parameters": 0, "dtypes": ["fp32"], "architecture": arch,
                                    "prefix": "<AA2fold>"} if family == "t5-encoder" else
                           {"family": family, "parameters": 0, "dtypes": ["fp32"], "architecture": arch})

    def embed(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return load_backbone(spec, None, "cpu", init="random").eval().embed([AMINO_ACIDS]).hidden

    first = embed(1)
    assert first.shape == (1, 20, 16)
    torch.testing.assert_close(first, embed(1))
    assert not torch.allclose(first, embed(2))


def test_a_third_party_loader_gets_the_one_signature():
    spec = plugins.get("backbone", "physchem")  # the example third-party plugin
    assert load_backbone(spec, None, "cpu").embed(["MKV"]).hidden.shape[:2] == (1, 3)
    with pytest.raises(BenchError, match="has no --init random"):
        load_backbone(spec, None, "cpu", init="random")


def test_a_loader_of_another_signature_is_one_line():
    old = dataclasses.replace(plugins.get("backbone", "physchem"), load=lambda source, device: None)
    with pytest.raises(BenchError, match=r"load\(\) does not take \(source, device, \*, dtype, init\)"):
        load_backbone(old, None, "cpu")


def test_embedding_a_split_fails_on_a_long_record_before_any_work(tiny_esm, monkeypatch):
    backbone = load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu")
    calls = []
    monkeypatch.setattr(backbone, "_run", calls.append)
    examples = [Example("short", "MKV", 0.0), Example("long", "A" * 1100, 0.0)]
    with pytest.raises(BenchError, match="record long has 1100 residues"):
        embed_all(backbone, examples, RunContext(data_dir=Path(".")))
    assert calls == []


def test_a_checkpoint_of_another_family_is_refused_not_filled_randomly(tiny_esm):
    with pytest.raises(BenchError, match=r"has no weights for \d+ tensors of BertModel .*not a bert checkpoint"):
        load_backbone(plugins.get("backbone", "protbert"), str(tiny_esm), "cpu")


def test_loading_weights_off_a_terminal_prints_no_progress_bar(tiny_esm, capfd):
    """Logs get plain lines: transformers' "Loading weights" bar (carriage returns) is off there,
    and as it was afterwards for whoever else uses transformers in the process."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    try:
        load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu")
        assert "Loading weights" not in capfd.readouterr().err
        assert transformers_logging.is_progress_bar_enabled()
    finally:
        if not before:
            transformers_logging.disable_progress_bar()


def test_long_policy_whole_embeds_past_esm2s_trained_length_in_one_pass_and_refuses_absolute_positions(
        tiny_esm, tiny_bert):
    """ESM2's positions are rotary: no table ends at 1024, so a whole protein runs in one pass, as the
    study's embedding notebook ran it (max_length=10000); BERT's absolute table cannot."""
    sequence = "".join(AMINO_ACIDS[(7 * i) % 20] for i in range(1500))
    whole = load_backbone(plugins.get("backbone", "esm2-8m"), str(tiny_esm), "cpu", long_policy="whole").eval()
    assert whole.max_length == 1024 and not whole.positions_limit
    with torch.no_grad():
        out = whole.embed([sequence, "MKV"], ["long-one", "short"])
        inputs = whole.tokenize([sequence])
        direct = whole.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    assert out.mask.sum(1).tolist() == [1500, 3]
    torch.testing.assert_close(out.hidden[0, :1500], direct[0, 1:1501], atol=1e-4, rtol=1e-4)  # <cls> first
    bert = load_backbone(plugins.get("backbone", "protbert"), str(tiny_bert), "cpu", long_policy="whole")
    assert bert.positions_limit
    with pytest.raises(BenchError, match=r"record long-one has 1500 residues; .*absolute positions stop at 126"):
        bert.embed([sequence], ["long-one"])
