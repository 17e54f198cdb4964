"""Linear probes equal scikit-learn on hand-made data, pick their regularization on valid, and run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression, Ridge

from plm_bench import BenchError, plugins
from plm_bench.cli import main
from plm_bench.results.store import Store


def probe(name: str, hidden: int, out: int):
    spec = plugins.get("head", name)
    return spec.build(hidden, out, spec.levels[0])


def test_ridge_probe_equals_scikit_learn_on_the_pooled_features():
    rng = np.random.default_rng(0)
    hidden = torch.tensor(rng.normal(size=(30, 5, 4)), dtype=torch.float32)
    mask = torch.ones(30, 5, dtype=torch.bool)
    mask[:10, 3:] = False
    y = rng.normal(size=30)
    head = probe("probe-mean", 4, 1)
    x = head.design(hidden, mask).numpy()
    head.fit(x, y, 0.5)
    expected = Ridge(alpha=0.5).fit(x, y).predict(x)
    pooled = np.stack([hidden[i, mask[i]].mean(0).numpy() for i in range(30)])  # masked mean by hand
    np.testing.assert_allclose(x, pooled, rtol=1e-6)
    np.testing.assert_allclose(head(hidden, mask).squeeze(-1).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_probe_predicts_the_classes_scikit_learn_predicts(classes):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (classes == 3) * (x[:, 1] > 0.5).astype(int)
    head = probe("probe-mean", 6, classes)
    head.fit(x, y, 1.0)
    expected = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    logits = head.linear(torch.from_numpy(x)).detach().numpy()
    assert (logits.argmax(1) == expected.predict(x)).all()
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), expected.predict_proba(x),
                               rtol=1e-3, atol=1e-4)


def test_flat_probe_refuses_proteins_of_different_lengths():
    head = probe("probe-flat", 3, 1)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    with pytest.raises(BenchError, match="probe-flat needs proteins of one length"):
        head.design(torch.zeros(2, 3, 3), mask)


def test_position_aware_onehot_beats_composition_on_gb1(data_dir, tmp_path):
    """GB1 varies at 4 positions: mean-pooled one-hot (composition) barely sees it, flattened one-hot does."""
    store = tmp_path / "s.sqlite"
    common = ["run", "--backbone", "onehot", "--task", "gb1", "--data-dir", str(data_dir), "--store", str(store),
              "--limit-train", "800", "--limit-eval", "400"]
    for head in ("probe-mean", "probe-flat"):
        result = CliRunner().invoke(main, [*common, "--head", head])
        assert result.exit_code == 0, result.output
    scores = {r["config"]["head"]: r["metrics"]["test"]["spearman"] for r in Store(store).records()}
    assert scores["probe-flat"] > scores["probe-mean"] + 0.05, scores  # full data: 0.750 vs 0.538
    [flat] = [r for r in Store(store).records() if r["config"]["head"] == "probe-flat"]
    assert [h["strength"] for h in flat["history"]] == sorted(h["strength"] for h in flat["history"])
    assert flat["checkpoints"]["early-stop"]["valid"] == max(h["valid"] for h in flat["history"])
