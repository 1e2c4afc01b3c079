"""Randomisation metrics: independent per-layer streams, BatchNorm kept, the user's model untouched, and the
sanity checks of the literature on the ground-truth shapes model."""
import copy

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import xaikit as xk
from models import ResNetLike, assert_unchanged, mlp, randomise_batchnorm, snapshot
from test_metrics_base import shapes_model
from test_metrics_robustness import _CountingGradient
from xaikit.explanation import Explanation
from xaikit.metrics.randomisation import _stream, randomisable_layers, randomise_layer


def test_same_shaped_layers_get_different_weights_from_independent_streams():
    # ⚠ re-seeding identically per layer gives same-shaped layers identical weights
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    again = copy.deepcopy(model[2])
    for i, layer in enumerate([model[0], model[2], model[4]]):
        randomise_layer(layer, _stream(0, i))
    weights = [model[i].weight for i in (0, 2, 4)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    randomise_layer(again, _stream(0, 1))
    assert torch.equal(again.weight, model[2].weight)  # the same (seed, layer) stream: reproducible


def test_randomised_weights_keep_the_trained_scale():
    layer = nn.Linear(200, 100)
    with torch.no_grad():
        layer.weight.mul_(7.0)
    std = float(layer.weight.detach().std())
    randomise_layer(layer, _stream(3, 0))
    assert abs(float(layer.weight.detach().std()) / std - 1) < 0.05


def test_batchnorm_is_never_reset():
    # ⚠ "randomising" BatchNorm by resetting it sets weight 1, bias 0 and the running statistics to 0/1
    model = randomise_batchnorm(ResNetLike().eval())
    assert "bn1" not in randomisable_layers(model) and "bn1" in randomisable_layers(model, include_norm=True)
    bn = model.bn1
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    randomise_layer(bn, _stream(0, 1))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


def test_mprt_leaves_the_users_model_alone_and_calls_the_method_once_per_stage():
    model = randomise_batchnorm(ResNetLike().eval())
    x = torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    method = _CountingGradient(model)
    result = xk.metrics.MPRT().evaluate(model, x, 0, method)
    layers = randomisable_layers(model)
    assert result.info["layers"] == ["original", *reversed(layers)]
    assert result.curve.shape == (2, len(layers) + 1)
    assert torch.allclose(result.curve[:, 0], torch.ones(2))
    assert method.calls == 1  # the copy explains the randomised stages; the user's method only the original
    assert_unchanged(model, before)
    bottom_up = xk.metrics.MPRT(order="bottom_up", include_norm=True).evaluate(model, x, 0, xk.Gradient(model))
    assert bottom_up.info["layers"][1:] == randomisable_layers(model, include_norm=True)
    assert_unchanged(model, before)


def test_independent_mprt_randomises_one_layer_at_a_time():
    model = mlp().eval()
    x = torch.randn(4, 8)
    metric = xk.metrics.MPRT(mode="independent", order="bottom_up", similarity="pearson", seed=5)
    curve = metric.curve(model, x, 0, xk.Gradient(model))
    names = randomisable_layers(model)
    original = xk.Gradient(model)(x, target=0).attribution
    for stage, name in enumerate(names, start=1):
        single = copy.deepcopy(model)
        randomise_layer(dict(single.named_modules())[name], _stream(5, stage - 1))
        again = xk.Gradient(single)(x, target=0).attribution
        expected = torch.tensor([np.corrcoef(a, b)[0, 1] for a, b in zip(original.numpy(), again.numpy())])
        assert torch.allclose(curve[:, stage], expected.float(), atol=1e-5)


def test_mprt_rejects_a_method_of_another_model_and_unknown_layers():
    model, other = mlp().eval(), mlp().eval()
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="different model"):
        xk.metrics.MPRT()(model, x, 0, xk.Gradient(other))
    with pytest.raises(ValueError,
                       match="layers 'fc' is not a layer with parameters of the model; valid names: 0, 2, 4"):
        xk.metrics.MPRT(layers=["fc"])(model, x, 0, xk.Gradient(model))


def test_random_logit_matches_the_closed_form_for_a_linear_model():
    weight = torch.randn(3, 12)
    model = nn.Linear(12, 3, bias=False).eval()
    with torch.no_grad():
        model.weight.copy_(weight)
    x = torch.randn(4, 12)
    target = torch.tensor([0, 1, 2, 0])
    result = xk.metrics.RandomLogit(similarity="spearman", seed=3).evaluate(model, x, target, xk.Gradient(model))
    other = result.info["other"]
    assert (other != target).all()
    for i in range(4):
        expected = scipy.stats.spearmanr(weight[target[i]].numpy(), weight[other[i]].numpy())[0]
        assert result.scores[i].item() == pytest.approx(expected, abs=1e-5)


class _Ignorant(xk.Gradient):
    """An explanation that ignores the target (the input itself): fails the random logit test."""

    def explain(self, x, target, forward_args, forward_kwargs):
        expl = super().explain(x, target, forward_args, forward_kwargs)
        return Explanation(x.clone(), expl.target, expl.output, "ignorant")


@pytest.fixture(scope="module")
def shapes():
    return shapes_model()


def _trend(mean: torch.Tensor) -> float:
    """Spearman correlation of the mean similarity with the number of randomised layers."""
    return float(scipy.stats.spearmanr(np.arange(len(mean)), mean.numpy())[0])


@pytest.mark.parametrize("name", ["input_x_gradient", "lrp"])
def test_sanity_mprt_similarity_falls_as_more_layers_are_randomised(shapes, name):
    model, data = shapes
    x, y, _ = data[:8].astuple()
    method = xk.InputXGradient(model) if name == "input_x_gradient" else xk.LRP(model)
    rank = xk.metrics.MPRT(similarity="spearman_abs").curve(model, x, y, method).nanmean(0)
    assert _trend(rank) < -0.7 and rank[-1] < 0.6 and rank[-1] < rank[1] - 0.2, rank
    structure = xk.metrics.MPRT(similarity="ssim").curve(model, x, y, method).nanmean(0)
    assert _trend(structure) < -0.5 and structure[-1] < 0.6 and structure[-1] < structure[1], structure
    smooth = xk.metrics.SmoothMPRT(samples=4, similarity="spearman_abs").curve(model, x[:4], y[:4], method)
    assert _trend(smooth.nanmean(0)) < -0.7
    assert (xk.metrics.EfficientMPRT()(model, x, y, method) > 1).float().mean() > 0.8  # explanations get noisier


@pytest.mark.parametrize("name", ["input_x_gradient", "lrp"])
def test_sanity_random_logit_separates_classes(shapes, name):
    model, data = shapes
    x, y, _ = data[:8].astuple()
    method = xk.InputXGradient(model) if name == "input_x_gradient" else xk.LRP(model)
    assert xk.metrics.RandomLogit()(model, x, y, method).mean() < 0.75
    assert xk.metrics.RandomLogit(similarity="spearman")(model, x, y, method).mean() < 0.3
    # a class-blind explanation is identical for every class: the test catches it
    assert torch.allclose(xk.metrics.RandomLogit()(model, x, y, _Ignorant(model)), torch.ones(8), atol=1e-4)
