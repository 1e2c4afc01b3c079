"""The engine on CNN patterns of modern architectures (tests/models.py: SE blocks, LayerNorm2d + depthwise conv +
layer scale, shifted-window attention with roll, channel shuffle, GroupNorm, ConvTranspose U-Net, in-model input
normalisation): each runs with no unknown operation, closes the balance, conserves without additive constants,
and leaves the model unchanged. No per-architecture code in the engine."""
import pytest
import torch

import xaikit as xk
from models import CNN_PATTERNS, assert_unchanged, snapshot, zero_constants

COMPOSITES = ["epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "attnlrp", "cp_lrp"]


def _build(name: str, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    model = CNN_PATTERNS[name]().eval().to(dtype)
    with torch.no_grad():  # non-trivial norm affines
        for p_name, p in model.named_parameters():
            if "norm" in p_name:
                p.add_(torch.randn(p.shape, dtype=dtype) * 0.1)
    return model


@pytest.mark.parametrize("name", CNN_PATTERNS)
def test_cnn_patterns_close_the_balance_with_nothing_unknown(name):
    """Float64, with biases: input + absorbed = start (residual ≤ 1e-4 of the logit) under every composite."""
    model = _build(name, torch.float64)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = snapshot(model)
    for composite in COMPOSITES:
        expl = xk.LRP(model, composite=composite)(x, target=0)
        assert expl.info["coverage"]["unknown"] == {}, (composite, expl.info["coverage"]["unknown"])
        c = expl.info["conservation"]
        assert (c["residual"].abs() <= 1e-4 * c["start"].abs()).all(), (composite, c)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", CNN_PATTERNS)
@pytest.mark.parametrize("composite", ["epsilon", "cp_lrp"])
def test_cnn_patterns_without_additive_constants_conserve(name, composite):
    """Biases, norm shifts and the input mean zeroed: the input relevance is the logit within 1e-3."""
    model = zero_constants(_build(name))
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    expl = xk.LRP(model, composite=composite, epsilon=1e-9)(x, target=1)
    c = expl.info["conservation"]
    assert c["start"].abs().min() > 1e-3
    assert ((c["input"] - c["start"]).abs() <= 1e-3 * c["start"].abs()).all(), c
    assert_unchanged(model, before)
