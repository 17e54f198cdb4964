"""Every record says which code produced it, and a run whose code changed is never `already done`."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.results import provenance
from plm_bench.results.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = ["--backbone", "physchem", "--task", "example-hydrophobicity", "--epochs", "1", "--seed", "1"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, terminal_width=200)


def bump(folder: Path, distribution: str, version: str) -> None:
    """What `pip install` of another version leaves on sys.path: its metadata, found first."""
    info = folder / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")


def test_a_record_names_plm_bench_its_commit_schema_and_every_serving_plugin(store_path):
    result = invoke("run", *EXAMPLE, "--store", str(store_path))
    assert result.exit_code == 0, result.output
    record = Store(store_path).records()[0]
    own = record["provenance"]["plm_bench"]
    assert own["version"] == provenance.package_version() and own["result_version"] == provenance.RESULT_VERSION
    assert len(own["commit"]) == 40 and isinstance(own["dirty"], bool)  # the tests run from a checkout
    assert record["provenance"]["schema_version"] == 2
    served = record["provenance"]["plugins"]
    assert served["backbone"] == {"name": "physchem", "distribution": "plm-bench-example",
                                  "version": provenance.package_version("plm-bench-example"), "revision": 1}
    assert served["task"]["distribution"] == "plm-bench-example"
    assert {k: served[k]["distribution"] for k in ("head", "method", "protocol", "launcher")} == dict.fromkeys(
        ("head", "method", "protocol", "launcher"), "plm-bench")

    shown = invoke("show", "1", "--store", str(store_path))
    assert f"plm-bench {own['version']} (result version 1, commit {own['commit'][:12]}" in shown.output
    assert "record schema 2" in shown.output
    assert "backbone physchem: plm-bench-example" in shown.output and "launcher local: plm-bench" in shown.output


def test_a_bumped_plugin_version_says_what_changed_instead_of_already_done(store_path, tmp_path, monkeypatch):
    assert invoke("run", *EXAMPLE, "--store", str(store_path)).exit_code == 0
    before = provenance.package_version("plm-bench-example")
    bump(tmp_path / "site", "plm-bench-example", "9.9.0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert provenance.package_version("plm-bench-example") == "9.9.0"

    again = invoke("run", *EXAMPLE, "--store", str(store_path))
    assert again.exit_code == 2 and "already done" not in again.output
    assert f"backbone physchem: plm-bench-example {before} -> plm-bench-example 9.9.0" in again.output
    assert "--force" in again.output and "--accept-changed" in again.output
    assert len(Store(store_path).records()) == 1  # nothing ran, nothing replaced

    kept = invoke("run", *EXAMPLE, "--store", str(store_path), "--accept-changed")
    assert kept.exit_code == 0 and "already done" in kept.output
    rerun = invoke("run", *EXAMPLE, "--store", str(store_path), "--force")
    assert rerun.exit_code == 0
    assert Store(store_path).records()[-1]["provenance"]["plugins"]["backbone"]["version"] == "9.9.0"


def test_a_new_result_version_of_plm_bench_is_a_change_and_a_new_package_version_alone_is_not(store_path,
                                                                                              monkeypatch):
    assert invoke("run", *EXAMPLE, "--store", str(store_path)).exit_code == 0
    record = Store(store_path).records()[0]
    current = provenance.of(record["config"], 2)
    assert provenance.changes(record, current) == []
    newer_package = {**current, "plm_bench": {**current["plm_bench"], "version": "0.2.0", "commit": "f" * 40}}
    assert provenance.changes(record, newer_package) == []
    monkeypatch.setattr(provenance, "RESULT_VERSION", 2)
    assert provenance.changes(record, provenance.of(record["config"], 2)) == [
        "plm-bench result version 1 -> 2 (see CHANGELOG.md)"]


def test_a_finished_run_of_0_1_0_is_still_already_done(tmp_path, data_dir):
    """The fixture store holds runs of plm-bench 0.1.0 (no provenance): the same command is done."""
    store = tmp_path / "store-v1.sqlite"
    shutil.copy(FIXTURES / "store-v1.sqlite", store)
    result = invoke("run", "--backbone", "onehot", "--task", "gb1", "--data-dir", str(data_dir), "--limit-train",
                    "32", "--limit-eval", "16", "--epochs", "1", "--seeds", "2", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert result.output.count("already done") == 2
    assert len(sqlite3.connect(store).execute("SELECT id FROM runs").fetchall()) == 4


def test_the_leaderboard_never_pools_runs_of_different_plugin_versions_unasked(store_path):
    assert invoke("run", *EXAMPLE[:-2], "--seeds", "2", "--store", str(store_path)).exit_code == 0
    store = Store(store_path)
    second = store.records()[1]
    served = second["provenance"]["plugins"]
    bumped = {**second["provenance"], "plugins": {**served, "backbone": {**served["backbone"], "version": "9.9.0"}}}
    store.add({**{k: v for k, v in second.items() if k != "run_id"}, "provenance": bumped})

    board = invoke("leaderboard", "--store", str(store_path), "--format", "csv")
    assert board.exit_code == 0, board.output
    rows = [line.split(",") for line in board.output.splitlines() if line.startswith("plm-bench r1")]
    assert len(rows) == 2 and all(row[4] == "1" for row in rows), board.output  # one seed each, never pooled
    assert sum("plm-bench-example==9.9.0" in row[0] for row in rows) == 1
    one = invoke("leaderboard", "--store", str(store_path), "--format", "csv", "--where",
                 f"code=plm-bench r1 + plm-bench-example=={provenance.package_version('plm-bench-example')}")
    first = store.records()[0]  # the one run left at the installed version
    assert one.exit_code == 0
    assert one.output.splitlines()[1].split(",")[:2] == ["physchem", str(first["metrics"]["test"]["spearman"])]
    by_version = invoke("leaderboard", "--store", str(store_path), "--where",
                        f"plm_bench_version={provenance.package_version()}", "--by", "code")
    assert by_version.exit_code == 0 and "code" in by_version.output


def test_a_revised_built_in_item_changes_only_the_runs_it_served():
    """esm-cls got the notebooks' initialization (revision 2): its stored runs are not done, others are."""
    legacy = {"config": {"backbone": "esm2-8m", "task": "gb1", "head": "esm-cls", "method": "lora",
                         "protocol": "study"}}
    current = provenance.of(legacy["config"], 2)
    assert current["plugins"]["head"]["revision"] == 2
    assert provenance.changes(legacy, current) == ["head esm-cls: revision 1 -> 2"]
    assert provenance.changes({"config": {**legacy["config"], "head": "mlp-protein"}},
                              provenance.of({**legacy["config"], "head": "mlp-protein"}, 2)) == []
    assert provenance.code({"provenance": current}) == "plm-bench r1 + head esm-cls rev 2"
    assert provenance.code(legacy) == "plm-bench r1"


def test_a_fine_tuning_run_that_stepped_bf16_weights_before_the_precision_policy_is_not_done():
    """GPU runs of 0.1.0 under --dtype auto trained bf16 weights directly: same hash, wrong result."""
    config = {"backbone": "esm2-8m", "task": "gb1", "head": "mlp-protein", "method": "full", "protocol": "harness"}
    current = provenance.of(config, 2)
    gpu = {"config": config, "cost": {"backbone_dtype": "bfloat16"}}
    assert provenance.changes(gpu, current) == [
        "it fine-tuned bfloat16 weights directly, before plm-bench kept fp32 master weights (0.2.0), so most "
        "updates were lost"]
    assert provenance.changes({**gpu, "precision": {"trainable": "float32"}}, current) == []  # the policy's own
    assert provenance.changes({**gpu, "cost": {"backbone_dtype": "float32"}}, current) == []  # CPU: as before
    frozen = {**gpu, "config": {**config, "method": "frozen"}}
    assert provenance.changes(frozen, provenance.of(frozen["config"], 2)) == []  # embeddings only: fine in bf16
