"""Leakage: identities against hand-computed alignments, `bench data overlap` on real data, and runs
with --dedup and --max-identity (a hand-made task with planted repeats, then disorder and GB1)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from plm_bench.cli import main
from plm_bench.tasks.overlap import above, duplicates, histogram, identity, nearest


def test_identity_counts_identical_residues_over_the_shorter_sequence():
    # MKVLAAGG vs MKVAG, global: MKV aligned, LAA against gaps, then G/A mismatch, G/G match.
    assert identity("MMMDDDXM", 8, 5) == 4 / 5
    assert identity("MMMM", 4, 4) == 1.0


def test_nearest_finds_the_most_identical_training_protein():
    train = [("far", "WWWWWWWWWW"), ("near", "MKTAYIAKQR"), ("nearer", "MKTAYIAKQW"), ("copy", "ACDEFGHIKL")]
    found = nearest([("q1", "MKTAYIAKQW"), ("q2", "MKTAYIAKHH"), ("q3", "ACDEFGHIKL")], train)
    assert [(n.query, n.train) for n in found] == [("q1", "nearer"), ("q2", "near"), ("q3", "copy")]
    assert found[0].identity == 1.0 and found[2].identity == 1.0
    assert found[1].identity == 8 / 10  # MKTAYIAKQR vs MKTAYIAKHH: 8 of 10 residues identical


def test_nearest_aligns_a_test_set_once_and_searches_again_when_the_cache_is_bad(tmp_path, monkeypatch):
    from plm_bench.tasks import overlap

    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path))
    train, queries = [("a", "MKTAYIAKQR"), ("b", "WWWWWWWWWW")], [("q", "MKTAYIAKHH")]
    first = nearest(queries, train)
    searched = []
    monkeypatch.setattr(overlap, "search", lambda *a: searched.append(a) or [overlap.Nearest("q", "b", 0.5)])
    assert nearest(queries, train) == first and not searched  # a grid's other runs read it
    assert nearest(queries, train[:1])[0].identity == 0.5 and len(searched) == 1  # other train, other entry
    (entry,) = [p for p in (tmp_path / "identity").iterdir() if p.read_text() == json.dumps([["q", "a", 0.8]])]
    entry.write_text("{not json")
    assert nearest(queries, train) == [overlap.Nearest("q", "b", 0.5)] and len(searched) == 2
    assert json.loads(entry.read_text()) == [["q", "b", 0.5]]  # replaced


def test_histogram_and_counts_above_thresholds():
    values = [0.1, 0.35, 0.55, 0.95, 1.0]
    assert [c for _, _, c in histogram(values)] == [0, 1, 0, 1, 0, 1, 0, 0, 0, 2]
    assert above(values) == {0.3: 4, 0.5: 3, 0.9: 2, 1.0: 1}


def test_bench_data_overlap_on_the_disorder_split(data_dir, tmp_path):
    out = tmp_path / "identity.csv"
    result = CliRunner().invoke(main, ["data", "overlap", "disorder", "--data-dir", str(data_dir), "--split", "valid",
                                       "-o", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = out.read_text().splitlines()
    assert rows[0] == "split,id,nearest_train_id,identity" and len(rows) == 1 + 118
    identities = [float(r.rsplit(",", 1)[1]) for r in rows[1:]]
    assert all(0.0 <= v <= 1.0 for v in identities)
    assert "≥ 100%" in result.output


def test_repeated_sequences_are_found_within_and_across_splits():
    from plm_bench.tasks.task import Example

    splits = {"train": [Example("a", "MKV", 0.0), Example("b", "MKV", 1.0), Example("c", "WW", 0.0)],
              "valid": [Example("d", "WW", 0.0)], "test": [Example("e", "MKV", 0.0), Example("f", "PP", 0.0)]}
    found = duplicates(splits)
    assert found.pairs == (("train", "b", "train", "a"), ("valid", "d", "train", "c"), ("test", "e", "train", "a"))
    assert (found.within(), found.across()) == (1, 2)
    assert duplicates(dict(reversed(splits.items()))) == found  # train first, whatever order a loader gives


def test_the_disorder_duplicates_biotrainer_caught_are_listed(data_dir, monkeypatch):
    from plm_bench.cli import common

    monkeypatch.setattr(common.console, "width", 400)
    result = CliRunner().invoke(main, ["data", "list", "disorder", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "2 within a split, 1 across splits" in result.output and "valid 15720 = train 7339" in result.output


# --- runs: --dedup and --max-identity ----------------------------------------------------------

def leaky_splits(data_dir=None) -> dict:
    """Random proteins (hydrophobic fraction as label) with planted repeats: train-39 = train-0,
    valid-0 = train-1, test-0 = train-3, test-5 = valid-2, and test-1 is train-5 with one residue
    changed (identity (L-1)/L to it); unrelated random proteins stay far below 90 % identity."""
    import random

    from plm_bench.tasks.task import Example

    rng = random.Random(11)
    sequences = {s: ["".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(20, 40)))
                     for _ in range(n)] for s, n in (("train", 40), ("valid", 12), ("test", 12))}
    sequences["train"][39] = sequences["train"][0]
    sequences["valid"][0] = sequences["train"][1]
    sequences["test"][0] = sequences["train"][3]
    sequences["test"][5] = sequences["valid"][2]
    near = sequences["train"][5]
    sequences["test"][1] = near[:10] + ("W" if near[10] != "W" else "Y") + near[11:]
    return {s: [Example(f"{s}-{i}", q, sum(a in "AILMFVW" for a in q) / len(q)) for i, q in enumerate(qs)]
            for s, qs in sequences.items()}


@pytest.fixture
def leaky_task(monkeypatch) -> str:
    from plm_bench import plugins
    from plm_bench.tasks.task import Task

    task = Task(name="toy-leaky", level="protein", type="regression", metric="spearman", load=leaky_splits)
    monkeypatch.setitem(plugins.catalog().items["task"], task.name, task)
    return task.name


@pytest.fixture
def scored(monkeypatch) -> dict[str, list[str]]:
    """The test ids each of the metrics, the bootstrap CI and the baseline margin was computed on."""
    from plm_bench.results import baselines
    from plm_bench.run import protocol

    seen: dict[str, list[str]] = {}

    def spy(name, function, position):
        def wrapped(*args, **kwargs):
            seen[name] = [e.id for e in args[position]]
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(protocol, "evaluate", spy("metrics", protocol.evaluate, 1))
    monkeypatch.setattr(protocol, "bootstrap_ci", spy("ci", protocol.bootstrap_ci, 1))
    monkeypatch.setattr(baselines, "margin", spy("baseline", baselines.margin, 2))
    return seen


def leaky_run(task: str, data_dir, **settings) -> dict:
    from plm_bench.config import RunConfig
    from plm_bench.results.records import validate
    from plm_bench.run.protocol import RunContext, execute

    config = RunConfig(backbone="onehot", task=task, **{"epochs": 2, "batch_size": 8, **settings}).resolved()
    record = execute(config, RunContext(data_dir=data_dir, device="cpu"))
    validate(record)
    return record


def test_every_record_counts_the_repeats_and_dedup_drops_the_later_copies(leaky_task, tmp_path, scored):
    plain = leaky_run(leaky_task, tmp_path)
    assert plain["duplicates"]["within"] == {"train": 1, "valid": 0, "test": 0}
    assert plain["duplicates"]["across"] == {"valid-train": 1, "test-train": 1, "test-valid": 1}
    assert plain["duplicates"]["examples"][0] == {"split": "train", "id": "train-39", "first_split": "train",
                                                   "first_id": "train-0"}
    assert "dropped" not in plain["duplicates"] and len(scored["metrics"]) == 12
    deduped = leaky_run(leaky_task, tmp_path, dedup=True)
    assert deduped["duplicates"]["dropped"] == {"train": 1, "valid": 1, "test": 2}
    assert deduped["duplicates"]["within"] == plain["duplicates"]["within"]  # counted before dropping
    assert sorted(scored["metrics"]) == sorted(f"test-{i}" for i in range(12) if i not in (0, 5))
    assert scored["ci"] == scored["baseline"] == scored["metrics"]


def test_max_identity_scores_only_the_test_proteins_far_from_train(leaky_task, tmp_path, scored):
    near = leaky_splits()["test"][1]
    everything = leaky_run(leaky_task, tmp_path)
    assert "test_subset" not in everything
    subset = leaky_run(leaky_task, tmp_path, max_identity=0.9)
    assert {k: subset["test_subset"][k] for k in ("max_identity", "kept", "dropped")} == {
        "max_identity": 0.9, "kept": 10, "dropped": 2}
    assert subset["test_subset"]["examples"] == [
        {"id": "test-0", "train": "train-3", "identity": 1.0},
        {"id": "test-1", "train": "train-5", "identity": (len(near.sequence) - 1) / len(near.sequence)}]
    assert sorted(scored["metrics"]) == sorted(f"test-{i}" for i in range(2, 12))
    assert scored["ci"] == scored["baseline"] == scored["metrics"]
    # validation is not filtered: the same seed trains the same model, only the scoring differs
    assert subset["history"] == everything["history"] and subset["metrics"]["valid"] == everything["metrics"]["valid"]
    assert subset["metrics"]["test"] != everything["metrics"]["test"]
    assert subset["config_hash"] != everything["config_hash"]
    both = leaky_run(leaky_task, tmp_path, max_identity=0.9, dedup=True)  # dedup drops test-0 first
    assert (both["test_subset"]["kept"], both["test_subset"]["dropped"]) == (9, 1)


def test_max_identity_none_aligns_nothing_and_no_survivor_is_one_error(monkeypatch):
    from plm_bench.errors import BenchError
    from plm_bench.tasks import overlap

    splits = leaky_splits()
    monkeypatch.setattr(overlap, "nearest", lambda *a, **k: pytest.fail("aligned with max_identity None"))
    assert overlap.identity_subset(splits, None, "toy") == (splits, None)
    monkeypatch.undo()
    copies = {**splits, "test": splits["train"][:3]}
    with pytest.raises(BenchError, match=r"--max-identity 0.5: every one of task toy's 3 test proteins .*least: "
                                         r"100.0%.*raise the threshold"):
        overlap.identity_subset(copies, 0.5, "toy")
    with pytest.raises(BenchError, match=r"--dedup true leaves task toy's test split empty"):
        overlap.repeats(copies, True, "toy")


def test_dedup_on_disorder_drops_the_chezod_valid_copy_of_a_training_protein(data_dir, tmp_path):
    record = leaky_run("disorder", data_dir, dedup=True, epochs=1, batch_size=256)
    duplicates = record["duplicates"]
    assert duplicates["within"] == {"train": 2, "valid": 0, "test": 0}
    assert duplicates["across"] == {"valid-train": 1, "test-train": 0, "test-valid": 0}
    assert {"split": "valid", "id": "15720", "first_split": "train", "first_id": "7339"} in duplicates["examples"]
    assert duplicates["dropped"] == {"train": 2, "valid": 1, "test": 0}


def test_max_identity_on_real_data_smoke_and_gb1_leaves_nothing_below_half(data_dir, tmp_path, scored):
    record = leaky_run("disorder", data_dir, max_identity=0.4, limit_train=300, limit_eval=60, epochs=1,
                       batch_size=64)
    subset = record["test_subset"]
    assert subset["kept"] + subset["dropped"] == 60 and subset["kept"] == len(scored["metrics"])
    assert all(e["identity"] > 0.4 and e["id"] not in scored["metrics"] for e in subset["examples"])
    # every GB1 test variant (4 mutations of one 56-residue protein) is >= 49/56 identical to train
    result = CliRunner().invoke(main, ["run", "--backbone", "onehot", "--task", "gb1", "--max-identity", "0.5",
                                       "--limit-eval", "20", "--data-dir", str(data_dir),
                                       "--store", str(tmp_path / "results.sqlite")])
    assert result.exit_code != 0 and "every one of task gb1's 20 test proteins" in result.output, result.output
