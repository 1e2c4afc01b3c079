"""The cost-aware default of the Shapley estimators: ``estimator="auto"`` chooses by measured cost."""
import pytest
import torch

import xaikit as xk
from xaikit.methods import shapley
from xaikit.methods.machinery import shapley_surrogate
from xaikit.methods.shapley import GROWTH, choose_estimator


def test_choice_from_injected_timings():
    assert choose_estimator(evaluation_s=64.0, fit_s=5.0) == ("surrogate", 1)  # an image model: fit is cheap
    assert choose_estimator(evaluation_s=1.0, fit_s=1.0) == ("surrogate", 1)  # at most doubles the time
    assert choose_estimator(evaluation_s=1.0, fit_s=1.5) == ("plain", 1)
    assert choose_estimator(evaluation_s=1.0, fit_s=3.9) == ("plain", 2)  # powers of two
    assert choose_estimator(evaluation_s=1.0, fit_s=4.0) == ("plain", 4)
    assert choose_estimator(evaluation_s=0.02, fit_s=6.8) == ("plain", GROWTH)  # the wine MLP: capped
    assert choose_estimator(evaluation_s=0.0, fit_s=1.0) == ("plain", GROWTH)


def wine_like():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double().eval()
    return model, torch.randn(3, 10, dtype=torch.float64)


@pytest.mark.parametrize("fit_s, expected", [(1e-9, "surrogate"), (1e9, "plain")])
def test_auto_follows_the_choice_and_equals_the_named_estimator(monkeypatch, fit_s, expected):
    """With the fit's time injected, "auto" takes the chosen estimator and budget, and its result is that of the
    estimator named with that budget (same seed; a fixed batch size: the surrogate's fit carries the last bits
    of the model's outputs on, and "auto" batch sizes are timed)."""
    model, x = wine_like()
    x = x[:1] if expected == "surrogate" else x  # each fit is 3 x 1500 optimisation steps: one row
    monkeypatch.setattr(shapley, "fit_seconds", lambda *args: fit_s)
    auto = xk.KernelSHAP(model, samples=64, seed=3, batch_size=64)(x, target=1)
    assert auto.info["estimator"] == expected
    samples = 64 if expected == "surrogate" else 64 * GROWTH
    assert auto.info["samples"] == samples and auto.info["estimator_choice"]["fit_s_estimated"] == fit_s
    named = xk.KernelSHAP(model, samples=samples, seed=3, estimator=expected, batch_size=64)(x, target=1)
    torch.testing.assert_close(auto.attribution, named.attribution, rtol=0, atol=1e-12)
    if expected == "surrogate":
        return  # PermutationShapley shares the choice (test_choice_from_injected_timings); its fit is as long
    auto = xk.PermutationShapley(model, permutations=4, seed=3, batch_size=64)(x, target=1)
    orders = 4 if expected == "surrogate" else 4 * GROWTH
    assert auto.info["estimator"] == expected and auto.info["permutations"] == orders
    named = xk.PermutationShapley(model, permutations=orders, seed=3, estimator=expected, batch_size=64)(x, target=1)
    torch.testing.assert_close(auto.attribution, named.attribution, rtol=0, atol=1e-12)


def test_auto_caps_the_budget_at_every_coalition_and_skips_an_exact_design(monkeypatch):
    model, x = wine_like()
    monkeypatch.setattr(shapley, "fit_seconds", lambda *args: 1e9)
    expl = xk.KernelSHAP(model, samples=200, seed=0)(x, target=0)
    assert expl.info["samples"] == 2**10 - 2  # 8 × 200 > 1022: all of them, so the estimate is exact
    exact = xk.ExactShapley(model)(x, target=0)
    torch.testing.assert_close(expl.attribution, exact.attribution, rtol=0, atol=1e-9)
    small = xk.KernelSHAP(model, features=torch.arange(10) // 4, samples=6, seed=0)
    assert small(x, target=0).info["estimator"] == "plain"  # 3 features, 6 coalitions: exact, nothing to fit


def test_fit_time_estimate_scales_with_the_work():
    shapley_surrogate._STEP_SECONDS.pop("cpu", None)
    one = shapley_surrogate.fit_seconds(10, 500, 13)
    assert one > 0 and shapley_surrogate.fit_seconds(20, 500, 13) == pytest.approx(2 * one)
    assert shapley_surrogate.fit_seconds(10, 1000, 13) == pytest.approx(2 * one)


def test_on_a_cheap_tabular_model_the_default_does_not_fit_the_network():
    """The measured case of benchmarks/results/shapley.md: a small MLP is cheaper to evaluate than the fit."""
    model, x = wine_like()
    expl = xk.KernelSHAP(model, samples=64, seed=0)(x, target=0)
    choice = expl.info["estimator_choice"]
    assert choice["fit_s_estimated"] > choice["evaluation_s"] and expl.info["estimator"] == "plain"
