"""Leakage: identities against hand-computed alignments, and `bench data overlap` on real data."""

from __future__ import annotations

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


def test_the_disorder_duplicates_biotrainer_caught_are_listed(data_dir):
    result = CliRunner().invoke(main, ["data", "list", "disorder", "--data-dir", str(data_dir)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "2 within a split, 1 across splits" in result.output and "valid 15720 = train 7339" in result.output
