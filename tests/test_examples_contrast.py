"""Counterfactual targets: ``Contrast(a, b)`` ("why a rather than b") with every attribution method, and on the
command line (``--target A-B``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.targets import Contrast

SETTINGS = {
    # the Shapley estimators are linear in the game only without the network surrogate (a nonlinear fit)
    "integrated_gradients": {"steps": 8},
    "kernel_shap": {"samples": 64, "seed": 0, "features": "grid:4", "estimator": "plain"},
    "lime": {"samples": 64, "seed": 0, "features": "grid:4"}, "exact_shapley": {"features": "grid:2"},
    "permutation_shapley": {"permutations": 4, "seed": 0, "features": "grid:4", "estimator": "plain"},
    "meaningful_perturbation": {"iterations": 5}, "occlusion": {"window": 4, "stride": 4},
    "rise": {"masks": 32, "seed": 0, "grid": 2}, "smooth_grad": {"samples": 4, "seed": 0},
    "deep_lift_shap": {"background": torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))},
    "gradient_shap": {"background": torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)),
                      "samples": 4, "seed": 0},
    "smooth_grad_squared": {"samples": 4, "seed": 0}, "var_grad": {"samples": 4, "seed": 0},
    "layer_gradient_x_activation": {"layer": "2"}, "layer_conductance": {"layer": "2", "steps": 4},
    "neuron_attribution": {"layer": "2"},
}
#: methods whose attribution is linear in the explained output value: Contrast(a, b) = explain(a) − explain(b)
LINEAR = ("gradient", "input_x_gradient", "integrated_gradients", "lrp", "occlusion", "kernel_shap", "lime",
          "exact_shapley", "permutation_shapley", "rise", "smooth_grad", "excitation_backprop", "deep_lift",
          "deep_lift_shap", "gradient_shap", "layer_gradient_x_activation", "layer_conductance",
          "neuron_attribution")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()


@pytest.mark.parametrize("name", sorted(xk.METHODS))
def test_every_method_explains_a_contrast(name):
    model = _model()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    method = xk.get_method(name)(model, **SETTINGS.get(name, {}))
    expl = method(x, target=Contrast(0, 2))
    assert expl.attribution.shape[0] == 2 and torch.isfinite(expl.attribution).all()
    assert expl.target.tolist() == [0, 0]
    if name in LINEAR:
        a, b = method(x, target=0).attribution, method(x, target=2).attribution
        assert torch.allclose(expl.attribution, a - b, atol=1e-5), name


def test_contrast_with_argmax_and_per_sample_classes():
    model = _model()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    predicted = model(x).argmax(1)
    other = (predicted + 1) % 3
    expl = xk.Gradient(model)(x, target=Contrast(None, other))
    expected = xk.Gradient(model)(x, target=predicted).attribution - xk.Gradient(model)(x, target=other).attribution
    assert torch.allclose(expl.attribution, expected, atol=1e-6)
    with pytest.raises(ValueError, match="target.b"):
        xk.Gradient(model)(x, target=Contrast(0, 5))


def test_cli_target_a_minus_b():
    import argparse

    from xaikit.cli.commands import target_of
    from xaikit.cli.errors import UsageError

    inputs = type("Inputs", (), {"target": None, "x": torch.zeros(2, 3), "__len__": lambda self: 2})()
    parse = lambda text: target_of(argparse.Namespace(target=text), inputs)  # noqa: E731
    assert parse("3-5") == Contrast(3, 5) and parse("argmax-1") == Contrast(None, 1)
    assert parse("2") == 2 and parse(None) is None
    with pytest.raises(UsageError, match="A-B"):
        parse("a-b")
