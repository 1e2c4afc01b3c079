"""z⁺ with and without the bias in the denominator, against the matrix formula (see test_rules.py)."""
import pytest
import torch
from torch import nn

from test_rules import LAYERS, _explain, _matrix
from xaikit.propagation import rules as R


@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _zplus_reference(A, b, x, R_out, bias: bool):
    """R_i = Σ_j (x_i A_ji)⁺ / (Σ_i (x_i A_ji)⁺ [+ b_j⁺]) R_j."""
    pos = (A * x[None, :]).clamp(min=0)
    den = pos.sum(1) + (b.clamp(min=0) if bias else 0)
    den = torch.where(den == 0, torch.ones_like(den), den)
    return (pos / den[:, None] * R_out[:, None]).sum(0)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("layer_name", ["linear", "conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_zplus_matches_matrix_formula_with_and_without_bias(layer_name, signed, with_bias):
    torch.manual_seed(sorted(LAYERS).index(layer_name) * 4 + 2 * signed + with_bias)
    layer, shape = LAYERS[layer_name](True)
    layer.eval()
    nn.init.normal_(layer.bias, mean=0.3, std=0.5)  # mostly positive biases: the two rules differ
    x = torch.randn(shape) if signed else torch.rand(shape)
    with torch.no_grad():
        weights = torch.rand(layer(x).flatten(1).shape[1]) + 0.5
    got = _explain(layer, x, R.zplus(epsilon=0, bias=with_bias), weights)
    other = _explain(layer, x, R.zplus(epsilon=0, bias=not with_bias), weights)
    for n in range(shape[0]):
        A, b = _matrix(layer, x[n:n + 1])
        xn = x[n].reshape(-1)
        R_out = (A @ xn + b) * weights
        want = _zplus_reference(A, b, xn, R_out, with_bias)
        torch.testing.assert_close(got[n].reshape(-1), want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(other[n].reshape(-1), want, rtol=1e-3, atol=1e-4)  # the option matters


def test_zplus_default_is_the_dtd_rule_without_bias_and_bias_is_checked():
    assert R.zplus() == R.zplus(bias=False) != R.zplus(bias=True)
    assert repr(R.zplus(bias=True)) == "zplus(bias=True)"
    assert R.make_rule("zplus", bias=True) == R.zplus(bias=True)
    with pytest.raises(TypeError, match="bias must be True or False"):
        R.zplus(bias="yes")
