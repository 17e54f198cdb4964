"""Seeded limit subsets, ``bench runs``/``show`` ids that ``bench predict`` takes, frozen cost with
its embedding, ``bench embed`` out of the frozen cache, and ``bench profile`` of one-hot."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from synthetic_tasks import CHARGE, config, context, register_tasks

from plm_bench import plugins
from plm_bench.cli import main
from plm_bench.config import RunConfig
from plm_bench.results import leaderboard as lb
from plm_bench.results.store import Store
from plm_bench.run.protocol import build, frozen_features, limit
from plm_bench.tasks.task import Example


@pytest.fixture(autouse=True)
def setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PLM_BENCH_CACHE", str(tmp_path / "cache"))
    register_tasks(monkeypatch)


def bench(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), terminal_width=250)
    assert result.exit_code == code, result.output
    return result.output


def write_fasta(path, examples: list[Example]) -> None:
    path.write_text("".join(f">{e.id}\n{e.sequence}\n" for e in examples))


def test_limit_draws_a_seeded_random_subset_in_file_order():
    splits = {name: [Example(f"{name}-{i}", "ACDE", float(i)) for i in range(200)] for name in ("train", "valid")}
    run = RunConfig(backbone="onehot", task="gb1", seed=1, limit_train=20, limit_eval=500)
    picked = limit(splits, run)
    labels = [e.label for e in picked["train"]]
    assert len(labels) == 20 and labels != list(range(20))  # not the first 20 rows
    assert labels == sorted(labels)  # file order kept
    assert max(labels) > 100  # drawn from the whole file
    assert [e.label for e in limit(splits, run)["train"]] == labels  # reproducible from the recorded config
    assert [e.label for e in limit(splits, replace(run, seed=2))["train"]] == labels  # every seed: one subset
    other = limit(splits, replace(run, limit_seed=1))["train"]
    assert [e.label for e in other] != labels  # another draw
    assert picked["valid"] == splits["valid"]  # a cap above the split's size keeps it whole


def test_runs_lists_ids_that_predict_accepts_and_frozen_cost_includes_the_embedding(tiny_esm, tmp_path):
    store = tmp_path / "runs.sqlite"
    common = ["--backbone", "esm2-8m", "--backbone-path", str(tiny_esm), "--task", CHARGE.name, "--epochs", "1",
              "--store", str(store), "--device", "cpu"]
    bench("run", *common, "--method", "frozen")
    bench("run", *common, "--method", "frozen", "--limit-train", "16")
    listing = bench("runs", "--store", str(store))
    ids = [int(m) for m in re.findall(r"^│ (\d+) ", listing, flags=re.M)]
    assert ids == [r["run_id"] for r in Store(store).records()] and len(ids) == 2
    assert "finished (smoke)" in listing and "limit_train" in listing  # the setting that tells them apart
    write_fasta(tmp_path / "new.fasta", CHARGE.load(tmp_path)["test"][:3])
    bench("predict", "--run", str(ids[0]), str(tmp_path / "new.fasta"), "-o", str(tmp_path / "out.csv"),
          "--store", str(store), "--device", "cpu")
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 4
    shown = json.loads(CliRunner().invoke(main, ["show", str(ids[0]), "--store", str(store)]).stdout)  # JSON only
    assert shown["run_id"] == ids[0] and shown["config"]["method"] == "frozen"
    assert "no run 99" in bench("show", "99", "--store", str(store), code=2)

    cost = shown["cost"]
    assert cost["embed_seconds"] > 0 and cost["backbone_dtype"] == "float32"
    row = lb.costs(lb.select(Store(store).records())[0]).rows[(CHARGE.name, "esm2-8m")]
    assert row["embed (s)"] == cost["embed_seconds"]
    assert row["total (s)"] == pytest.approx(cost["total_seconds"])  # the embedding counted once, in the total
    assert row["total (s)"] > row["train (s)"] + row["embed (s)"]


def test_embed_gives_the_frozen_cache_embeddings(tiny_esm, tmp_path):
    examples = CHARGE.load(tmp_path)["train"][:6]
    write_fasta(tmp_path / "in.fasta", examples)
    out = bench("embed", "esm2-8m", str(tmp_path / "in.fasta"), "-o", str(tmp_path / "out.npz"),
                "--backbone-path", str(tiny_esm), "--device", "cpu")
    assert "wrote 6 per-residue embeddings" in out
    exported = np.load(tmp_path / "out.npz")
    assert sorted(exported.files) == sorted(e.id for e in examples)

    run = config(CHARGE, tiny_esm, method="frozen")  # what a frozen run of these sequences reads
    backbone, _ = build(run, plugins.get("task", CHARGE.name), torch.device("cpu"))
    cached = frozen_features(backbone, {"x": examples}, run, context(tmp_path))["x"]
    direct = backbone.embed([e.sequence for e in examples]).hidden.float()
    for i, example in enumerate(examples):
        assert np.array_equal(exported[example.id], cached[i].numpy())  # the same cache entry
        assert exported[example.id].shape == (len(example.sequence), backbone.hidden_size)
        np.testing.assert_allclose(exported[example.id], direct[i, : len(example.sequence)].numpy(),
                                   rtol=1e-2, atol=1e-3)  # the backbone's output, as fp16 holds it

    h5py = pytest.importorskip("h5py")  # the [h5] extra, part of [test]
    bench("embed", "esm2-8m", str(tmp_path / "in.fasta"), "-o", str(tmp_path / "out.h5"), "--per-protein",
          "--backbone-path", str(tiny_esm), "--device", "cpu")
    with h5py.File(tmp_path / "out.h5") as handle:
        for i, example in enumerate(examples):
            assert handle[example.id].attrs["original_id"] == example.id
            np.testing.assert_allclose(handle[example.id][()], cached[i].numpy().mean(axis=0), rtol=1e-6)
    assert "write .npz, .h5 or .hdf5" in bench("embed", "esm2-8m", str(tmp_path / "in.fasta"), "-o",
                                               str(tmp_path / "out.txt"), code=2)


def test_profile_of_onehot_frozen_runs():
    out = bench("profile", "--backbone", "onehot", "--method", "frozen", "--no-envelope", "--steps", "1",
                "--length", "16", "--batch-size", "2", "--device", "cpu")
    assert "inference" in out and "onehot · frozen · float32" in out
