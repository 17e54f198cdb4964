"""`bench profile`: model FLOPs by hand, a CPU memory meter that sees a known allocation, the
longest-length search against a known memory curve, and the command end to end on a tiny ESM2."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.measure import profiler as profile
from plm_bench.measure.memory import MemoryMeter
from plm_bench.measure.profiler import GIB, Profiler, model_flops, profile_config
from plm_bench.results import profiles
from plm_bench.results.store import Store

MIB = 1024**2


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


@pytest.fixture(scope="module")
def lora(tiny_esm) -> Profiler:
    return Profiler(profile_config("esm2-8m", "lora", backbone_path=str(tiny_esm), dtype="fp32"), torch.device("cpu"))


def test_model_flops_count_forward_and_the_gradients_that_train():
    assert model_flops(10, 5, "inference", full=False) == 100  # 2 * 10 * 5
    assert model_flops(10, 5, "train", full=True) == 300  # + activation and weight gradients
    assert model_flops(10, 5, "train", full=False) == 200  # adapters: no weight gradients of frozen weights


def test_bf16_peaks_match_device_names_most_specific_first(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert profile.bf16_peak_flops(torch.device("cuda")) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert profile.bf16_peak_flops(torch.device("cuda")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L40S")
    assert profile.bf16_peak_flops(torch.device("cuda")) == 362e12
    assert profile.bf16_peak_flops(torch.device("cpu")) is None


def near(measured: int, expected: int) -> bool:
    """Within the kernel's RSS accounting (counted per thread, synced every 64 pages) and small
    allocations around the work."""
    return expected - MIB <= measured <= expected + 16 * MIB


def test_cpu_meter_counts_what_the_work_holds_and_allocates_not_the_rest_of_the_process():
    held = torch.ones(32 * MIB // 4)  # 32 MiB the measured model holds between steps: counted
    meter = MemoryMeter(torch.device("cpu"), held=lambda: held.nbytes)
    unrelated = torch.ones(128 * MIB // 4)  # resident, not the work's, freed before the next measurement
    assert near(meter.measure(lambda: torch.ones(64 * MIB // 4).sum()), 96 * MIB)
    del unrelated
    assert near(meter.measure(lambda: torch.ones(64 * MIB // 4).sum()), 96 * MIB)
    assert near(meter.measure(lambda: None), 32 * MIB)


def test_held_bytes_are_weights_gradients_and_optimizer_state(lora):
    lora.rate("train", batch_size=1, length=8, steps=1)  # creates gradients and AdamW state
    trainable = sum(p.numel() * p.element_size() for p in lora.model.trainable_parameters())
    everything = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                  for m in (lora.backbone, lora.model) for t in (*m.parameters(), *m.buffers())}
    counters = 8 * len(lora.model.trainable_parameters())  # AdamW's step count per tensor, at most 8 bytes
    expected = sum(everything.values()) + 3 * trainable  # + gradient, exp_avg, exp_avg_sq
    assert expected <= lora.held_bytes() <= expected + counters


def test_rate_counts_residues_and_model_flops(lora):
    rate = lora.rate("train", batch_size=2, length=16, steps=2)
    assert rate.residues_per_second == pytest.approx(2 * 16 * 2 / rate.seconds)
    tokens = 2 * (16 + 2)  # <cls> and <eos> around each sequence
    assert rate.flops_per_second == pytest.approx(2 * 2 * lora.parameters * tokens * 2 / rate.seconds)
    assert rate.mfu is None  # no bf16 peak on CPU


def test_peak_of_a_training_step_grows_with_length(lora):
    assert lora.peak(512) > lora.peak(16) > 0


def curve(n: int, mode: str | None = None) -> int | None:
    """A known memory curve: 10_000 + n^2 bytes, out of memory past 900 residues."""
    return None if n > 900 else 10_000 + n * n


def test_search_finds_the_longest_length_of_a_known_memory_curve(lora, monkeypatch):
    probes: list[int] = []
    monkeypatch.setattr(lora, "peak", curve)
    envelope = lora.envelope([50_000, 260_000, 10**9], max_length=1000, resolution=8, start=16,
                             on_probe=lambda n, peak: probes.append(n))
    # by hand: 10_000 + n^2 <= 50_000 up to n = 200, <= 260_000 up to n = 500; 900 is the last that runs
    assert envelope.longest[50_000] <= 200 < envelope.longest[50_000] + 8
    assert envelope.longest[260_000] <= 500 < envelope.longest[260_000] + 8
    assert envelope.longest[10**9] <= 900 < envelope.longest[10**9] + 8
    assert len(probes) == len(set(probes))  # each length measured once, shared by the budgets


def test_search_never_overshoots_a_budget_by_more_than_one_resolution_step(lora, monkeypatch):
    probes: list[int] = []
    monkeypatch.setattr(lora, "peak", curve)
    budget, resolution = 260_000, 8
    lora.envelope([budget], max_length=1000, resolution=resolution, start=16, on_probe=lambda n, p: probes.append(n))
    for i, n in enumerate(probes[1:], start=1):
        longest_so_far = max(probes[:i])
        if n > longest_so_far:  # a growth step, taken from the longest length that fitted
            assert curve(n) <= budget * (1 + resolution / longest_so_far) ** 2


def test_lengths_past_the_cap_are_never_tried(lora, monkeypatch):
    probes: list[int] = []
    monkeypatch.setattr(lora, "peak", curve)
    envelope = lora.envelope([10**9], max_length=300, resolution=8, on_probe=lambda n, p: probes.append(n))
    assert envelope.longest[10**9] == 300 and max(probes) == 300


def test_budget_beyond_the_free_memory_is_one_error(lora):
    with pytest.raises(BenchError, match="more than the .* GiB this host has free"):
        lora.envelope([10_000 * GIB], max_length=64)


def test_profile_command_prints_throughput_and_envelope_and_plots(tiny_esm, tmp_path):
    plot = tmp_path / "envelope.png"
    result = invoke("profile", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--device", "cpu",
                    "--batch-size", "2", "--length", "16", "--steps", "1", "--budget", "0.5",
                    "--max-length", "128", "--plot", str(plot), "--store", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "inference" in result.output and "residues/s" in result.output
    assert "≥ 128 (the length cap, not memory)" in result.output  # a tiny model fits its cap in 0.5 GiB
    assert plot.stat().st_size > 0


def test_frozen_profiles_inference_only(tiny_esm, tmp_path):
    result = invoke("profile", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--method", "frozen",
                    "--device", "cpu", "--batch-size", "1", "--length", "8", "--steps", "1", "--no-envelope",
                    "--store", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 0, result.output
    assert "inference" in result.output and "│ train" not in result.output


def test_plot_without_envelope_is_one_line_error(tiny_esm, tmp_path):
    result = invoke("profile", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--device", "cpu",
                    "--no-envelope", "--plot", "x.png", "--store", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 2
    assert "--plot draws the memory envelope" in result.output and "Traceback" not in result.output


def test_profile_command_stores_a_validated_entry_of_what_it_measured(tiny_esm, tmp_path, lora):
    path = tmp_path / "s.sqlite"
    result = invoke("profile", "--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--device", "cpu",
                    "--batch-size", "2", "--length", "16", "--steps", "3", "--budget", "0.004", "--budget", "0.05",
                    "--max-length", "256", "--resolution", "64", "--store", str(path))
    assert result.exit_code == 0, result.output
    [stored] = Store(path, read_only=True).profiles()  # validated on read
    assert f"stored as profile {stored['profile_id']} in {path}" in result.output
    assert (stored["backbone"], stored["backbone_path"], stored["method"], stored["init"], stored["dtype"]) == \
        ("esm2-8m", str(tiny_esm), "lora", "pretrained", "float32")
    assert stored["device"].startswith("CPU (") and stored["environment"]["torch"] == torch.__version__
    assert [r["mode"] for r in stored["rates"]] == ["train", "inference"]
    for rate in stored["rates"]:
        assert (rate["batch_size"], rate["length"], rate["steps"]) == (2, 16, 3)
        assert rate["residues_per_second"] == pytest.approx(2 * 16 * 3 / rate["seconds"])
        assert rate["mfu"] is None and stored["peak_flops_per_second"] is None  # no bf16 peak on CPU
    peft_trainable, peft_total = lora.model.backbone.model.get_nb_trainable_parameters()  # peft's own count
    head = sum(p.numel() for p in lora.model.head.parameters())
    assert stored["parameters"] == {"trainable": peft_trainable + head, "total": peft_total + head}
    envelope = stored["envelope"]
    assert (envelope["step"], envelope["memory"], envelope["max_length"], envelope["resolution"]) == \
        ("train", "process_rss", 256, 64)
    assert [b["bytes"] for b in envelope["budgets"]] == [int(0.004 * GIB), int(0.05 * GIB)]
    peaks = {p["length"]: p["bytes"] for p in envelope["peaks"]}
    for budget in envelope["budgets"]:  # each longest is the longest probed length whose peak fits
        fitting = [n for n, peak in peaks.items() if peak is not None and peak <= budget["bytes"]]
        assert budget["longest"] == max(fitting, default=0)
        shown = profiles.longest_text(budget["longest"], 256, 64)
        assert re.search(rf"│ {budget['bytes'] / GIB:g} +│ {re.escape(shown)} ", result.output)  # as printed


def test_a_reprofile_adds_a_row_and_a_frozen_one_hot_profile_counts_its_head(tmp_path):
    path = tmp_path / "s.sqlite"
    arguments = ("profile", "--backbone", "onehot", "--method", "frozen", "--device", "cpu", "--batch-size", "1",
                 "--length", "8", "--steps", "1", "--store", str(path))
    assert invoke(*arguments, "--no-envelope").exit_code == 0
    assert invoke(*arguments, "--budget", "0.05", "--max-length", "128").exit_code == 0
    first, second = Store(path, read_only=True).profiles()
    assert first["envelope"] is None and second["envelope"]["step"] == "inference"
    assert [r["mode"] for r in second["rates"]] == ["inference"]
    head = 21 * 32 + 32 + 32 + 1  # one-hot of 20 residues + unknown -> Dense(32) -> 1 output; no backbone weights
    assert second["parameters"] == {"trainable": head, "total": head}
