"""Layer and neuron attribution as methods: layer gradient × activation, layer conductance (Dhamdhere et al.
2019), neuron attribution by any method — closed forms, completeness, batch-size invariance, the model unchanged,
errors; equal to Captum where installed."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot

D = torch.float64


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)).to(D).eval()


def test_layer_gradient_x_activation_is_a_times_g():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5, bias=False), nn.ReLU(),
                          nn.Linear(5, 2, bias=False)).to(D).eval()
    before = snapshot(model)
    x = torch.randn(3, 4, dtype=D)
    expl = xk.LayerGradientXActivation(model, layer="1", batch_size=1)(x, target=1)
    a = model[:2](x)
    assert expl.attribution.shape == (3, 6)
    # bias-free ReLU network after the layer: f is homogeneous in a, so Σ a ⊙ ∂f/∂a = f (Euler)
    assert torch.allclose(expl.attribution.sum(1), model(x)[:, 1].detach(), atol=1e-12)
    grad = torch.autograd.functional.jacobian(lambda h: model[2:](h)[:, 1].sum(), a.detach())
    assert torch.allclose(expl.attribution, a.detach() * grad, atol=1e-12)
    assert_unchanged(model, before)


def test_conductance_closed_form_before_a_linear_head():
    """``f = w · y + c`` after the layer: ``Cond_y = w_y (y(x) − y(x̄))`` for every K, and completeness is exact."""
    model = mlp()
    before = snapshot(model)
    torch.manual_seed(2)
    x, ref = torch.randn(4, 5, dtype=D), torch.randn(1, 5, dtype=D)
    expl = xk.LayerConductance(model, layer="3", steps=7, baseline=ref, batch_size=5)(x, target=2)
    y, y_ref = model[:4](x), model[:4](ref)
    assert torch.allclose(expl.attribution, (model[4].weight[2] * (y - y_ref)).detach(), atol=1e-12)
    assert expl.info["convergence_delta"].abs().max() < 1e-12
    assert torch.allclose(expl.info["base_value"], model(ref)[0, 2].detach().expand(4), atol=1e-12)
    other = xk.LayerConductance(model, layer="3", steps=7, baseline=ref, batch_size=64)(x, target=2)
    assert torch.allclose(other.attribution, expl.attribution, atol=1e-12)
    assert_unchanged(model, before)


def test_conductance_converges_to_completeness_inside_the_network():
    model = mlp()
    torch.manual_seed(3)
    x = torch.randn(3, 5, dtype=D)
    coarse = xk.LayerConductance(model, layer="1", steps=4)(x, target=0).info["convergence_delta"].abs().max()
    fine = xk.LayerConductance(model, layer="1", steps=256)(x, target=0).info["convergence_delta"].abs().max()
    assert fine < coarse / 10 and fine < 1e-3


def test_neuron_attribution_closed_forms():
    model = mlp()
    before = snapshot(model)
    torch.manual_seed(4)
    x = torch.randn(3, 5, dtype=D)
    expl = xk.NeuronAttribution(model, layer="0")(x, target=5)  # a unit of the first linear layer: its weights
    assert torch.allclose(expl.attribution, model[0].weight[5].detach().expand(3, 5), atol=1e-12)
    assert expl.info["unit"] == [(5,)] * 3
    ref = torch.randn(1, 5, dtype=D)
    expl = xk.NeuronAttribution(model, layer="3", method="deep_lift", method_settings={"baseline": ref})(x)
    units = model[:4](x).argmax(1)  # target None: each sample's most active unit
    assert torch.equal(expl.target, units)
    delta = (model[:4](x).gather(1, units[:, None])[:, 0] - model[:4](ref)[0, units]).detach()
    assert torch.allclose(expl.attribution.sum(1), delta, atol=1e-12)  # DeepLIFT's summation-to-delta at the unit
    spec = xk.explain(model, x, 2, method="neuron_attribution:layer=1,method=integrated_gradients")
    assert spec.attribution.shape == x.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cut model follows the model's eval flag: no training-mode warning
        inner = xk.NeuronAttribution(model, layer="2", method="smooth_grad:samples=3,seed=0")(x, target=1)
    cut = xk.SmoothGrad(model[:3].eval(), samples=3, seed=0)(x, target=1)
    assert torch.allclose(inner.attribution, cut.attribution)
    assert_unchanged(model, before)


def test_errors():
    model = mlp()
    with pytest.raises(ValueError, match="layer"):
        xk.LayerConductance(model, layer="9")
    with pytest.raises(TypeError, match="name, spec or class"):
        xk.NeuronAttribution(model, layer="1", method=xk.Gradient(model))
    with pytest.raises(ValueError, match="out of range"):
        xk.NeuronAttribution(model, layer="1")(torch.randn(2, 5, dtype=D), target=8)


def test_equal_to_captum():
    captum = pytest.importorskip("captum.attr")
    model = mlp()
    torch.manual_seed(5)
    x = torch.randn(4, 5, dtype=D)
    ours = xk.LayerGradientXActivation(model, layer="1")(x, target=1).attribution
    theirs = captum.LayerGradientXActivation(model, model[1]).attribute(x, target=1)
    assert (ours - theirs).abs().max() <= 1e-5
    ours = xk.LayerConductance(model, layer="2", steps=20)(x, target=1).attribution
    theirs = captum.LayerConductance(model, model[2]).attribute(x, target=1, n_steps=20, method="riemann_trapezoid")
    assert (ours - theirs).abs().max() <= 1e-5
    for method, peer, kw in (("gradient", captum.NeuronGradient, {}),
                             ("deep_lift", captum.NeuronDeepLift, {}),
                             ("integrated_gradients:steps=50", captum.NeuronIntegratedGradients, {"n_steps": 50})):
        ours = xk.NeuronAttribution(model, layer="2", method=method)(x, target=3).attribution
        theirs = peer(model, model[2]).attribute(x, neuron_selector=(3,), **kw)
        assert (ours - theirs).abs().max() <= 1e-5, method
