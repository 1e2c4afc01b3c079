"""DeepLIFT (Rescale), DeepLIFT-SHAP, GradientSHAP, SmoothGrad² and VarGrad: summation-to-delta, closed forms on
small analytic models, equality with the definitions written out here, seeded determinism, batch-size invariance,
the model unchanged, clear errors. Captum, where installed, computes the same numbers (``pytest.importorskip``)."""
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
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4), nn.Sigmoid(),
                         nn.Linear(4, 3)).to(D).eval()


def cnn(act: type[nn.Module] = nn.GELU) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(4, 5, 3), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3)).to(D)
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


class Functional(nn.Module):
    """Non-linearities as functional calls, and one ReLU module called twice (Captum needs one module per call)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.a(x))
        h = torch.nn.functional.softplus(self.b(h)) + h
        h = h - 0.5
        h.relu_()  # in place, its result unused
        return self.c(self.act(h) - torch.tanh(h) + 1 / (2 + h))  # 1 / (2 + h): rescaled as σ(h) = 1 / (2 + h)


@pytest.mark.parametrize("make, shape", [(mlp, (5,)), (cnn, (2, 6, 6)), (lambda: Functional().to(D).eval(), (4,))])
def test_summation_to_delta(make, shape):
    model = make()
    before = snapshot(model)
    torch.manual_seed(3)
    x = torch.randn(4, *shape, dtype=D)
    ref = torch.randn(1, *shape, dtype=D) * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every operation of these models has its rule: no warning
        expl = xk.DeepLift(model, baseline=ref)(x, target=1)
    out = model(x)[:, 1]
    base = model(ref.expand_as(x))[:, 1]
    assert torch.allclose(expl.info["base_value"], base.detach(), atol=1e-12)
    assert torch.allclose(expl.attribution.flatten(1).sum(1), (out - base).detach(), atol=1e-10)
    assert expl.info["convergence_delta"].abs().max() < 1e-10
    assert expl.info["not_rescaled"] == []
    assert_unchanged(model, before)


def test_closed_form_one_unit():
    """``f(x) = v · σ(w·x + c)``: φ_i = v (σ(z) − σ(z̄))/(z − z̄) w_i Δx_i (Shrikumar et al. 2017, Sec. 3.5.1),
    where the gradient would give v σ'(z) w_i x_i."""
    w, c, v = torch.tensor([[1.5, -2.0, 0.5]], dtype=D), torch.tensor([0.3], dtype=D), 2.0
    for act, fn in ((nn.ReLU(), torch.relu), (nn.Sigmoid(), torch.sigmoid), (nn.Tanh(), torch.tanh)):
        lin = nn.Linear(3, 1).to(D)
        lin.weight.data, lin.bias.data = w.clone(), c.clone()
        model = nn.Sequential(lin, act, nn.Flatten(), nn.Linear(1, 1, bias=False).to(D)).eval()
        model[3].weight.data.fill_(v)
        x = torch.tensor([[1.0, -0.5, 2.0], [-1.0, 0.2, 0.1]], dtype=D)
        ref = torch.tensor([0.2, 0.4, -0.3], dtype=D)
        expl = xk.DeepLift(model, baseline=ref)(x, target=0)
        z, zr = x @ w[0] + c, ref @ w[0] + c
        expected = v * ((fn(z) - fn(zr)) / (z - zr))[:, None] * w * (x - ref)
        assert torch.allclose(expl.attribution, expected, atol=1e-12)


def test_derivative_where_the_difference_vanishes():
    """``|Δz| ≤ eps``: the multiplier is σ'(z), so ``x = x̄`` gives zero and a tiny difference the gradient."""
    model = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid()).to(D).eval()
    x = torch.tensor([[0.3, -0.2]], dtype=D)
    expl = xk.DeepLift(model, baseline=x + 1e-13)(x, target=0)
    grad = torch.autograd.functional.jacobian(lambda t: model(t)[:, 0].sum(), x)
    assert torch.allclose(expl.attribution, grad * (-1e-13), rtol=1e-6)


def test_a_division_by_an_activation_is_not_affine():
    class Ratio(nn.Module):
        def forward(self, x):
            return torch.div(x[:, :1], 1 + x[:, 1:].square())

    model = nn.Sequential(nn.Linear(2, 2), Ratio()).to(D).eval()
    with pytest.warns(UserWarning, match="div"):
        expl = xk.DeepLift(model)(torch.randn(3, 2, dtype=D), target=0)
    assert "div" in expl.info["not_rescaled"]


def test_max_pooling_is_named_and_the_delta_reported():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2)).to(D).eval()
    x, ref = torch.randn(3, 1, 6, 6, dtype=D), torch.randn(1, 1, 6, 6, dtype=D)
    with pytest.warns(UserWarning, match="max_pool2d"):
        expl = xk.DeepLift(model, baseline=ref)(x, target=0)
    assert expl.info["not_rescaled"] == ["max_pool2d"]
    delta = expl.attribution.flatten(1).sum(1) - (model(x)[:, 0] - model(ref)[:, 0]).detach()
    assert torch.allclose(expl.info["convergence_delta"], delta, atol=1e-12)


def test_deep_lift_shap_is_the_mean_of_deep_lift_and_batch_invariant():
    model = mlp()
    before = snapshot(model)
    torch.manual_seed(5)
    x, background = torch.randn(3, 5, dtype=D), torch.randn(4, 5, dtype=D)
    expl = xk.DeepLiftShap(model, background=background, batch_size=5)(x, target=2)
    each = [xk.DeepLift(model, baseline=b)(x, target=2).attribution for b in background]
    assert torch.allclose(expl.attribution, torch.stack(each).mean(0), atol=1e-12)
    assert torch.allclose(expl.info["base_value"], model(background)[:, 2].mean().detach().expand(3), atol=1e-12)
    assert expl.info["convergence_delta"].abs().max() < 1e-10
    other = xk.DeepLiftShap(model, background=background, batch_size=1)(x, target=2)
    assert torch.allclose(other.attribution, expl.attribution, atol=1e-12)
    assert_unchanged(model, before)


def test_gradient_shap_closed_form_seeded_and_batch_invariant():
    torch.manual_seed(6)
    linear = nn.Linear(4, 2).to(D).eval()
    x, b = torch.randn(3, 4, dtype=D), torch.randn(1, 4, dtype=D)
    expl = xk.GradientShap(linear, background=b, samples=5, seed=0)(x, target=1)
    assert torch.allclose(expl.attribution, linear.weight[1].detach() * (x - b), atol=1e-12)  # every draw equal
    assert expl.info["convergence_delta"].abs().max() < 1e-12
    model = mlp()
    background = torch.randn(6, 5, dtype=D)
    x = torch.randn(4, 5, dtype=D)
    one = xk.GradientShap(model, background=background, samples=16, seed=3, batch_size=7)(x, target=0)
    two = xk.GradientShap(model, background=background, samples=16, seed=3, batch_size=64)(x, target=0)
    alone = xk.GradientShap(model, background=background, samples=16, seed=3)(x[:1], target=0)
    assert torch.allclose(one.attribution, two.attribution, atol=1e-12)
    assert torch.allclose(one.attribution[:1], alone.attribution, atol=1e-12)  # draws do not depend on batch mates
    assert torch.allclose(one.info["base_value"], model(background)[:, 0].mean().detach().expand(4), atol=1e-12)
    # expected gradients: the mean over the background of IG; the Monte-Carlo error falls with the draws
    ig = torch.stack([xk.IntegratedGradients(model, baseline=r, steps=16)(x, target=0).attribution
                      for r in background]).mean(0)
    many = xk.GradientShap(model, background=background, samples=2000, seed=1)(x, target=0)
    assert (many.attribution - ig).abs().max() < 0.25 * (one.attribution - ig).abs().max()


def test_smoothgrad_squared_and_vargrad():
    torch.manual_seed(7)
    linear = nn.Linear(4, 1).to(D).eval()
    x = torch.randn(3, 4, dtype=D)
    w = linear.weight[0].detach()
    sq = xk.SmoothGradSquared(linear, samples=8, seed=0)(x, target=0)
    var = xk.VarGrad(linear, samples=8, seed=0)(x, target=0)
    assert torch.allclose(sq.attribution, (w ** 2).expand_as(x), atol=1e-12)  # constant gradient: w², variance 0
    assert var.attribution.abs().max() < 1e-12
    model = mlp()
    kw = dict(method="gradient", samples=6, seed=4)
    x = torch.randn(2, 5, dtype=D)
    mean = xk.SmoothGrad(model, **kw)(x, target=1).attribution
    sq = xk.SmoothGrad(model, aggregation="square", **kw)(x, target=1).attribution
    var = xk.explain(model, x, 1, method="var_grad:samples=6,seed=4").attribution
    assert torch.allclose(var, sq - mean ** 2, atol=1e-12) and (var > 0).all()
    with pytest.raises(ValueError, match="aggregation"):
        xk.SmoothGrad(model, aggregation="median")


def test_errors():
    model = mlp()
    x = torch.randn(2, 5, dtype=D)
    with pytest.raises(ValueError, match="background"):
        xk.DeepLiftShap(model, background=torch.randn(3, 4, dtype=D))(x)
    with pytest.raises(TypeError, match="background"):
        xk.GradientShap(model, background=[1, 2])
    with pytest.raises(ValueError, match="baseline"):
        xk.DeepLift(model, baseline=torch.randn(3, 3, dtype=D))(x)
    with pytest.raises(TypeError, match="basline"):
        xk.DeepLift(model, basline=0)

    class TimeMajor(nn.Module):
        def forward(self, x):
            return torch.relu(x.t()).t()

    with pytest.raises(ValueError, match="first dimension is not the batch"):
        xk.DeepLift(nn.Sequential(TimeMajor(), nn.Linear(5, 2)).to(D).eval())(x)


# ---- Captum, where installed: the same numbers on shared models --------------------------------------------------

def test_equal_to_captum():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(8)
    for model, shape in ((mlp(), (5,)), (cnn(nn.Sigmoid), (2, 6, 6))):
        x, ref = torch.randn(3, *shape, dtype=D), torch.randn(1, *shape, dtype=D)
        background = torch.randn(4, *shape, dtype=D)
        ours = xk.DeepLift(model, baseline=ref)(x, target=1).attribution
        theirs = captum.DeepLift(model).attribute(x, baselines=ref, target=1)
        assert (ours - theirs).abs().max() <= 1e-5
        ours = xk.DeepLiftShap(model, background=background)(x, target=1).attribution
        theirs = captum.DeepLiftShap(model).attribute(x, baselines=background, target=1)
        assert (ours - theirs).abs().max() <= 1e-5
        ours = xk.SmoothGradSquared(model, samples=4, sigma=0.0)(x, target=1).attribution
        theirs = captum.Saliency(model).attribute(x, target=1, abs=False) ** 2
        assert (ours - theirs).abs().max() <= 1e-5
    # Captum departs from the paper where a non-linearity is not in its table (GELU, SiLU, functional calls): it
    # keeps the gradient there, and summation-to-delta fails; ours rescales every element-wise non-linearity
    model, x, ref = cnn(nn.GELU), torch.randn(3, 2, 6, 6, dtype=D), torch.zeros(1, 2, 6, 6, dtype=D)
    _, delta = captum.DeepLift(model).attribute(x, baselines=ref, target=1, return_convergence_delta=True)
    assert delta.abs().max() > 1e-4
    assert xk.DeepLift(model, baseline=ref)(x, target=1).info["convergence_delta"].abs().max() < 1e-10
    linear = nn.Linear(5, 2).to(D).eval()  # GradientSHAP draws at random: equal where every draw is the same
    x, b = torch.randn(3, 5, dtype=D), torch.randn(1, 5, dtype=D)
    ours = xk.GradientShap(linear, background=b, samples=3, seed=0)(x, target=1).attribution
    theirs = captum.GradientShap(linear).attribute(x, baselines=b, target=1, n_samples=3)
    assert (ours - theirs).abs().max() <= 1e-5
