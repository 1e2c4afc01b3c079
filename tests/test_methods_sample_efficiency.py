"""Sample efficiency of the Shapley estimators on scikit-learn's wine data (13 features), against exact values."""
import pytest
import torch

import xaikit as xk
from xaikit.zoo import train_wine_mlp

SEEDS = range(8)
BUDGET = 96  # model evaluations per sample besides v(∅): 8 orders × 12 steps for the permutation estimator


@pytest.fixture(scope="module")
def wine_game():
    """A small tanh MLP trained on standardised wine data (≈1 s); six samples; exact Shapley values."""
    model, x_all, y_all = train_wine_mlp()
    assert (model(x_all).argmax(1) == y_all).float().mean() > 0.95
    x = x_all[::30][:6]
    exact = xk.ExactShapley(model)(x).info["feature_attribution"]  # baseline 0 = the data mean
    return model, x, exact


def mean_error(make, x, exact) -> float:
    """Mean over seeds and samples of the squared error ‖φ̂ - φ‖²."""
    errors = [((make(seed)(x).info["feature_attribution"] - exact) ** 2).sum(1).mean() for seed in SEEDS]
    return float(torch.stack(errors).mean())


def test_paired_kernel_shap_no_worse_than_plain_at_equal_budget(wine_game):
    model, x, exact = wine_game
    paired = mean_error(lambda s: xk.KernelSHAP(model, samples=BUDGET, seed=s), x, exact)
    plain = mean_error(lambda s: xk.KernelSHAP(model, samples=BUDGET, paired=False, seed=s), x, exact)
    assert paired <= plain, (paired, plain)
    more = mean_error(lambda s: xk.KernelSHAP(model, samples=4 * BUDGET, seed=s), x, exact)
    assert more < paired  # consistent: more samples, smaller error


def test_antithetic_permutations_no_worse_than_plain_at_equal_budget(wine_game):
    model, x, exact = wine_game
    orders = BUDGET // 12  # 13 features: 12 new evaluations per order
    antithetic = mean_error(lambda s: xk.PermutationShapley(model, permutations=orders, seed=s), x, exact)
    plain = mean_error(lambda s: xk.PermutationShapley(model, permutations=orders, antithetic=False, seed=s), x, exact)
    assert antithetic <= plain, (antithetic, plain)
    more = mean_error(lambda s: xk.PermutationShapley(model, permutations=4 * orders, seed=s), x, exact)
    assert more < antithetic
