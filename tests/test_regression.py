"""Regression: f(x) - f(x_ref) of a real-valued output, the base value, completeness, and the metrics on values."""
import copy

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.regression import Regression
from xaikit.targets import Value

LINEAR_METHODS = ["input_x_gradient", "integrated_gradients", "lrp:composite=zero", "exact_shapley", "occlusion"]


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double().eval()
    return model, torch.randn(4, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)


@pytest.mark.parametrize("method", LINEAR_METHODS)
@pytest.mark.parametrize("output", [0, 1])
def test_linear_relevance_is_w_times_difference(linear, method, output):
    """f(x) = Wx + b: every method with completeness gives R = w_k ⊙ (x - x_ref), and the base value f_k(x_ref)."""
    model, x, ref = linear
    before = snapshot(model)
    expl = Regression(model, method=method, reference=ref)(x, target=output)
    w = model.weight[output].detach()
    torch.testing.assert_close(expl.attribution, w * (x - ref), atol=1e-12, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(expl.info["base_value"], model(ref[None])[:, output].expand(4), atol=1e-12, rtol=0)
        torch.testing.assert_close(expl.info["prediction"], model(x)[:, output], atol=1e-12, rtol=0)
    assert expl.info["completeness_gap"].abs().max() < 1e-12
    assert expl.info["base_value"].shape == (4,) and expl.target.tolist() == [output] * 4
    assert_unchanged(model, before)


def test_per_sample_reference_and_the_methods_without_baseline(linear):
    model, x, _ = linear
    refs = torch.randn_like(x)
    expl = Regression(model, method="integrated_gradients", reference=refs)(x, target=1)
    torch.testing.assert_close(expl.attribution, model.weight[1].detach() * (x - refs), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reference.*baseline"):  # a shifted model needs one reference input
        Regression(model, method="lrp", reference=refs)(x, target=0)
    with pytest.raises(ValueError, match="target: the model has 2 outputs"):
        Regression(model)(x)
    with pytest.raises(ValueError, match="reference"):  # a method object cannot take the reference
        Regression(model, method=xk.InputXGradient(model), reference=refs[0])(x, target=0)
    with pytest.raises(TypeError, match="did you mean 'reference'"):
        Regression(model, referenc=0.0)


@pytest.fixture(scope="module")
def diabetes():
    """A small tanh MLP trained on scikit-learn's diabetes data (float64, a second or two)."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x), torch.tensor(y)
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    optimiser = torch.optim.Adam(model.parameters(), 2e-2)
    for _ in range(100):
        optimiser.zero_grad()
        loss = ((model(x)[:, 0] - y) ** 2).mean()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.6  # it learned something (the variance of y is 1)
    return model.eval(), x


def test_diabetes_integrated_gradients_completeness(diabetes):
    model, x = diabetes
    before = snapshot(model)
    expl = Regression(model, method_settings={"steps": 64}, reference=x.mean(0))(x[:16])
    assert expl.info["completeness_gap"].abs().max() < 1e-9  # Σ IG = f(x) - f(x_ref) (Gauss-Legendre, smooth f)
    torch.testing.assert_close(expl.info["completeness_gap"], expl.info["convergence_delta"])
    with torch.no_grad():
        torch.testing.assert_close(expl.info["base_value"], model(x.mean(0)[None])[:, 0].expand(16))
    assert_unchanged(model, before)


def test_diabetes_lrp_conservation_in_a_bias_free_copy(diabetes):
    model, x = diabetes
    free = copy.deepcopy(model)
    with torch.no_grad():
        for layer in free:
            if isinstance(layer, nn.Linear):
                layer.bias.zero_()
    zero = Regression(free, method="lrp:composite=zero")(x[:16])
    assert zero.info["base_value"].abs().max() == 0  # f(0) = 0 without biases (tanh(0) = 0)
    assert zero.info["completeness_gap"].abs().max() < 1e-12  # Σ R = f(x): LRP-0 conserves
    eps = Regression(free, method="lrp:composite=epsilon")(x[:16])
    absorbed = eps.info["conservation"]["absorbed"]
    assert absorbed.abs().max() > 0  # ε takes a share, which the engine books ...
    torch.testing.assert_close(eps.info["completeness_gap"], -absorbed, atol=1e-12, rtol=0)  # ... all of it


def test_metrics_score_the_value_not_a_probability(linear, diabetes):
    """Deletion scores softmax probabilities by default; on a regression target it scores the output value."""
    model, x = diabetes
    expl = Regression(model, method="input_x_gradient")(x[:6])
    raw = xk.metrics.PixelFlipping(pixels_per_step=2, softmax=False).curve(model, x[:6], Value(0), expl.attribution)
    deletion = xk.metrics.Deletion(pixels_per_step=2)
    torch.testing.assert_close(deletion.curve(model, x[:6], None, expl), raw)  # the Explanation says "regression"
    torch.testing.assert_close(deletion.curve(model, x[:6], Value(0), expl.attribution), raw)
    with torch.no_grad():
        torch.testing.assert_close(raw[:, 0], model(x[:6])[:, 0].float().to(raw.dtype))
    with pytest.raises(ValueError, match="Value"):  # a single output without the regression target: named
        deletion(model, x[:6], None, expl.attribution)
    two, xs, _ = linear  # two outputs: a value target is never pushed through a softmax over the outputs
    attribution = Regression(two, method="input_x_gradient")(xs, target=1).attribution
    curve = deletion.curve(two, xs, Value(1), attribution)
    with torch.no_grad():
        torch.testing.assert_close(curve[:, 0], two(xs)[:, 1].to(curve.dtype))
