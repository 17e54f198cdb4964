"""Leaderboard rows as conditions, seed CIs, paired deltas, cost, Pareto fronts, the study's
reference, exports and plots."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.results import leaderboard as lb
from plm_bench.results.intervals import mean_ci
from plm_bench.results.store import Store

T_975_2DF = 4.302652729911275  # t-distribution 97.5% quantile, 2 degrees of freedom (tables: 4.303)


def record(backbone, method, task, seed, value, seconds=10.0, memory=2**30, embed=0.0, **settings):
    config = {"backbone": backbone, "task": task, "method": method, "head": "mlp-protein", "seed": seed,
              "epochs": 1, "lr": 1e-3, "batch_size": 8, "backbone_path": None, **settings}
    return {
        "config": config, "config_hash": f"{abs(hash(json.dumps(config, sort_keys=True))):016x}"[:16],
        "status": "finished", "primary_metric": "spearman",
        "metrics": {"valid": {"spearman": value}, "test": {"spearman": value, "mse": 1 - value}},
        "cost": {"train_seconds": seconds, "embed_seconds": embed, "eval_seconds": 0.0,
                 "time_to_best_seconds": seconds, "total_seconds": embed + seconds + 1.0,
                 "train_samples_per_second": 1.0, "train_residues_per_second": 100.0,
                 "peak_memory": {"kind": "cuda", "allocated_bytes": memory, "reserved_bytes": memory},
                 "micro_batch": 8, "oom_backoffs": [], "dtype": "float32", "backbone_dtype": "bfloat16"},
        "environment": {}, "finished_at": "2026-11-25T00:00:00+00:00",
    }


RECORDS = [
    record("esm2-8m", "frozen", "gb1", 1, 0.80), record("esm2-8m", "frozen", "gb1", 2, 0.82),
    record("esm2-8m", "frozen", "gb1", 3, 0.84),
    record("esm2-8m", "full", "gb1", 1, 0.86, seconds=100, memory=4 * 2**30),
    record("esm2-8m", "full", "gb1", 2, 0.89, seconds=100, memory=4 * 2**30),
    record("esm2-8m", "full", "gb1", 3, 0.89, seconds=100, memory=4 * 2**30),
    record("onehot", "frozen", "gb1", 1, 0.30, seconds=20, memory=2**29),
]
FROZEN = ("esm2-8m", "frozen")


def test_seed_ci_uses_the_t_quantile_by_default_and_the_studys_rule_on_request():
    # values 0.80, 0.82, 0.84: mean 0.82, sample sd 0.02, n 3
    assert mean_ci([0.80, 0.82, 0.84]) == pytest.approx((0.82, T_975_2DF * 0.02 / math.sqrt(3)))
    assert mean_ci([0.80, 0.82, 0.84], "normal") == pytest.approx((0.82, 1.96 * 0.02 / math.sqrt(3)))
    # 5 seeds 1..5: sd sqrt(2.5), t(0.975, 4) = 2.776445105
    assert mean_ci([1, 2, 3, 4, 5])[1] == pytest.approx(2.776445105 * math.sqrt(2.5) / math.sqrt(5))
    assert mean_ci([0.5]) == (0.5, None)
    cell = lb.leaderboard(RECORDS).rows[FROZEN]["gb1"]
    assert (cell.mean, cell.half_width, cell.n) == pytest.approx((0.82, T_975_2DF * 0.02 / math.sqrt(3), 3))
    assert lb.leaderboard(RECORDS, ci="normal").rows[FROZEN]["gb1"].half_width == pytest.approx(
        1.96 * 0.02 / math.sqrt(3))
    single = lb.leaderboard(RECORDS).rows[("onehot", "frozen")]["gb1"]
    assert single.half_width is None and "±" not in str(single)


def test_runs_differing_in_init_limit_or_method_option_are_different_rows():
    runs = [record("esm2-8m", "lora", "gb1", s, 0.8 + s / 100) for s in (1, 2)]
    runs += [record("esm2-8m", "lora", "gb1", s, 0.5 + s / 100, init="random") for s in (1, 2)]
    runs += [record("esm2-8m", "lora", "gb1", s, 0.7, method_options={"rank": 8}) for s in (1, 2)]
    runs += [record("esm2-8m", "lora", "gb1", 1, 0.1, limit_train=100)]
    report = lb.leaderboard(runs)
    assert report.label_columns == ("init", "method_options", "limit_train")  # what varies, in RunConfig order
    assert set(report.rows) == {("pretrained", "—", "—"), ("random", "—", "—"), ("pretrained", "rank=8", "—"),
                                ("pretrained", "—", "100")}
    assert report.rows[("pretrained", "—", "—")]["gb1"].mean == pytest.approx(0.815)  # not pooled with the rest
    assert report.rows[("pretrained", "—", "100")]["gb1"].flags == ("smoke",)
    assert any("backbone = esm2-8m" in line and "method = lora" in line for line in report.caption)


def test_delta_init_pairs_pretrained_with_random_weights_of_the_same_settings():
    runs = [record("esm2-8m", "lora", "gb1", s, v) for s, v in ((1, 0.80), (2, 0.83), (3, 0.83))]
    runs += [record("esm2-8m", "lora", "gb1", s, v, init="random") for s, v in ((1, 0.50), (2, 0.52), (3, 0.54))]
    runs += [record("esm2-8m", "lora", "gb1", s, 0.9, epochs=5) for s in (1, 2)]  # no random run to pair with
    report = lb.delta(runs, "init")
    assert list(report.rows) == [("esm2-8m",)]  # the pretrained 1-epoch condition, the only one with a pair
    assert any("init = pretrained" in line and "epochs = 1" in line for line in report.caption)
    cell = report.rows[("esm2-8m",)]["gb1"]
    # paired differences 0.30, 0.31, 0.29: mean 0.30, sd 0.01
    assert cell.mean == pytest.approx(0.30)
    assert cell.half_width == pytest.approx(T_975_2DF * 0.01 / math.sqrt(3))
    assert cell.flags == ("gain",)
    # Figure 1: means 0.82 and 0.52 differ by 0.30, more than the CIs' sum 1.96 * (0.01732 + 0.02) / sqrt(3) = 0.042
    assert report.rows[("esm2-8m",)][f"gb1 ({lb.FIGURE1})"] == "+0.300 gain"


def test_delta_frozen_is_paired_over_seeds_and_labels_the_figure1_rule():
    report = lb.delta(RECORDS, "frozen")
    cell = report.rows[("esm2-8m",)]["gb1"]
    # paired differences 0.06, 0.07, 0.05: mean 0.06, sd 0.01
    assert cell.mean == pytest.approx(0.06)
    assert cell.half_width == pytest.approx(T_975_2DF * 0.01 / math.sqrt(3))
    assert cell.flags == ("gain",)
    # Figure 1, always the study's 1.96·SD/√n: 0.88 - 0.82 = 0.06 exceeds CI_full + CI_frozen
    # = 1.96 * (0.01732 + 0.02) / sqrt(3) = 0.042 (by the t rule, 0.043 + 0.050, it would not)
    assert report.rows[("esm2-8m",)][f"gb1 ({lb.FIGURE1})"] == "+0.060 gain"
    assert any("paired difference" in line and "Fig. 1 rule" in line for line in report.caption)
    normal = lb.delta(RECORDS, "frozen", ci="normal")
    assert normal.rows[("esm2-8m",)]["gb1"].half_width == pytest.approx(1.96 * 0.01 / math.sqrt(3))
    assert normal.rows[("esm2-8m",)][f"gb1 ({lb.FIGURE1})"] == "+0.060 gain"  # whatever --ci is


def test_delta_pairs_only_conditions_equal_in_everything_but_the_axis():
    runs = [r for r in RECORDS if r["config"]["method"] == "full"]
    runs += [record("esm2-8m", "frozen", "gb1", s, 0.8, limit_train=100) for s in (1, 2, 3)]  # other data
    with pytest.raises(BenchError, match="run `bench run --method frozen`"):
        lb.delta(runs, "frozen")


def test_delta_frozen_lets_each_method_keep_its_training_recipe():
    """The study trains frozen heads 50-240 epochs and fine-tunes 5-50: a method's epochs (and every
    other protocol setting, lr, options, head) are its own, so they pair; among several frozen
    candidates the one closest in those settings is the pair."""
    full = [r for r in RECORDS if r["config"]["method"] == "full"]
    frozen = [record("esm2-8m", "frozen", "gb1", s, 0.8, epochs=240) for s in (1, 2, 3)]
    report = lb.delta(full + frozen, "frozen")
    [row] = report.rows.values()
    assert row["gb1"].mean == pytest.approx((0.06 + 0.09 + 0.09) / 3)  # full 0.86, 0.89, 0.89 minus 0.8
    probe = [record("esm2-8m", "frozen", "gb1", s, 0.1, epochs=240, head="probe-mean") for s in (1, 2, 3)]
    [row] = lb.delta(full + frozen + probe, "frozen").rows.values()
    assert row["gb1"].mean == pytest.approx((0.06 + 0.09 + 0.09) / 3)  # the MLP head's twin, not the probe
    inner = [record("esm2-8m", "frozen", "gb1", s, 0.2, epochs=240, method_options={"layer": -2, "last_k": 1})
             for s in (1, 2, 3)]
    plain = [record("esm2-8m", "frozen", "gb1", s, 0.8, epochs=240, method_options={"layer": -1, "last_k": 1})
             for s in (1, 2, 3)]
    [row] = lb.delta(full + inner + plain, "frozen").rows.values()
    assert row["gb1"].mean == pytest.approx((0.06 + 0.09 + 0.09) / 3)  # the default layer, not an inner one
    ambiguous = full + [record("esm2-8m", "frozen", "gb1", s, 0.7, lr=lr) for s in (1, 2) for lr in (1e-4, 1e-2)]
    with pytest.raises(BenchError, match="differ in lr; pick one with --where"):  # equally close to full's 1e-3
        lb.delta(ambiguous, "frozen")


def test_smoke_runs_are_hidden_unless_asked_for_and_where_filters_any_setting():
    runs = RECORDS + [record("esm2-8m", "full", "gb1", 1, 0.1, limit_train=100, limit_eval=50)]
    shown, notes = lb.select(runs)
    assert len(shown) == len(RECORDS) and "1 smoke runs" in notes[0]
    assert len(lb.select(runs, include_smoke=True)[0]) == len(runs)
    only = lb.select(runs, lb.parse_where(["limit_train=100"]), include_smoke=True)[0]
    assert [r["config"]["limit_train"] for r in only] == [100]
    assert len(lb.select(runs, lb.parse_where(["lr=1e-3", "method=full"]))[0]) == 3
    assert len(lb.select(runs, backbone=["onehot"])[0]) == 1
    with pytest.raises(BenchError, match="--where nosuch: unknown setting; use one of backbone, task, .*, or a method "
                                         "option of the shown runs \\(they have none\\)"):
        lb.select(runs, lb.parse_where(["nosuch=1"]))
    with pytest.raises(BenchError, match="write FIELD=VALUE"):
        lb.parse_where(["lr"])
    with pytest.raises(BenchError, match="no stored run has backbone = esm2-3b; the store has: esm2-8m, onehot"):
        lb.select(runs, backbone=["esm2-3b"])
    with pytest.raises(BenchError, match="no stored run has epochs = 7; the store has: 1"):
        lb.select(runs, lb.parse_where(["epochs=7"]))


def test_where_takes_method_options():
    """``--where rank=8`` keeps the runs whose method has option rank = 8 (a method without the
    option has none, so ``rank=none`` picks those)."""
    runs = [record("esm2-8m", "lora", "gb1", 1, 0.5, method_options={"rank": 8}),
            record("esm2-8m", "lora", "gb1", 1, 0.6, method_options={"rank": 4}),
            record("esm2-8m", "frozen", "gb1", 1, 0.4)]
    assert [r["config"]["method_options"] for r in lb.select(runs, lb.parse_where(["rank=8"]))[0]] == [{"rank": 8}]
    assert [r["config"]["method"] for r in lb.select(runs, lb.parse_where(["rank=none"]))[0]] == ["frozen"]
    with pytest.raises(BenchError, match="no stored run has rank = 16; the store has: 4, 8, —"):
        lb.select(runs, lb.parse_where(["rank=16"]))


def test_delta_over_a_method_option_pairs_runs_equal_in_everything_else():
    """``--delta rank=4``: each rank's gain over rank 4 with the other options and settings equal
    (rank 8 at two lrs pairs with rank 4 at its own lr), seed by seed."""
    def lora(rank, seed, value, lr=1e-3):
        return record("esm2-8m", "lora", "gb1", seed, value, lr=lr, method_options={"rank": rank, "alpha": 1.0})

    runs = [lora(4, s, 0.5 + s / 100) for s in (1, 2, 3)] + [lora(8, s, 0.6 + s / 50) for s in (1, 2, 3)]
    runs += [lora(4, s, 0.1, lr=1e-4) for s in (1, 2)] + [lora(8, s, 0.3, lr=1e-4) for s in (1, 2)]
    report = lb.delta(runs, "rank=4")
    assert report.label_columns[0] == "rank" and "lr" in report.label_columns
    by_lr = {row[report.label_columns.index("lr")]: cells for row, cells in report.rows.items()}
    assert by_lr["0.001"]["gb1"].mean == pytest.approx(0.1 + 2 / 100)  # (0.6 + s/50) - (0.5 + s/100), mean s = 2
    assert by_lr["0.0001"]["gb1"].mean == pytest.approx(0.2)
    assert all(row[0] == "8" for row in report.rows)
    with pytest.raises(BenchError, match=r"--delta nosuch: unknown setting; use one of backbone, .* a method option of "
                                         r"the shown runs \(alpha, rank\)"):
        lb.delta(runs, "nosuch=1")


def test_by_leads_the_row_labels_and_unknown_fields_are_refused():
    report = lb.leaderboard(RECORDS, by=["head"])
    assert report.label_columns == ("head", "backbone", "method")
    with pytest.raises(BenchError, match="--by nosuch: unknown setting"):
        lb.leaderboard(RECORDS, by=["nosuch"])


def test_unknown_metric_names_what_exists_and_tasks_without_it_are_named():
    with pytest.raises(BenchError, match="no shown run has test metric 'nosuch'; they have: mse, spearman"):
        lb.leaderboard(RECORDS, "nosuch")
    other = record("esm2-8m", "frozen", "aav", 1, 0.5)
    other["metrics"]["test"].pop("mse")
    report = lb.leaderboard([*RECORDS, other], "mse")
    assert "tasks without mse: aav" in report.caption


def test_cost_includes_the_embedding_and_names_memory_kind_and_backbone_dtype():
    runs = [record("antiberty", "frozen", "gb1", 1, 0.5, seconds=1.0, embed=37.0),
            record("antiberty", "frozen", "gb1", 2, 0.6, seconds=1.2, embed=0.1),  # read the cache
            record("antiberty", "lora", "gb1", 1, 0.6, seconds=30.0)]
    report = lb.costs(runs)
    frozen = report.rows[("gb1", "frozen")]
    assert frozen["embed (s)"] == 37.0  # computed once; the second seed read the cache
    assert frozen["train (s)"] == pytest.approx(1.1)
    # per run without its own embedding: (1 + 1) and (1.2 + 1), mean 2.1, plus the embedding once
    assert frozen["total (s)"] == pytest.approx(37.0 + 2.1)
    assert frozen["time to best (s)"] == pytest.approx(37.0 + 1.1)
    assert frozen["memory kind"] == "GPU allocated" and frozen["backbone dtype"] == "bfloat16"
    front = lb.pareto(runs).rows  # total cost: the frozen embedding makes frozen dearer than LoRA here
    assert front[("gb1", "lora")]["on front"] == "yes" and front[("gb1", "frozen")]["on front"] == "no"
    assert lb.pareto(runs, "train (s)").rows[("gb1", "frozen")]["on front"] == "yes"


def test_pareto_front_marks_dominated_settings():
    rows = lb.pareto(RECORDS).rows
    assert rows[("gb1", "esm2-8m", "frozen")]["on front"] == "yes"  # cheapest
    assert rows[("gb1", "esm2-8m", "full")]["on front"] == "yes"  # best
    assert rows[("gb1", "onehot", "frozen")]["on front"] == "no"  # worse and dearer than frozen esm2
    with pytest.raises(BenchError, match="--cost-axis"):
        lb.pareto(RECORDS, "residues/s")


@pytest.fixture
def protocol_field(monkeypatch):
    """RunConfig's ``protocol`` setting (#12), stood in for where this checkout does not have it yet."""
    from dataclasses import dataclass, fields

    from plm_bench.config import RunConfig
    from plm_bench.results import records

    if "protocol" in {f.name for f in fields(RunConfig)}:
        return

    @dataclass(frozen=True)
    class WithProtocol(RunConfig):
        protocol: str = "harness"

    monkeypatch.setattr(lb, "config_fields", lambda: list(fields(WithProtocol)))
    monkeypatch.setattr(records, "config_of", lambda r: WithProtocol(
        **{k: v for k, v in r["config"].items() if k in {f.name for f in fields(WithProtocol)}}))


def test_reference_compares_only_study_protocol_runs_by_ci_overlap(protocol_field):
    study = [record("esm2-8m", m, "gb1", s, v, protocol="study") for m, vs in
             (("frozen", (0.80, 0.82, 0.84)), ("full", (0.70, 0.71, 0.72))) for s, v in enumerate(vs, 1)]
    study += [record("esm2-3b", "frozen", "gb1", 1, 0.8, protocol="study")]
    report = lb.leaderboard(study + RECORDS, reference=True, by=["backbone", "method", "protocol"])
    # the study: ESM2 8M frozen embeddings on GB1 0.818 ± 0.0041 (5 seeds); full fine-tuning 0.883 ± 0.0095 (3)
    frozen = report.rows[("esm2-8m", "frozen", "study")]
    assert frozen["gb1 (study)"] == "0.818 ± 0.004 (n=5)"
    assert frozen["gb1"].flags == ("study n=5",)  # CIs overlap; 3 seeds against the study's 5
    full = report.rows[("esm2-8m", "full", "study")]
    assert full["gb1"].flags == ("outside study CI",)  # 0.71 ± 0.011 (1.96·SD/√n) misses 0.883 ± 0.0095
    assert report.rows[("esm2-3b", "frozen", "study")]["gb1 (study)"].endswith("(n=5, best test epoch)")
    assert report.rows[("esm2-8m", "frozen", "harness")]["gb1 (study)"] is None  # other protocol: not compared
    assert any("best test epoch" in line for line in report.caption)


def test_runs_on_a_test_subset_or_deduplicated_data_are_rows_of_their_own_and_not_the_studys():
    full = [record("esm2-8m", "frozen", "gb1", s, v, protocol="study") for s, v in ((1, 0.80), (2, 0.82))]
    far = [record("esm2-8m", "frozen", "gb1", s, v, protocol="study", max_identity=0.5)
           for s, v in ((1, 0.5), (2, 0.6))]
    deduped = [record("esm2-8m", "frozen", "gb1", 1, 0.79, protocol="study", dedup=True)]
    report = lb.leaderboard(full + far + deduped, reference=True)
    assert report.label_columns == ("dedup", "max_identity")
    assert report.rows[("False", "—")]["gb1"].mean == pytest.approx(0.81)
    assert report.rows[("False", "0.5")]["gb1"].mean == pytest.approx(0.55)  # never pooled with all of test
    assert report.rows[("False", "—")]["gb1 (study)"] == "0.818 ± 0.004 (n=5)"
    assert report.rows[("False", "0.5")]["gb1 (study)"] is None and report.rows[("True", "—")]["gb1 (study)"] is None


def test_exports_carry_numbers_and_the_caption():
    report = lb.leaderboard(RECORDS)
    markdown = lb.render(report, "md")
    assert "| esm2-8m | frozen | 0.820 ± 0.050 (n=3) |" in markdown and "head = mlp-protein" in markdown
    rows = list(csv.DictReader(io.StringIO(lb.render(report, "csv"))))
    assert list(rows[0])[:3] == ["backbone", "method", "gb1 mean"]
    half = T_975_2DF * 0.02 / math.sqrt(3)
    assert float(rows[0]["gb1 mean"]) == pytest.approx(0.82)
    assert float(rows[0]["gb1 ci_low"]) == pytest.approx(0.82 - half)
    assert float(rows[0]["gb1 ci_high"]) == pytest.approx(0.82 + half) and rows[0]["gb1 n"] == "3"
    assert rows[2]["gb1 ci_low"] == ""  # one seed: no interval
    data = json.loads(lb.render(report, "json"))
    cell = data["rows"][0]["gb1"]
    assert (cell["mean"], cell["ci_low"], cell["ci_high"]) == pytest.approx((0.82, 0.82 - half, 0.82 + half))
    assert (cell["n"], cell["flags"]) == (3, [])
    assert data["caption"] == report.caption


def test_html_is_a_self_contained_styled_page_marking_the_best():
    page = lb.render(lb.leaderboard(RECORDS), "html")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "http" not in page and "<link" not in page and "<script" not in page  # nothing fetched
    assert "text-align: right" in page and "tabular-nums" in page
    best = [line for line in page.splitlines() if 'class="num best"' in line]
    assert len(best) == 1 and "<td class=\"label\">full</td>" in best[0]  # 0.880 is the best of the column
    assert '<span class="ci">± 0.050</span>' in page


def test_heatmap_keeps_title_and_labels_inside_the_image(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    import numpy as np

    report = lb.leaderboard([*RECORDS, record("a-backbone-with-a-very-long-name-indeed", "frozen", "gb1", 1, 0.5)])
    report.title = "a long title that would run off the figure " * 4
    lb.heatmap(report, tmp_path / "map.png")
    pixels = image.imread(tmp_path / "map.png")[..., :3]
    border = np.concatenate([pixels[:4].reshape(-1, 3), pixels[-4:].reshape(-1, 3),
                             pixels[:, :4].reshape(-1, 3), pixels[:, -4:].reshape(-1, 3)])
    assert (border > 0.99).all()  # white all round: no text or cell is cut at an edge
    assert (pixels < 0.5).any()  # and something was drawn


def test_cli_leaderboard_formats_filters_plot_and_errors(store_path, tmp_path):
    store = Store(store_path)
    for r in [*RECORDS, record("esm2-8m", "full", "gb1", 1, 0.1, limit_train=100)]:
        store.add(r)
    runner = CliRunner()
    md = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--format", "md"])
    assert md.exit_code == 0, md.output
    assert "0.820 ± 0.050 (n=3)" in md.output and "1 smoke runs" in md.output and "0.100" not in md.output
    smoke = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--smoke", "--format", "md"])
    assert "0.100 (n=1) smoke" in smoke.output
    only = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--where", "backbone=onehot",
                                "--format", "csv"])
    assert "esm2-8m" not in only.output and "0.3" in only.output
    png = tmp_path / "out.png"
    plotted = runner.invoke(main, ["leaderboard", "--store", str(store_path), "--plot", str(png)])
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    for flags in (["--delta", "frozen"], ["--cost"], ["--pareto"], ["--reference"], ["--ci", "normal"]):
        result = runner.invoke(main, ["leaderboard", "--store", str(store_path), *flags], terminal_width=250)
        assert result.exit_code == 0, (flags, result.output)
    for flags, message in ((["--metric", "nosuch"], "they have: mse, spearman"),
                           (["--where", "nosuch=1"], "--where nosuch: unknown setting"),
                           (["--delta", "nosuch=1"], "unknown setting"),
                           (["--task", "aav"], "the store has: gb1")):
        result = runner.invoke(main, ["leaderboard", "--store", str(store_path), *flags])
        assert result.exit_code == 2 and message in result.output, (flags, result.output)
        assert len(result.output.strip().splitlines()) == 1

