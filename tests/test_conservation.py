"""Conservation: LRP-0/ε relevance at the input sums to the starting relevance on bias-free networks; with
biases, input relevance + absorbed = starting relevance. No per-architecture code anywhere."""
import copy

import pytest
import torch

import xaikit as xk
from xaikit.propagation import Composite, rules as R
from models import DenseBlockNet, ResNetLike, mlp, randomise_batchnorm, vgg_like, zero_biases

NETS = {
    "mlp": lambda bias: (mlp(bias), (5, 8)),
    "vgg": lambda bias: (vgg_like(bias), (3, 3, 16, 16)),
    "resnet": lambda bias: (randomise_batchnorm(ResNetLike(bias)), (3, 3, 16, 16)),
    "densenet": lambda bias: (randomise_batchnorm(DenseBlockNet(bias)), (3, 3, 16, 16)),
}


def _relative_gap(expl):
    c = expl.info["conservation"]
    return ((c["input"] - c["start"]).abs() / c["start"].abs()).max().item()


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("composite", ["zero", "epsilon"])
def test_bias_free_networks_conserve(net, composite):
    model, shape = NETS[net](True)
    model = zero_biases(model).eval()
    x = torch.randn(shape)
    expl = xk.LRP(model, composite=composite)(x)
    assert _relative_gap(expl) < 1e-4
    assert expl.info["coverage"]["unknown"] == {}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("composite", ["zero", "epsilon", "epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_with_biases_absorbed_relevance_closes_the_balance(net, composite):
    model, shape = NETS[net](True)
    model.eval()
    x = torch.randn(shape)
    settings = {"epsilon": 0.05} if composite != "zero" else {}
    c = xk.LRP(model, composite=composite, **settings)(x).info["conservation"]
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-4, atol=1e-5)
    assert c["residual"].abs().max() < 1e-4 * c["start"].abs().max() + 1e-5


@pytest.mark.parametrize("net", ["mlp", "vgg", "resnet"])
@pytest.mark.parametrize("rule", [R.zplus(epsilon=0.5), R.gamma(0.25, epsilon=0.5), R.alpha_beta(2.0, 1.0, epsilon=0.5)],
                         ids=["zplus", "gamma", "alpha_beta"])
def test_large_stabilisers_are_absorbed(net, rule):
    """ε far from negligible, with biases: what the rules report absorbed (for z⁺ and rectified γ computed from
    the output side) closes the balance exactly."""
    model, shape = NETS[net](True)
    model.eval()
    composite = Composite(f"large-{rule.name}", conv=rule, dense=rule)
    c = xk.LRP(model, composite=composite)(torch.randn(shape)).info["conservation"]
    assert (c["absorbed"].abs() > 1e-3 * c["start"].abs()).all()  # ε matters here
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-4, atol=1e-5)


def test_lrp_zero_equals_gradient_times_input_on_relu_nets():
    model = vgg_like(bias=True).eval()
    x = torch.randn(2, 3, 16, 16)
    lrp = xk.LRP(model, composite="zero")(x).attribution
    gxi = xk.InputXGradient(model)(x).attribution
    torch.testing.assert_close(lrp, gxi)


def test_contrastive_target_starts_from_the_logit_difference():
    model = zero_biases(mlp()).eval()
    x = torch.randn(4, 8)
    expl = xk.LRP(model, composite="zero")(x, target=xk.Contrast(0, 2))
    out = model(x).detach()
    torch.testing.assert_close(expl.attribution.sum(1), out[:, 0] - out[:, 2], rtol=1e-4, atol=1e-6)
    assert expl.target.tolist() == [0] * 4


@pytest.mark.parametrize("composite", ["zero", "epsilon", "epsilon_plus_flat", "epsilon_gamma_box"])
def test_efficientnet_lite0_bias_free_conserves(efficientnet, chelsea, composite):
    model = zero_biases(copy.deepcopy(efficientnet))
    settings = {"low": -1.0, "high": 1.0} if "box" in composite else {}
    expl = xk.LRP(model, composite=composite, **settings)(chelsea)
    c = expl.info["conservation"]
    if composite in ("zero", "epsilon"):
        assert _relative_gap(expl) < 1e-4
    # every composite: nothing lost outside of what the rules themselves absorb
    assert (c["residual"].abs() / c["start"].abs()).max() < 1e-4


@pytest.mark.parametrize("composite", xk.propagation.PRESETS)
def test_every_preset_runs_on_efficientnet_lite0_without_unknown_ops(efficientnet, chelsea, composite):
    expl = xk.LRP(efficientnet, composite=composite)(chelsea)
    assert expl.target.tolist() == [285]  # Egyptian cat
    assert expl.info["coverage"]["unknown"] == {}
    assert torch.isfinite(expl.attribution).all() and expl.attribution.abs().sum() > 0
