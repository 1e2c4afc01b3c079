"""Data-attribution metrics against retraining functions whose true datamodel is known."""
from __future__ import annotations

import pytest
import torch

import xaikit as xk
from xaikit.metrics.data_attribution import margin, spearman


def _additive(beta: torch.Tensor, noise: float = 0.0):
    """A 'retraining' whose output at query q is exactly Σ_{i∈S} β_qi (+ seeded noise): the linear datamodel."""
    def retrain(indices: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return beta[:, indices].sum(1) + noise * torch.randn(beta.shape[0], generator=g, dtype=beta.dtype)
    return retrain


def test_lds_is_one_for_the_true_datamodel_minus_one_for_its_negative_and_subsets_are_seeded():
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(4, 40, generator=g, dtype=torch.float64)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    lds = xk.metrics.LinearDatamodelingScore(subsets=20, seed=1)
    torch.testing.assert_close(lds(_additive(beta), x, y, beta), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(lds(_additive(beta), x, y, -beta), -torch.ones(4, dtype=torch.float64))
    masks = lds.last["masks"]
    assert masks.shape == (20, 40) and bool((masks.sum(1) == 20).all())
    assert torch.equal(masks, xk.metrics.LinearDatamodelingScore(subsets=20, seed=1).masks(40))
    noisy = lds(_additive(beta, noise=3.0), x, y, beta)
    assert bool((noisy < 1).all()) and float(noisy.mean()) > 0.2
    assert xk.metrics.DATA_ATTRIBUTION_METRICS["linear_datamodeling_score"] is xk.metrics.LinearDatamodelingScore


def test_spearman_and_auc_equal_scipy_and_sklearn():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 5, (3, 30), generator=g).double(), torch.randn(3, 30, generator=g, dtype=torch.float64)
    for i in range(3):
        assert float(spearman(a, b)[i]) == pytest.approx(spearmanr(a[i], b[i]).statistic, abs=1e-12)
    scores, positive = torch.randint(0, 6, (50,), generator=g).double(), torch.rand(50, generator=g) < 0.3
    assert xk.metrics.detection_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_brittleness_flips_exactly_when_the_samples_behind_a_prediction_are_removed():
    # query q is predicted class 1 as long as any of its 3 supporting samples {3q, 3q+1, 3q+2} is in training
    def retrain(indices: torch.Tensor, seed: int):
        kept = torch.zeros(12, dtype=torch.bool)
        kept[indices] = True
        return lambda x: torch.stack([torch.zeros(x.shape[0]), kept.view(4, 3).any(1)[x[:, 0].long()].double()], 1)

    x, y = torch.arange(4.0)[:, None], torch.ones(4, dtype=torch.long)
    right = torch.zeros(4, 12, dtype=torch.float64)
    for q in range(4):
        right[q, 3 * q:3 * q + 3] = 1.0
    assert torch.equal(xk.metrics.Brittleness(k=3)(retrain, x, y, right), torch.ones(4, dtype=torch.float64))
    assert torch.equal(xk.metrics.Brittleness(k=2)(retrain, x, y, right), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(xk.metrics.Brittleness(k=3)(retrain, x, y, -right), torch.zeros(4, dtype=torch.float64))


def test_a_failing_or_wrong_retraining_function_is_a_clear_error():
    x, y, scores = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.randn(2, 10, dtype=torch.float64)

    def broken(indices, seed):
        raise KeyError("no such optimiser")

    with pytest.raises(RuntimeError, match=r"retrain failed on subset 0 \(5 training samples.*KeyError"):
        xk.metrics.LinearDatamodelingScore(subsets=3)(broken, x, y, scores)
    with pytest.raises(RuntimeError, match="retrain failed on query 0 without its top-2 proponents"):
        xk.metrics.Brittleness(k=2)(broken, x, y, scores)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        xk.metrics.LinearDatamodelingScore(subsets=3)(lambda i, s: torch.zeros(3), x, y, scores)
    with pytest.raises(ValueError, match="scores has 2 rows but x has 3"):
        xk.metrics.LinearDatamodelingScore()(broken, torch.zeros(3, 2), y, scores)
    with pytest.raises(TypeError, match="did you mean 'subsets'"):
        xk.metrics.LinearDatamodelingScore(subset=3)


def test_margin_is_the_log_odds_of_the_label():
    out = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    p = out.softmax(1)[torch.arange(6), y]
    torch.testing.assert_close(margin(out, y), torch.log(p / (1 - p)))
    torch.testing.assert_close(margin(out[:, 0], (y > 1).long()), torch.where(y > 1, out[:, 0], -out[:, 0]))
