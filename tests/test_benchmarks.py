"""The benchmark scripts: the notebook baseline is faithful to the study's notebooks, and each script
runs on a tiny configuration with real data, prints its ratio and passes its outputs-equal check
(which fails when the fast path computes something else)."""

from __future__ import annotations

import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO
from transformers import AutoTokenizer, EsmModel

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their shared module as run from there

import cpu_peak  # noqa: E402
import embedding_throughput  # noqa: E402
import finetune_throughput  # noqa: E402
import frozen_seeds  # noqa: E402
import memory_envelope  # noqa: E402
import notebook_baseline  # noqa: E402

from plm_bench.errors import BenchError  # noqa: E402
from plm_bench.tasks.task import Example  # noqa: E402


def run(command, *args: str):
    return CliRunner().invoke(command, list(args), catch_exceptions=False, terminal_width=200)


@pytest.fixture(scope="module")
def backbone(tiny_esm):
    return notebook_baseline.load("esm2-8m", backbone_path=str(tiny_esm), init="pretrained", device="cpu")


def test_notebook_split_is_the_tokenizers_whole_split_padding(tiny_esm, backbone):
    sequences = ["MKTAYIAK", "MK", "ACDEFGHIKLMNPQRSTVWY"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_esm)
    expected = tokenizer(sequences, max_length=1024, padding=True, truncation=True, return_tensors="pt")
    split = notebook_baseline.NotebookSplit(backbone, [Example(str(i), s, 0.0) for i, s in enumerate(sequences)])
    assert torch.equal(split.input_ids, expected["input_ids"])  # every row as wide as the split's longest
    assert torch.equal(split.attention_mask, expected["attention_mask"])
    rows = [Example(str(i), s, 0.0) for i, s in enumerate(sequences)]
    assert notebook_baseline.NotebookSplit(backbone, rows, split_longest=50).input_ids.shape[1] == 52  # + cls, eos
    assert notebook_baseline.NotebookSplit(backbone, rows, split_longest=5000).input_ids.shape[1] == 1024  # truncated


def test_notebook_embedding_is_the_models_output_on_the_sequence_alone(tiny_esm, backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_esm)
    model = EsmModel.from_pretrained(tiny_esm, add_pooling_layer=False).eval()
    with torch.no_grad():
        out = model(**tokenizer("MKTAYIAKQR", return_tensors="pt", padding=False)).last_hidden_state[0, 1:-1]
    assert torch.allclose(notebook_baseline.notebook_embed(backbone, ["MKTAYIAKQR"])[0], out, atol=1e-6)


def test_records_the_notebooks_would_truncate_are_refused_by_name(backbone):
    long = Example("P12345", "A" * 1023, 0.0)  # 1023 residues + <cls> + <eos> > 1024 tokens
    with pytest.raises(BenchError, match="record P12345 .* truncate at 1024"):
        notebook_baseline.NotebookSplit(backbone, [long])


def test_saved_random_esm_loads_as_the_same_weights(tmp_path):
    folder = notebook_baseline.save_random_esm("esm2-8m", tmp_path / "weights")
    saved = notebook_baseline.load("esm2-8m", backbone_path=str(folder), init="pretrained", device="cpu")
    drawn = notebook_baseline.load("esm2-8m", backbone_path=None, init="random", device="cpu")
    assert saved.vocabulary == drawn.vocabulary
    assert saved.model.config.attention_probs_dropout_prob == saved.model.config.hidden_dropout_prob == 0.0
    with torch.no_grad():  # eval: a freshly built model is in training mode, dropout on
        assert torch.equal(saved.eval().embed(["MKTAYIAK"]).hidden, drawn.eval().embed(["MKTAYIAK"]).hidden)


def test_embedding_script_reports_its_ratio_and_equal_outputs(tiny_esm, data_dir):
    result = run(embedding_throughput.main, "--backbone-path", str(tiny_esm), "--init", "pretrained",
                 "--data-dir", str(data_dir), "--per-task", "3", "--max-residues", "300", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert "ratio ours/notebook:" in result.output and "outputs equal: yes" in result.output
    assert "packed" in result.output and "MFU ours:" in result.output and "measured GEMM peak" in result.output


def test_embedding_check_fails_when_the_fast_path_computes_something_else(tiny_esm, data_dir, monkeypatch):
    embed_all = embedding_throughput.embed_all
    monkeypatch.setattr(embedding_throughput, "embed_all", lambda *a, **k: [t + 1e-2 for t in embed_all(*a, **k)])
    result = run(embedding_throughput.main, "--backbone-path", str(tiny_esm), "--init", "pretrained",
                 "--data-dir", str(data_dir), "--per-task", "2", "--max-residues", "200", "--repeats", "1")
    assert result.exit_code == 1 and "outputs equal: NO" in result.output


def test_frozen_script_reports_its_ratio_and_equal_metrics(tiny_esm, data_dir):
    result = run(frozen_seeds.main, "--backbone-path", str(tiny_esm), "--data-dir", str(data_dir), "--seeds", "2",
                 "--limit-train", "12", "--limit-eval", "6", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "ratio notebook/ours:" in result.output and "outputs equal: yes" in result.output
    assert "(cache read)" in result.output


def test_finetune_script_reports_both_methods_with_equal_gradients(tiny_esm, data_dir):
    result = run(finetune_throughput.main, "--backbone-path", str(tiny_esm), "--init", "pretrained",
                 "--data-dir", str(data_dir), "--records", "6", "--batch-size", "2", "--max-residues", "200",
                 "--repeats", "1")
    assert result.exit_code == 0, result.output
    for method in ("lora", "full"):
        assert f"{method}: ratio ours/notebook" in result.output
    assert result.output.count("outputs equal: yes") == 2


def test_memory_script_compares_full_and_lora(tiny_esm):
    result = run(memory_envelope.main, "--backbone-path", str(tiny_esm), "--init", "pretrained",
                 "--length", "32", "--budget", "0.5", "--max-length", "64")
    assert result.exit_code == 0, result.output
    assert "32 residues" in result.output and "longest in 0.5 GiB" in result.output
    assert "outputs equal: yes" in result.output


def test_cpu_peak_measures_both_precisions_and_mfu_divides_by_it(monkeypatch):
    result = run(cpu_peak.main, "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert "fp32" in result.output and "bf16" in result.output and "GFLOP/s" in result.output
    rate, size = cpu_peak.gemm_peak("cpu", torch.float32)
    assert rate > 1e8 and size in cpu_peak.SIZES["cpu"]  # a real rate: even a loaded 2-core VM does > 0.1 GFLOP/s
    monkeypatch.setattr(cpu_peak, "gemm_peak", lambda device, dtype: (100e9, 1024))
    assert cpu_peak.mfu(30e9, 0.5, "cpu", torch.float32) == "60.0%"  # 60 GFLOP/s of a 100 GFLOP/s peak


def test_the_notebook_side_runs_transformers_attention_as_shipped(tiny_esm):
    loaded = notebook_baseline.load("esm2-8m", backbone_path=str(tiny_esm), init="pretrained", device="cpu")
    assert loaded.packs  # the harness packs ESM2 ...
    shipped = notebook_baseline.as_shipped(loaded)
    assert not shipped.packs and shipped.model.config._attn_implementation == "sdpa"  # ... the notebooks did not
