"""The study's training logs (../shared/datasets/study-logs/training_logs.zip) as a reference:
the reader against the raw CSVs, the published values against the logs, and every schedule of
the study protocol against the log files it cites, so they cannot drift from the runs again."""

from __future__ import annotations

import csv
import io
import itertools
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.results import leaderboard as lb
from plm_bench.results import study_logs as sl


@pytest.fixture(scope="module")
def logs(data_dir) -> dict:
    return sl.load(sl.logs_path(data_dir))


def raw(data_dir: Path, member: str) -> list[dict]:
    with zipfile.ZipFile(data_dir / "study-logs" / "training_logs.zip") as archive:
        return list(csv.DictReader(io.StringIO(archive.read(sl.ROOT + member).decode())))


def test_the_acceptance_condition_gives_each_rule_its_seed_values_and_epochs(data_dir, logs):
    runs = logs[("esm2-8m", "disorder", "full", "random")]
    assert [r.seed for r in runs] == [97, 98, 99] and {(r.epochs, r.val_per_epoch) for r in runs} == {(100, 1)}
    rows = raw(data_dir, "finetuning_ESM2_random_init/ESM2_8M_disorder_97_random_init.csv")
    lowest = min(rows, key=lambda r: float(r["val_Loss"]))  # by hand: the first row of the smallest loss
    best = max(rows, key=lambda r: float(r["spearman"]))
    picks = runs[0].picks
    assert (picks["valid-loss"].epoch, picks["valid-loss"].test) == (float(lowest["epoch"]), float(lowest["spearman"]))
    assert (picks["best-test"].epoch, picks["best-test"].test) == (float(best["epoch"]), float(best["spearman"]))
    assert (picks["last"].epoch, picks["last"].test) == (100.0, float(rows[-1]["spearman"]))
    assert picks["valid-loss"].test == pytest.approx(0.5768, abs=1e-4) and picks["valid-loss"].epoch == 5
    summary = sl.summaries(runs)["last"]
    values = [float(raw(data_dir, f"finetuning_ESM2_random_init/ESM2_8M_disorder_{s}_random_init.csv")[-1]["spearman"])
              for s in (97, 98, 99)]
    mean = sum(values) / 3
    sd = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert summary.mean == pytest.approx(mean) and summary.half_width == pytest.approx(1.96 * sd / 3 ** 0.5)


def test_the_logs_hold_every_run_and_name_the_missing_ones(logs, data_dir):
    assert sum(len(runs) for runs in logs.values()) == 661  # 320 embedding + 295 fine-tuning + 46 random init
    no_loss = sorted(key for key, runs in logs.items() if any(r.picks["valid-loss"] is None for r in runs))
    assert no_loss == [("ankh-base", "subcellular_location", "lora", "pretrained"),
                       ("ankh-large", "subcellular_location", "lora", "pretrained"),
                       ("esm2-3b", "secondary_structure", "frozen", "pretrained")]
    with pytest.raises(BenchError, match="no run of esm2-35m full .random init. on disorder; .*esm2-8m full random"):
        sl.condition_logs(data_dir, "esm2-35m", "disorder", "full", "random")


def test_every_published_value_is_the_logs_mean_under_its_rule_and_seeds(logs):
    """Tables S3-S6 (3 decimals, CI 4) against the logs: 128 cells, each by the seeds and rule it names."""
    published = lb.study_reference()
    assert len(published) == 128
    for (backbone, task, method), value in published.items():
        runs = [r for r in logs[(backbone, task, method, "pretrained")] if r.seed in value.seeds]
        assert [r.seed for r in runs] == list(value.seeds) and value.n == len(runs)
        summary = sl.summaries(tuple(runs))[value.selected_by]
        assert summary.mean == pytest.approx(value.mean, abs=6e-4), (backbone, task, method)
        assert summary.half_width == pytest.approx(value.ci, abs=6e-4), (backbone, task, method)
    test_selected = sorted(k for k, v in published.items() if v.selected_by == "best-test")
    assert {b for b, _, _ in test_selected} == {"esm2-3b", "ankh-base", "ankh-large"}
    assert [k for k in test_selected if k[0] != "esm2-3b"] == [("ankh-base", "subcellular_location", "lora"),
                                                                ("ankh-large", "subcellular_location", "lora")]
    assert published[("esm2-150m", "aav", "full")].seeds == (96, 97, 99)


def expand(pattern: str) -> list[str]:
    """``a_{x,y}_b`` -> ``a_x_b``, ``a_y_b`` (every combination of the braces)."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def cited_files(source: str) -> list[str]:
    """The log files (``<folder>/<file>``) a rule's source cites."""
    return [name for pattern in re.findall(r"[\w-]+/[\w{},.-]+\.csv", source) for name in expand(pattern)]


def test_every_study_schedule_rule_holds_against_the_log_files_it_cites(data_dir, logs):
    by_file = {r.file: r for runs in logs.values() for r in runs}
    assert len(by_file) == 661
    rules = [r for r in plugins.get("protocol", "study").rules if "training_logs.zip" in r.source]
    assert len(rules) >= 25
    for rule in rules:
        files = cited_files(rule.source)
        assert files, rule.source
        for name in files:
            run = by_file.get(name)
            assert run is not None, f"{name} is not in training_logs.zip ({rule.source})"
            if f"{name} alone ran" not in rule.source:
                logged = {"epochs": run.epochs, "val_per_epoch": run.val_per_epoch}
                assert {k: v for k, v in rule.settings.items() if k in logged} == {
                    k: v for k, v in logged.items() if k in rule.settings}, (name, rule.source)


# the logged runs whose schedule differs from their condition's other seeds; the protocol follows the majority
ODD_SEEDS = {"finetuning_ESM2_full_model/ESM2_8M_aav_97.csv",
             "finetuning_ESM2_random_init/ESM2_8M_fluor_97_random_init.csv",
             "finetuning_ESM2_random_init/ESM2_8M_stab_99_random_init.csv"}


def test_the_study_protocol_resolves_every_logged_condition_to_its_logged_schedule(logs):
    protocol = plugins.get("protocol", "study")
    for (backbone, task, method, init), runs in logs.items():
        level, family = plugins.get("task", task).level, plugins.get("backbone", backbone).family
        chosen = protocol.settings_for(task=task, level=level, family=family, backbone=backbone, method=method,
                                       init=init)
        for run in runs:
            if run.file not in ODD_SEEDS:
                assert (chosen["epochs"], chosen["val_per_epoch"]) == (run.epochs, run.val_per_epoch), run.file
    assert {r.file for runs in logs.values() for r in runs} >= ODD_SEEDS


@pytest.fixture
def wide(monkeypatch) -> None:
    from plm_bench.cli import common

    monkeypatch.setattr(common.console, "width", 400)


def test_reference_logs_prints_the_three_rules_with_seeds(data_dir, wide):
    result = CliRunner().invoke(main, ["reference", "logs", "--backbone", "esm2-8m", "--task", "disorder",
                                       "--method", "full", "--init", "random", "--data-dir", str(data_dir)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("lowest validation loss", "best test epoch", "last epoch", "seed 97", "seed 98", "seed 99",
                 "0.5768 @ 5", "100 epochs × 1 validations", "ESM2_8M_disorder_97_random_init.csv"):
        assert text in result.output
    missing = CliRunner().invoke(main, ["reference", "logs", "--backbone", "esm2-8m", "--task", "disorder",
                                        "--method", "full", "--data-dir", "/nonexistent"])
    assert missing.exit_code == 2 and "bench data fetch study-logs" in missing.output


def test_study_logs_fetch_from_a_mirror_and_reject_a_corrupt_copy(data_dir, tmp_path, wide):
    cache = tmp_path / "cache"
    args = ["data", "fetch", "study-logs", "--data-dir", str(cache)]
    fetched = CliRunner().invoke(main, [*args, "--mirror", str(data_dir)], terminal_width=200)
    assert fetched.exit_code == 0 and "fetched from" in fetched.output
    assert (cache / "study-logs" / "training_logs.zip").read_bytes() == (
        data_dir / "study-logs" / "training_logs.zip").read_bytes()
    assert list(cache.iterdir()) == [cache / "study-logs"]  # the logs alone, not every task
    bad = tmp_path / "bad" / "study-logs"
    bad.mkdir(parents=True)
    (bad / "training_logs.zip").write_bytes(b"not the study's logs")
    rejected = CliRunner().invoke(main, ["data", "fetch", "study-logs", "--data-dir", str(tmp_path / "other"),
                                         "--mirror", str(tmp_path / "bad")], terminal_width=200)
    assert rejected.exit_code == 2 and "checksum" in rejected.output
    assert not (tmp_path / "other" / "study-logs" / "training_logs.zip").exists()


def test_leaderboard_reference_shows_the_logs_beside_random_init_runs(logs):
    from test_leaderboard import record

    runs = [record("esm2-8m", "full", "disorder", s, v, protocol="study", init="random", select_by="valid-loss",
                   epochs=epochs, val_per_epoch=1)
            for s, v in ((97, 0.58), (98, 0.60), (99, 0.62)) for epochs in (100, 2)]
    runs += [record("esm2-8m", "full", "disorder", 97, 0.5, protocol="study", init="random", epochs=100,
                    val_per_epoch=1, limit_train=16, select_by="valid-loss")]
    report = lb.leaderboard(runs, reference=True, logs=logs, by=["epochs", "limit_train"])
    assert report.rows[("100", "—")]["disorder (study)"] is None  # the published tables hold no random-init value
    assert report.rows[("100", "—")]["disorder (study logs)"] == "0.600 ± 0.026 (valid-loss, n=3: seeds 97,98,99)"
    assert report.rows[("2", "—")]["disorder (study logs)"].endswith("; logged 100x1, this run 2x1")
    assert any("study logs:" in line for line in report.caption)
    assert report.rows[("100", "16")]["disorder (study logs)"] is None  # a subset is not the study's data


def test_run_dry_run_resolves_random_init_to_the_logs_schedule_without_training(logs, tmp_path, wide):
    store = tmp_path / "runs.sqlite"
    result = CliRunner().invoke(main, ["run", "--backbone", "esm2-8m", "--init", "random", "--method", "full",
                                       "--task", "disorder", "--protocol", "study", "--dry-run", "--store", str(store)])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in result.output.splitlines() if line.count("│") > 2}
    runs = logs[("esm2-8m", "disorder", "full", "random")]
    assert lines["seed"] == ["1", "2", "3"]  # the study's 3 fine-tuning seeds
    assert lines["epochs"] == [str(runs[0].epochs)] * 3 == ["100"] * 3
    assert lines["val_per_epoch"] == [str(runs[0].val_per_epoch)] * 3 == ["1"] * 3
    assert lines["init"] == ["random"] * 3 and lines["status"] == ["to run"] * 3
    assert not store.exists()  # nothing ran, nothing was written


def test_the_report_puts_the_study_beside_runs_of_its_protocol(logs):
    from test_leaderboard import record

    from plm_bench.results import report as rp

    runs = [record("esm2-8m", "full", "disorder", s, v, protocol="study", init="random", select_by="valid-loss",
                   epochs=100, val_per_epoch=1) for s, v in ((97, 0.58), (98, 0.60), (99, 0.62))]
    page = rp.render(rp.build(runs, logs=logs), "md")
    assert "Beside the study" in page and "0.600 ± 0.026 (valid-loss, n=3: seeds 97,98,99)" in page
    others = [record("esm2-8m", "full", "disorder", s, 0.6) for s in (1, 2)]  # harness protocol: no such section
    assert "Beside the study" not in rp.render(rp.build(others, logs=logs), "md")
