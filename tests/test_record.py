"""Record and Condition (xaikit.propagation.record): relevance at layers equals the explanation of the model's
upper part at that layer's activation; conditional heatmaps sum to the unconditional one; one batched pass
equals one pass per concept; hooks leave nothing behind."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.propagation.record import Recorder, condition_masks, find_modules


def _model(bias: bool = True, seed: int = 0) -> nn.Sequential:
    """conv–BN–ReLU, conv–ReLU, pool, conv–ReLU, global pool, linear: BN folding and fused rectifiers."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3, bias=bias),
    )
    bn = model[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    if bias:
        bn.bias.data.uniform_(-0.2, 0.2)
    else:
        bn.bias.data.zero_()
        bn.running_mean.zero_()
    return model.eval()


def _x(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g)


# (recorded module, first module of the upper part): the relevance at a conv whose BatchNorm is folded into it
# and whose ReLU passes the gradient on is that of the ReLU's output
CASES = [("0", 3), ("1", 3), ("2", 3), ("3", 5), ("4", 5), ("5", 6), ("6", 8), ("7", 8)]


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus", "epsilon_alpha2_beta1", "zero"])
def test_relevance_at_a_layer_is_the_upper_parts_explanation(composite):
    model = _model()
    x = _x()
    layers = [name for name, _ in CASES]
    with Recorder(model, layers) as rec:
        expl = xk.LRP(model, composite=composite, batch_size=2)(x, target=1)
    plain = xk.LRP(model, composite=composite, batch_size=2)(x, target=1)
    assert torch.equal(expl.attribution, plain.attribution)  # recording changes nothing
    for name, start in CASES:
        if composite == "zero" and name == "0":  # LRP-0 folds no BatchNorm: the BatchNorm is a linear layer
            start = 1
        activation = model[:start](x)
        upper = nn.Sequential(*model[start:]).eval()
        reference = xk.LRP(upper, composite=composite, batch_size=2)(activation, target=1).attribution
        # the upper part's first layer is not a "first layer" rule here: the composites above have none
        assert torch.allclose(rec[name].relevance, reference, atol=1e-5, rtol=1e-4), (composite, name)
    assert torch.equal(rec["3"].activation, model[:4](x))
    assert expl.attribution.shape == x.shape


@pytest.mark.parametrize("method", [xk.Gradient, xk.InputXGradient])
def test_relevance_of_gradient_methods_is_activation_times_gradient(method):
    model = _model()
    x = _x()
    with Recorder(model, ["4"]) as rec:
        method(model, batch_size=1)(x, target=2)
    a = model[:5](x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model[5:](a)[:, 2].sum(), a)
    assert torch.allclose(rec["4"].relevance, a * g, atol=1e-6)
    assert torch.allclose(rec["4"].per_channel(), (a * g).sum((2, 3)), atol=1e-6)


def test_conservation_at_layers_of_a_bias_free_model():
    model = _model(bias=False)
    x = _x()
    with Recorder(model, ["2", "4", "7"]) as rec:
        expl = xk.LRP(model, composite="epsilon", epsilon=1e-9)(x, target=0)
    logit = expl.output[:, 0]
    for name in ("2", "4", "7"):
        assert torch.allclose(rec[name].relevance.flatten(1).sum(1), logit, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus_flat", "epsilon_gamma_box"])
def test_conditional_heatmaps_sum_to_the_unconditional_one(composite):
    model = _model(bias=False)
    x = _x(1)
    method = xk.LRP(model, composite=composite, epsilon=1e-9) if composite == "epsilon" else \
        xk.LRP(model, composite=composite)
    full = method(x, target=0).attribution
    for layer, channels in (("3", 6), ("7", 8)):
        masks = condition_masks(list(range(channels)), channels)
        with Recorder(model, [layer], masks={layer: masks}) as rec:
            parts = method(x.expand(channels, -1, -1, -1), target=0).attribution
        assert torch.allclose(parts.sum(0, keepdim=True), full, atol=1e-5, rtol=1e-4), (composite, layer)
        # the relevance recorded at a conditioned layer is the one arriving there (before its own mask)
        with Recorder(model, [layer]) as plain:
            method(x, target=0)
        per_channel = rec[layer].per_channel()
        assert torch.allclose(per_channel, plain[layer].per_channel().expand(channels, -1), atol=1e-6)


def test_one_batched_pass_equals_one_pass_per_concept():
    model = _model()
    x = _x(1)
    concepts = [[0], [1, 2], [5], [0, 3, 4]]
    method = xk.LRP(model, composite="epsilon_plus_flat", batch_size=3)  # chunks: masks follow the rows
    masks = condition_masks(concepts, 6)
    with Recorder(model, [], masks={"3": masks}):
        batched = method(x.expand(len(concepts), -1, -1, -1), target=1).attribution
    for k, concept in enumerate(concepts):
        with Recorder(model, [], masks={"3": condition_masks([concept], 6)}):
            single = method(x, target=1).attribution
        assert torch.allclose(batched[k:k + 1], single, atol=1e-6), concept


def test_masks_on_transformer_units_and_tokens():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(5 * 8, 2)).eval()
    x = torch.randn(1, 5, 8)
    method = xk.LRP(model, composite="epsilon", epsilon=1e-9)
    full = method(x, target=0).attribution
    for axis, units in ((-1, 8), (1, 5)):  # hidden units; tokens
        masks = condition_masks(list(range(units)), units)
        with Recorder(model, ["0"], masks={"0": masks}, axis=axis) as rec:
            parts = method(x.expand(units, -1, -1), target=0).attribution
        assert torch.allclose(parts.sum(0, keepdim=True), full, atol=1e-5)
        assert rec["0"].per_channel().shape == (units, units)


def test_hooks_removed_and_model_unchanged_also_after_an_error():
    model = _model()
    before = snapshot(model)
    x = _x()
    with Recorder(model, ["3"]) as rec:
        xk.LRP(model)(x)
    assert_unchanged(model, before)
    assert rec["3"].relevance.shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="masks"):
        with Recorder(model, [], masks={"3": condition_masks([[0]], 6)}):  # one row, two samples
            xk.LRP(model)(x)
    assert_unchanged(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        with Recorder(model, ["3"]):
            raise RuntimeError("boom")
    assert_unchanged(model, before)


def test_bad_input_names_the_argument():
    model = _model()
    with pytest.raises(ValueError, match=r"layers 'feature\.3' is not a module of the model; valid names: 0, 1, 2"):
        Recorder(model, ["feature.3"])
    with pytest.raises(ValueError, match="concepts: channel 6"):
        condition_masks([[6]], 6)
    with pytest.raises(ValueError, match="concepts must hold"):
        condition_masks([], 6)
    with pytest.raises(ValueError, match="channels"):
        with Recorder(model, [], masks={"3": torch.ones(1, 5)}):
            xk.LRP(model)(_x(1))
    with pytest.raises(ValueError, match="keep"):
        Recorder(model, ["3"], keep=("gradient",))
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="more than once"):
        with Recorder(twice, ["1"]):
            xk.Gradient(twice)(torch.randn(2, 4))
    assert list(find_modules(model, "3")) == ["3"]


def test_in_place_operations_after_the_layer():
    """ResNet-like blocks change BatchNorm outputs in place (``out += identity``, ``ReLU(inplace=True)``)."""
    from models import ResNetLike

    model = ResNetLike(bias=True).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 16, 16)
    with Recorder(model, ["layer1.bn2", "layer1"]) as rec:
        xk.InputXGradient(model)(x, target=0)
    a = reference.layer1(reference.pool(reference.relu(reference.bn1(reference.conv1(x))))).detach()
    assert torch.allclose(rec["layer1"].activation, a, atol=1e-6)
    # layer1.bn2's output a is changed in place by `+= identity`; its relevance is a ⊙ g for the value before
    assert torch.isfinite(rec["layer1.bn2"].relevance).all()
    assert rec["layer1.bn2"].relevance.abs().sum() > 0


def test_docstring_example_runs():
    import doctest

    import xaikit.propagation.record as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
