"""The benchmark scripts: the notebook baseline is faithful to the study's notebooks, and each script
runs on a tiny configuration with real data, prints its ratio and passes its outputs-equal check
(which fails when the fast path computes something else)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import REPO
from transformers import AutoTokenizer, EsmModel

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their shared module as run from there

import cpu_peak  # noqa: E402
import device_check  # noqa: E402
import embedding_throughput  # noqa: E402
import finetune_throughput  # noqa: E402
import frozen_head_speed  # noqa: E402
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


def test_frozen_head_script_smoke_reports_both_conditions_with_equal_metrics(data_dir):
    result = run(frozen_head_speed.main, "--smoke", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    for condition in ("idle", "one core busy"):
        assert f"{condition}: cell ratio today/ours:" in result.output
        assert f"{condition}: head step ours/floor:" in result.output
    assert "outputs equal: yes" in result.output and "load " in result.output


def test_frozen_head_script_fails_when_the_fast_path_computes_something_else(data_dir, monkeypatch):
    from plm_bench_plugins.mlp import MLP

    forward_stacked = MLP.forward_stacked
    monkeypatch.setattr(MLP, "forward_stacked", lambda self, *args: forward_stacked(self, *args) * 1.5)
    result = run(frozen_head_speed.main, "--smoke", "--data-dir", str(data_dir))
    assert result.exit_code == 1 and "outputs equal: NO" in result.output


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


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_device_check_smoke_writes_every_section_from_the_measurements(tmp_path):
    """The CI run of the GPU check: the shell entry point on CPU with tiny checkpoints. Every
    figure is finite and positive and agrees with the measurement it comes from."""
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "[device-check" in done.stdout and "envelope probe" in done.stdout  # progress as it goes
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["smoke"] and report["complete"]
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["device_type"] == "cpu"
    peak = report["gemm_peak"]["flops_per_second"]
    assert positive(peak) and report["gemm_peak"]["dtype"] == "float32"
    plan = device_check.SMOKE_PLAN
    budgets = dict(zip(device_check.budget_labels(plan), plan.budget_bytes(), strict=True))
    assert list(budgets) == ["8 MiB", "16 MiB", "24 MiB"]  # the study's 8/16/24 GiB, scaled and labelled
    assert list(report["backbones"]) == list(device_check.SMOKE_CHECKPOINTS)
    for name, section in report["backbones"].items():
        assert positive(section["parameters"]) and positive(section["seconds"]), name
        assert 0 < section["trainable"]["lora"] < section["trainable"]["full"], name
        rates = [section["embedding"], section["finetune"]["full"], section["finetune"]["lora"]]
        for rate in rates:
            assert all(positive(rate[k]) for k in ("residues_per_second", "flops_per_second", "mfu", "seconds"))
            assert rate["residues_per_second"] == pytest.approx(
                rate["batch_size"] * rate["length"] * rate["steps"] / rate["seconds"])
            assert rate["mfu"] == pytest.approx(rate["flops_per_second"] / peak)  # against the measured peak
        assert [r["mode"] for r in rates] == ["inference", "train", "train"]
        assert section["finetune"]["lora_over_full"] == pytest.approx(
            rates[2]["residues_per_second"] / rates[1]["residues_per_second"])
        for method in device_check.METHODS:
            memory = section["memory"][method]
            peaks = {int(n): p for n, p in memory["peaks_bytes"].items()}
            assert peaks and all(p is not None and p >= 0 for p in peaks.values())
            for label, budget in budgets.items():
                longest = memory["longest"][label]
                assert positive(longest) and longest <= memory["cap"] == plan.cap
                assert peaks[longest] <= budget  # the length reported was measured within the budget
                over = [n for n, p in peaks.items() if n > longest and p > budget]
                assert memory["limit"][label] == ("cap" if longest == plan.cap else "memory")
                if memory["limit"][label] == "memory":  # ... and one at most a resolution step longer was not
                    assert over and min(over) - longest <= memory["resolution"]
    markdown = (tmp_path / "device_check.md").read_text()
    assert "**Smoke run**" in markdown and "MiB" in markdown
    assert "| backbone | weights, dtype | parameters | embedding | full fine-tuning | LoRA | LoRA/full |" in markdown
    assert "| backbone | full 8 MiB | full 16 MiB | full 24 MiB | LoRA 8 MiB | LoRA 16 MiB | LoRA 24 MiB |" in markdown
    for name in device_check.SMOKE_CHECKPOINTS:
        assert markdown.count(f"| {name} |") == 2  # a throughput row and an envelope row
    assert "0.87x for esm2-8m, 4.47x for esm2-3b" in markdown and "Schmirler" in markdown
    runs = report["precision"]["runs"]  # ESM2 on disorder under the study protocol, once per precision
    assert report["precision"]["settings"]["protocol"] == "study" and list(runs) == list(device_check.PRECISIONS)
    for name, run in runs.items():
        assert run["precision"]["compute"] == name and run["precision"]["trainable"] == "float32", run
        assert len(run["valid_loss"]) == len(run["train_loss"]) > 0 and positive(run["wall_seconds"])
        assert -1 <= run["test_spearman"] <= 1 and markdown.count(f"| {name} | ") == 1


def test_device_check_envelope_cells_say_what_stopped_the_search():
    memory = {"longest": {"8 GiB": 0, "16 GiB": 448, "24 GiB": 1024},
              "limit": {"8 GiB": "none fits", "16 GiB": "memory", "24 GiB": "cap"},
              "peaks_bytes": {"64": None, "448": 10 * 1024**3, "512": None, "1024": 20 * 1024**3}}
    assert [device_check.longest_cell(memory, b) for b in memory["longest"]] == ["< 64", "448", "≥ 1024 (cap)"]


def test_device_check_skips_a_backbone_its_time_budget_cannot_hold_and_says_so():
    # 60 s for esm2-650m's 649,400,981 parameters -> esm2-3b's 2,832,444,321 take 60 * 4.3617 s
    assert device_check.estimate("esm2-3b", {}) is None  # the first backbone always runs
    assert device_check.estimate("esm2-3b", {"esm2-650m": 60.0}) == pytest.approx(261.70, abs=0.01)
    report = {"smoke": False, "complete": True, "elapsed_seconds": 400.0,
              "machine": {"name": "NVIDIA H200", "memory_bytes": 140 * 1024**3, "torch": "2.11", "cuda": "13.0",
                          "transformers": "5.17", "peft": "0.18", "device_type": "cuda"},
              "settings": {**device_check.dataclasses.asdict(device_check.GPU_PLAN)},
              "gemm_peak": {"dtype": "bfloat16", "flops_per_second": 7.5e14, "size": 8192},
              "study_reference": device_check.STUDY_FIGURE_5A,
              "backbones": {"esm2-3b": {"skipped": "time budget: 300 s spent | about 262 s more\nneeded"}}}
    markdown = device_check.markdown(report)
    assert "| esm2-3b | time budget: 300 s spent / about 262 s more needed | | | | | | |" in markdown
    assert "NVIDIA H200, 140 GiB; torch 2.11, CUDA 13.0" in markdown and "750 TFLOP/s (bfloat16, 8192³" in markdown


def test_device_check_refuses_in_one_line_without_an_output_folder_or_a_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("OUT", raising=False)
    result = CliRunner().invoke(device_check.main, ["--smoke"])
    assert result.exit_code == 1 and result.output == "Error: no output folder: give --out DIR or set $OUT\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(device_check.main, [], env={"OUT": str(tmp_path)})
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "needs a CUDA GPU" in result.output
    result = CliRunner().invoke(device_check.main, ["--smoke", "--out", str(tmp_path), "--backbone", "esm2-3b"])
    assert result.exit_code == 1 and "the smoke run has esm2-650m, prott5, ankh-large" in result.output
    assert not list(tmp_path.iterdir())  # refused before any work
