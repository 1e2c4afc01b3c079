"""Robustness and axiomatic metrics: closed forms on linear models, one method call per batch."""
import math

import pytest
import torch

import xaikit as xk
from models import assert_unchanged, mlp, snapshot
from test_metrics_base import LinearScore, linear_case


class _CountingGradient(xk.Gradient):
    """Gradient that counts its calls and the samples it explains (not registered: leading underscore)."""

    def explain(self, x, target, forward_args, forward_kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        self.samples = getattr(self, "samples", 0) + x.shape[0]
        return super().explain(x, target, forward_args, forward_kwargs)


class _CountingIxG(_CountingGradient):
    multiply_by_input = True


REEXPLAINING = [
    lambda: xk.metrics.LocalLipschitzEstimate(samples=4),
    lambda: xk.metrics.MaxSensitivity(samples=4),
    lambda: xk.metrics.AvgSensitivity(samples=4),
    lambda: xk.metrics.Continuity(shifts=2),
    lambda: xk.metrics.RelativeInputStability(samples=4),
    lambda: xk.metrics.RelativeOutputStability(samples=4),
    lambda: xk.metrics.RelativeRepresentationStability(samples=4),
]


@pytest.mark.parametrize("make", REEXPLAINING)
def test_a_constant_explanation_is_perfectly_robust(make):
    model, x, _ = linear_case(n=3)
    scores = make()(model, x, 0, xk.Gradient(model))  # the gradient of a linear model never changes
    assert torch.allclose(scores, torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("make", REEXPLAINING)
def test_the_method_is_called_once_for_all_perturbed_inputs(make):
    model, x, _ = linear_case(n=3)
    method = _CountingGradient(model)
    metric = make()
    metric(model, x, 0, method)
    perturbed = 3 * getattr(metric, "samples", getattr(metric, "shifts", 0))
    assert method.calls == 2 and method.samples == 3 + perturbed  # the batch, then all perturbations at once


def test_local_lipschitz_of_gradient_times_input_with_equal_weights_is_the_weight():
    model = LinearScore(torch.full((3, 4, 4), 0.5)).eval()
    x = torch.randn(2, 3, 4, 4)
    scores = xk.metrics.LocalLipschitzEstimate(samples=5)(model, x, 0, xk.InputXGradient(model))
    assert torch.allclose(scores, torch.full((2,), 0.5), atol=1e-5)  # ‖0.5 δ‖ / ‖δ‖


def test_sensitivity_of_gradient_times_input_is_bounded_by_the_ball():
    model = LinearScore(torch.full((3, 4, 4), 0.5)).eval()
    x = torch.randn(2, 3, 4, 4)
    radius = 0.02
    top = xk.metrics.MaxSensitivity(samples=8, radius=radius)(model, x, 0, xk.InputXGradient(model))
    mean = xk.metrics.AvgSensitivity(samples=8, radius=radius)(model, x, 0, xk.InputXGradient(model))
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    bound = radius * spread * math.sqrt(48) / x.flatten(1).norm(dim=1)  # ‖δ‖∞ ≤ r·range ⇒ ‖δ‖₂ ≤ r·range·√D
    assert (top > 0).all() and (top <= bound).all() and (mean <= top + 1e-7).all()
    unnormalised = xk.metrics.MaxSensitivity(samples=8, radius=radius, normalise=False)
    assert torch.allclose(unnormalised(model, x, 0, xk.InputXGradient(model)), top * 0.5 * x.flatten(1).norm(dim=1), rtol=1e-4)


def test_relative_stability_of_gradient_times_input():
    model, x, _ = linear_case(n=2)
    # R = w ⊙ x, so (R − R')/R = (x − x')/x element-wise: relative input stability is exactly 1
    ris = xk.metrics.RelativeInputStability(samples=6, noise=0.01)(model, x, 0, xk.InputXGradient(model))
    assert torch.allclose(ris, torch.ones(2), atol=1e-4)
    assert (xk.metrics.RelativeOutputStability(samples=6, noise=0.01)(model, x, 0, xk.InputXGradient(model)) > 0).all()


def test_representation_stability_layer_names():
    model = mlp().eval()
    x = torch.randn(3, 8)
    before = snapshot(model)
    metric = xk.metrics.RelativeRepresentationStability(layer="2", samples=4, noise=0.005)
    assert metric(model, x, None, xk.InputXGradient(model)).shape == (3,)
    with pytest.raises(ValueError, match="layer 'conv9' is not a module of the model; valid names: 0, 1, 2"):
        xk.metrics.RelativeRepresentationStability(layer="conv9")(model, x, None, xk.InputXGradient(model))
    assert_unchanged(model, before)  # the hook is gone, also after the call that raised


def test_consistency_on_hand_made_explanations():
    x = -torch.rand(4, 1, 3, 3)
    x[3, 0, 0, 0] = 1.0

    class Sign(torch.nn.Module):
        def forward(self, inputs):
            return torch.nn.functional.one_hot((inputs[:, 0, 0, 0] > 0).long(), 2).float()

    attribution = torch.zeros(4, 1, 3, 3)
    attribution[:2, 0, 0, :2] = 1.0  # samples 0, 1: the same top-2 pixels
    attribution[2:, 0, 2, :2] = 1.0  # samples 2, 3: the same top-2 pixels, different predictions
    scores = xk.metrics.Consistency(k=2)(Sign().eval(), x, 0, attribution)
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_completeness_uses_a_tolerance_not_float_equality():
    model, x, attribution = linear_case(n=3)
    metric = xk.metrics.Completeness()
    result = metric.evaluate(model, x, 0, attribution)
    assert result.scores.tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(result.info["gap"], torch.zeros(3), atol=1e-4)
    # ⚠ float round-off must not fail completeness
    assert metric(model, x, 0, attribution * (1 + 1e-6)).tolist() == [1.0, 1.0, 1.0]
    assert metric(model, x, 0, attribution * 1.5).tolist() == [0.0, 0.0, 0.0]
    # a bias-free ReLU network is positively homogeneous: gradient × input is complete (Euler)
    relu = mlp(bias=False).eval()
    z = torch.randn(4, 8)
    assert metric(relu, z, None, xk.InputXGradient(relu)(z)).tolist() == [1.0] * 4
    biased = mlp(bias=True).eval()
    with torch.no_grad():
        biased[4].bias.fill_(3.0)
    assert metric(biased, z, 0, xk.InputXGradient(biased)(z, target=0)).tolist() == [0.0] * 4


def test_non_sensitivity_counts_disagreements():
    weight = torch.ones(1, 4, 4)
    weight[:, :, :2] = 0  # the left half does not matter
    model = LinearScore(weight).eval()
    x = torch.rand(2, 1, 4, 4) + 0.5
    metric = xk.metrics.NonSensitivity(pixels_per_step=1)
    assert metric(model, x, 0, weight * x).tolist() == [0.0, 0.0]
    assert metric(model, x, 0, torch.ones_like(x)).tolist() == [8.0, 8.0]  # relevance on 8 irrelevant pixels
    missing = (weight * x).clone()
    missing[:, :, 0, 3] = 0  # a relevant pixel without relevance
    assert metric(model, x, 0, missing).tolist() == [1.0, 1.0]


def test_input_invariance():
    model, x, _ = linear_case(n=2)
    before = snapshot(model)
    metric = xk.metrics.InputInvariance(shift=2.0)
    assert metric(model, x, 0, xk.Gradient(model)).tolist() == [1.0, 1.0]
    assert (metric(model, x, 0, xk.InputXGradient(model)) < 0.1).all()
    assert_unchanged(model, before)
