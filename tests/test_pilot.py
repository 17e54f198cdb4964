"""`bench pilot`: the plan fits its budget from measured cost, and the verdict is what the runs support.

The verdict tests train for real on synthetic tasks whose answer is known by construction:
fine-tuning helps where the frozen backbone cannot see the label (every token embeds the same),
and cannot help where a linear probe on one-hot composition is already exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic_tasks
import torch
from click.testing import CliRunner
from stored_profiles import rate

from plm_bench.cli import main
from plm_bench.errors import BenchError
from plm_bench.measure.profiler import profile_config
from plm_bench.results import pilot as answers
from plm_bench.results import profiles
from plm_bench.results.store import Store
from plm_bench.run import pilot as planner
from plm_bench.run.driver import attempt

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def tasks(monkeypatch):
    synthetic_tasks.register_tasks(monkeypatch)


@pytest.fixture
def shape(tmp_path) -> planner.Shape:
    return planner.Shape.of(synthetic_tasks.CHARGE, tmp_path)


def cost(method: str, train: float | None, inference: float, fits: bool = True) -> planner.Cost:
    return planner.Cost("esm2-8m", method, 1, True, "float32", train, inference, 10, 100, 2**30, fits, 1)


def test_durations():
    assert planner.parse_duration("20m") == 1200
    assert planner.parse_duration("1h30m") == 5400
    assert planner.parse_duration("1.5h") == 5400
    assert planner.parse_duration("90s") == 90
    for bad in ("20", "m", "", "-5m", "0m"):
        with pytest.raises(BenchError, match="--budget"):
            planner.parse_duration(bad)


def test_plan_fits_the_budget_and_shrinks_with_it(shape):
    costs = {"esm2-8m": {"frozen": cost("frozen", None, 2000.0), "lora": cost("lora", 500.0, 1000.0),
                         "full": cost("full", 200.0, 1000.0)}}

    def plan(seconds: float) -> planner.Plan:
        return planner.make_plan("toy-charge", "protein", shape, ["esm2-8m"], costs, seconds, "CPU")

    roomy, tight = plan(3600), plan(200)
    assert roomy.seconds <= 3600 and tight.seconds <= 200
    assert roomy.design.methods == ("lora", "full") and roomy.design.seeds == 5
    # nested fractions down to the smallest with MIN_TRAIN examples: 48 / 3 = 16 (48 / 9 would train on 6)
    assert roomy.design.fractions == (0.333, 1.0)
    assert tight.design.seeds < roomy.design.seeds or tight.design.epochs < roomy.design.epochs \
        or tight.design.methods != roomy.design.methods
    # cheap conditions first: every frozen run, then LoRA, then full fine-tuning
    methods = [s.config.method for s in roomy.steps]
    assert methods == sorted(methods, key=planner.cost_rank)
    assert {s.role for s in roomy.steps if s.config.method == "frozen"} == {"probe", "frozen MLP", "shuffled labels"}
    assert {s.config.head for s in roomy.steps if s.role == "probe"} == {"probe-mean"}
    tuned = [s.config for s in roomy.steps if s.config.method == "lora"]
    assert {c.patience for c in tuned} == {planner.PATIENCE}
    # the estimate is the cost model's: one full-data LoRA run is its epochs of training and
    # validation plus its test passes at the measured rates
    run = next(s for s in roomy.steps if s.config.method == "lora" and s.config.train_fraction == 1.0)
    residues = {split: shape.counts[split] * shape.mean_length[split] for split in shape.counts}
    expected = (planner.RUN_OVERHEAD_SECONDS + run.config.epochs * (residues["train"] / 500 + residues["valid"] / 1000)
                + planner.TEST_PASSES * residues["test"] / 1000)
    assert run.seconds == pytest.approx(expected)
    with pytest.raises(BenchError, match="give a --budget of at least"):
        plan(1)


def test_a_method_that_does_not_fit_memory_is_left_out_with_a_note(shape):
    costs = {"esm2-8m": {"frozen": cost("frozen", None, 2000.0), "full": cost("full", 20.0, 500.0, fits=False)}}
    plan = planner.make_plan("toy-charge", "protein", shape, ["esm2-8m"], costs, 3600, "CPU")
    assert plan.design.methods == ()
    assert any("full left out" in note and "memory" in note for note in plan.notes)


def test_a_stored_profile_is_reused_only_where_it_answers_the_plan(shape):
    length = round(shape.median_length)

    def stored(method: str, length: int, device: str = "CPU (1 threads)", peak: int = 1000, at: int = 64) -> dict:
        entry = profiles.entry(profile_config("esm2-8m", method), dtype="float32", device=device,
                               parameters={"trainable": 1, "total": 2},
                               rates=[rate(m, length=length) for m in ("train", "inference")],
                               peak_flops=None, envelope=None, environment={})
        entry["envelope"] = {"step": "train", "memory": "process_rss", "max_length": 64, "resolution": 64,
                             "budgets": [], "peaks": [{"length": at, "bytes": peak}]}
        return {**entry, "profile_id": 7}

    found = planner.stored_cost([stored("lora", length)], "esm2-8m", None, "lora", "CPU (1 threads)", shape, 2**30)
    assert found is not None and found.reused and found.profile_id == 7 and found.fits
    assert planner.stored_cost([stored("lora", length * 4)], "esm2-8m", None, "lora", "CPU (1 threads)", shape,
                               2**30) is None  # throughput measured far from the task's lengths
    assert planner.stored_cost([stored("lora", length, "CPU (2 threads)")], "esm2-8m", None, "lora",
                               "CPU (1 threads)", shape, 2**30) is None  # another device
    over = planner.stored_cost([stored("lora", length, peak=2**31, at=16)], "esm2-8m", None, "lora",
                               "CPU (1 threads)", shape, 2**30)
    assert over is not None and not over.fits  # a step on 16 residues is over budget: the task's 24 are too
    assert planner.stored_cost([stored("lora", length, peak=2**31)], "esm2-8m", None, "lora", "CPU (1 threads)",
                               shape, 2**30) is None  # over budget only beyond the task's longest: not settled


def collapsed_esm(tiny_esm: Path, folder: Path) -> Path:
    """The tiny ESM with every token embedded alike: its hidden states are the same for every
    residue of every sequence, so a frozen head sees nothing of the sequence; full fine-tuning
    trains the embeddings and can."""
    import shutil

    from transformers import EsmModel

    model = EsmModel.from_pretrained(tiny_esm)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[:] = model.embeddings.word_embeddings.weight[5]
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_esm / name).exists():
            shutil.copy(tiny_esm / name, folder / name)
    return folder


def run_pilot(tmp_path: Path, backbone: str, settings: dict, methods: tuple[str, ...], min_gain: float,
              epochs: int) -> list[answers.Answer]:
    """Profile, plan (3 seeds, all data, pinned so the test is small), run every step, answer."""
    store = Store(tmp_path / "runs.sqlite")
    shape = planner.Shape.of(synthetic_tasks.CHARGE, tmp_path)
    costs = {backbone: {m: planner.measure_cost(store, backbone, settings.get("backbone_path"), "pretrained", m, CPU,
                                                "CPU (test)", shape, 8, 2**31, steps=1)
                        for m in ("frozen", *methods)}}
    plan = planner.make_plan("toy-charge", "protein", shape, [backbone], costs, 3600, "CPU (test)",
                             {backbone: settings}, {"seeds": (3,), "fractions": (1.0,), "epochs": epochs})
    plan.min_gain = min_gain
    assert plan.design.methods == methods
    context = synthetic_tasks.context(tmp_path)
    for step in plan.steps:
        store.add(attempt(step.config, context))
    return answers.answer(plan.document(), store.records())


def test_verdict_fine_tune_where_it_is_known_to_help(tmp_path, tiny_esm):
    weights = collapsed_esm(tiny_esm, tmp_path / "collapsed")
    (found,) = run_pilot(tmp_path, "esm2-8m", {"backbone_path": str(weights), "lr": 3e-3}, ("full",), 0.05, 8)
    assert found.verdict.startswith("fine-tune (full): +"), found.verdict
    gain = found.gains.rows[("1",)]["full gain"]
    assert gain.ci_low > 0 and "gain" in gain.flags
    assert any(line.startswith("Baselines:") for line in found.evidence)


def test_verdict_frozen_is_enough_where_a_probe_is_exact(tmp_path):
    # one-hot composition makes charge per residue an exact linear function: the probe is ~perfect
    (found,) = run_pilot(tmp_path, "onehot", {}, ("full",), 0.05, 3)
    probe = found.gains.rows[("1",)]
    assert probe["best frozen head"] == "probe" and probe["frozen score"].mean > 0.95
    assert found.verdict.startswith("frozen is enough"), found.verdict


def test_an_under_budgeted_pilot_says_inconclusive(tmp_path, tiny_esm, monkeypatch, store_path):
    """Stored profiles make full fine-tuning cost hours: a 10-minute pilot runs the frozen heads
    only, and its verdict says what would decide it instead of guessing."""
    from plm_bench.cli.profile import device_name

    store = Store(store_path)
    for method, seconds in (("frozen", 0.01), ("full", 1e6)):
        entry = profiles.entry(profile_config("esm2-8m", method, backbone_path=str(tiny_esm)), dtype="float32",
                               device=device_name(CPU), parameters={"trainable": 1, "total": 2},
                               rates=[rate(m, length=16, seconds=seconds) for m in ("train", "inference")],
                               peak_flops=None, envelope=None, environment={})
        entry["envelope"] = {"step": "train", "memory": "process_rss", "max_length": 64, "resolution": 64,
                             "budgets": [{"bytes": 2**30, "longest": 64}], "peaks": [{"length": 64, "bytes": 1000}]}
        store.add_profile(entry)
    result = CliRunner().invoke(main, [
        "pilot", "--task", "toy-charge", "--backbone", "esm2-8m", "--backbone-path", f"esm2-8m={tiny_esm}",
        "--methods", "frozen,full", "--budget", "10m", "--seeds", "3", "--fractions", "1", "--device", "cpu",
        "--store", str(store_path), "--data-dir", str(store_path.parent)])
    assert result.exit_code == 0, result.output
    assert "stored)" in result.output and "measured now" not in result.output  # planned from the stored profiles
    assert "full left out: the smallest pilot with it needs about" in result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("verdict for esm2-8m"))
    assert "inconclusive: full did not fit the budget: the smallest pilot with it needs about" in verdict, verdict
    assert not [r for r in Store(store_path).records() if r["config"]["method"] == "full"]
    assert "trained on shuffled labels at fraction 1: test mse" in result.output  # the baselines are in the answer
    # bench report shows the pilot's answer, though every run of it is a frozen one
    report = CliRunner().invoke(main, ["report", "--store", str(store_path), "--format", "md",
                                       "-o", str(store_path.parent / "report.md")])
    assert report.exit_code == 0, report.output
    text = (store_path.parent / "report.md").read_text()
    assert "## Pilot: toy-charge" in text and "inconclusive" in text


def fake_record(run_hash: str, score: float, seconds: float = 10.0) -> dict:
    """The parts of a finished record the answer reads."""
    return {"config_hash": run_hash, "status": "finished", "primary_metric": "spearman",
            "metrics": {"test": {"spearman": score}},
            "cost": {"embed_seconds": 0.0, "total_seconds": seconds, "train_seconds": seconds,
                     "peak_memory": {"kind": "process_rss", "rss_bytes": 2**30}},
            "parameters": {"trainable": 1, "total": 4},
            "baseline": {"metric": "mse", "trivial": "train mean", "model": 1.0, "baseline": 1.5, "clears": True,
                         "baselines": {"train mean": 1.5}}}


def plan_document(lora: list[float], frozen: list[float]) -> tuple[dict, list[dict]]:
    runs, records = [], []
    for role, scores in (("frozen MLP", frozen), ("lora", lora)):
        for seed, score in enumerate(scores, 1):
            runs.append({"hash": f"{role}-{seed}", "backbone": "esm2-8m", "role": role, "train_fraction": 1.0,
                         "seed": seed})
            records.append(fake_record(f"{role}-{seed}", score, 100.0 if role == "lora" else 10.0))
    plan = {"task": "toy-charge", "metric": "spearman", "backbones": ["esm2-8m"], "methods": ["lora"],
            "left_out": [], "min_gain": 0.01, "device": "CPU", "runs": runs,
            "run_estimates": {"esm2-8m": {"lora": {"1": 100.0}}}}
    return plan, records


def test_verdicts_follow_the_paired_intervals():
    """Hand-made seeds: a clear gain, a clear nothing, and a gain the CI cannot yet tell from 0,
    for which the answer names the seeds that would (at the spread seen) and their time."""
    frozen = [0.50, 0.60, 0.70]
    gain, = answers.answer(*plan_document([0.61, 0.70, 0.81], frozen))
    assert gain.verdict.startswith("fine-tune (lora): +0.107 [")
    assert "for 10× the cost per run" in gain.verdict  # 100 s against the frozen head's 10 s
    nothing, = answers.answer(*plan_document([0.47, 0.58, 0.68], frozen))
    assert nothing.verdict.startswith("frozen is enough"), nothing.verdict
    # the same loss, but from runs stopped while still improving: not evidence that the method cannot help
    plan, records = plan_document([0.47, 0.58, 0.68], frozen)
    plan["design"] = {"epochs": 3}
    for record in records:
        record["early_stopping"] = {"still_improving": record["config_hash"].startswith("lora")}
    stopped, = answers.answer(plan, records)
    assert stopped.verdict.startswith("inconclusive: lora -0.023 ["), stopped.verdict
    assert "3/3 of its seeds were still improving when their 3 epochs ended" in stopped.verdict
    assert "--epochs 6: est. 5.0 min more for these 3 seeds" in stopped.verdict
    # differences +0.10, -0.02, +0.06: mean +0.047, SD 0.061, t(2) CI ± 0.152 straddles 0
    unsure, = answers.answer(*plan_document([0.60, 0.58, 0.76], frozen))
    assert unsure.verdict.startswith("inconclusive: lora +0.047 ["), unsure.verdict
    n = answers.seeds_to_decide([0.10, -0.02, 0.06], 0.01)
    # the smallest n whose t-interval at this SD excludes 0: t(n-1) * 0.0611 / sqrt(n) < 0.0467
    assert n == 10  # n = 9: 2.306 * 0.0611 / 3 = 0.0470, just short
    assert f"about {n - 3} more seeds would decide it, est. {planner.duration((n - 3) * 110)}" in unsure.verdict


def test_running_stops_short_of_the_budget_at_the_pace_measured(shape, monkeypatch):
    """Each run takes twice its estimate: once that is known, a run that would end past the budget
    is left out, and so is every later frozen run of its backbone (its estimate counted on
    embeddings the left-out run was to compute)."""
    costs = {"esm2-8m": {"frozen": cost("frozen", None, 2000.0), "lora": cost("lora", 500.0, 1000.0)}}
    plan = planner.make_plan("toy-charge", "protein", shape, ["esm2-8m"], costs, 3600, "CPU",
                             pinned={"seeds": (2,), "fractions": (0.5, 1.0), "epochs": 3})
    clock = {"now": 0.0}
    monkeypatch.setattr(planner.time, "monotonic", lambda: clock["now"])
    ran = []

    def run(configs):
        clock["now"] += 2 * sum(s.seconds for s in plan.steps if s.config in configs)
        ran.extend(configs)
        return [{"config_hash": c.hash} for c in configs]

    steps = plan.steps
    first_embedding = steps[0].seconds  # the first probe embeds train (0.5), valid and test
    budget = 2 * first_embedding + 30  # room for the first fraction's frozen runs only, at the real pace
    out = planner.run_within([[s] for s in steps], budget, run, done={steps[1].config.hash})
    assert ran[0] == steps[0].config and steps[1].config not in ran  # done runs are not run again
    assert out["pace"] == pytest.approx(2.0) and clock["now"] <= budget
    left = {s.config.hash for s in out["skipped"]}
    later_frozen = [s for s in steps if s.config.method == "frozen" and s.config.train_fraction == 1.0]
    assert later_frozen and all(s.config.hash in left for s in later_frozen)
    assert len(ran) + len(left) + 1 == len(steps)


def test_a_method_a_backbone_cannot_take_runs_on_the_others_only(shape):
    """LoRA needs adapter targets: on one-hot it is left out, on the transformer it runs."""
    costs = {"esm2-8m": {"frozen": cost("frozen", None, 2000.0), "lora": cost("lora", 500.0, 1000.0)},
             "onehot": {"frozen": cost("frozen", None, 2000.0)}}
    plan = planner.make_plan("toy-charge", "protein", shape, ["esm2-8m", "onehot"], costs, 3600, "CPU")
    assert plan.design.methods == ("lora",)
    assert {s.config.backbone for s in plan.steps if s.config.method == "lora"} == {"esm2-8m"}
    assert {s.config.backbone for s in plan.steps if s.role == "probe"} == {"esm2-8m", "onehot"}
    document = plan.document()
    assert document["serves"] == {"esm2-8m": ["lora"], "onehot": []}
    onehot = next(a for a in answers.answer(document, []) if a.backbone == "onehot")
    assert onehot.verdict.startswith("nothing to decide: no fine-tuning method of this pilot applies to onehot")
