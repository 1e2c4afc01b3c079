"""Each LRP rule equals its matrix-form formula on single layers (Linear, Conv1d/2d/3d; with and without
bias; non-negative and mixed-sign inputs)."""
import zlib
from dataclasses import replace

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.propagation import Composite, rules as R



@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _matrix(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer as an explicit affine map of one sample: out = A @ x + b (A from the Jacobian)."""
    f = lambda v: layer(v.reshape(1, *x.shape[1:])).reshape(-1)  # noqa: E731
    A = torch.autograd.functional.jacobian(f, x[0].reshape(-1))
    b = f(torch.zeros_like(x[0]).reshape(-1)).detach()
    return A.detach(), b


def _reference(rule: str, A, b, x, R_out, low=None, high=None, eps=0.1, gamma=0.25, alpha=2.0, beta=1.0):
    """R_i from the matrix-form rule, contributions z_ij = x_i A_ji."""
    z = A * x[None, :]  # (out, in)
    pos, neg = z.clamp(min=0), z.clamp(max=0)
    out = z.sum(1) + b

    def share(num, den):
        den = torch.where(den == 0, torch.ones_like(den), den)
        return (num / den[:, None] * R_out[:, None]).sum(0)

    if rule == "zero":
        return share(z, out)
    if rule == "epsilon":
        return share(z, out + eps * torch.where(out >= 0, 1.0, -1.0))
    if rule == "gamma":
        up = z + gamma * pos
        down = z + gamma * neg
        den_up = up.sum(1) + b + gamma * b.clamp(min=0)
        den_down = down.sum(1) + b + gamma * b.clamp(max=0)
        return share(up * (out > 0)[:, None], den_up) + share(down * (out < 0)[:, None], den_down)
    if rule == "zplus":
        return share(pos, pos.sum(1))
    if rule == "alpha_beta":
        return alpha * share(pos, pos.sum(1) + b.clamp(min=0)) - beta * share(neg, neg.sum(1) + b.clamp(max=0))
    if rule == "flat":
        ones = (A != 0).to(A.dtype)
        return share(ones, ones.sum(1))
    if rule == "wsquare":
        return share(A ** 2, (A ** 2).sum(1))
    if rule == "zbox":
        num = z - low[None, :] * A.clamp(min=0) - high[None, :] * A.clamp(max=0)
        return share(num, num.sum(1))
    raise AssertionError(rule)


RULES = {
    "zero": R.zero(), "epsilon": R.epsilon(0.1), "gamma": R.gamma(0.25), "zplus": R.zplus(epsilon=0),
    "alpha_beta": R.alpha_beta(2.0, 1.0, epsilon=0), "flat": R.flat(), "wsquare": R.wsquare(),
}
LAYERS = {
    "linear": lambda bias: (nn.Linear(6, 4, bias=bias), (3, 6)),
    "conv1d": lambda bias: (nn.Conv1d(2, 3, 3, padding=1, bias=bias), (3, 2, 5)),
    "conv2d": lambda bias: (nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=bias), (3, 2, 5, 5)),
    "conv3d": lambda bias: (nn.Conv3d(2, 2, 2, bias=bias), (3, 2, 3, 3, 3)),
    # 1×1 convolutions run as matrix products (strided: every other pixel); "same" padding of an even kernel
    # is asymmetric, which the native backward cannot take (autograd fallback)
    "conv2d_1x1": lambda bias: (nn.Conv2d(3, 4, 1, stride=2, bias=bias), (3, 3, 5, 5)),
    "conv2d_same": lambda bias: (nn.Conv2d(2, 3, (3, 2), padding="same", bias=bias), (3, 2, 4, 5)),
    "conv_transpose2d": lambda bias: (nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, bias=bias),
                                      (3, 2, 3, 3)),
}


def _explain(layer, x, rule, weights):
    first = rule if rule.direct else None
    composite = Composite("test", conv=rule, dense=rule, first=first)
    target = lambda out: (out.flatten(1) * weights).sum(1)  # noqa: E731  R_out = z ⊙ weights
    return xk.LRP(layer, composite=composite)(x, target=target).attribution


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("layer_name", LAYERS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("rule_name", list(RULES) + ["zbox"])
def test_rule_matches_matrix_formula(layer_name, bias, signed, rule_name):
    torch.manual_seed(zlib.crc32(f"{layer_name}-{bias}-{signed}-{rule_name}".encode()) % 1000)  # same in every process
    layer, shape = LAYERS[layer_name](bias)
    layer.eval()
    if bias:
        nn.init.normal_(layer.bias, std=0.5)
    x = torch.randn(shape) if signed else torch.rand(shape)
    low, high = torch.full(shape[1:], -3.0), torch.full(shape[1:], 3.0)
    rule = R.zbox(-3.0, 3.0) if rule_name == "zbox" else RULES[rule_name]
    with torch.no_grad():
        weights = torch.randn(layer(x).flatten(1).shape[1])
    got = _explain(layer, x, rule, weights)
    for n in range(shape[0]):
        A, b = _matrix(layer, x[n:n + 1])
        xn = x[n].reshape(-1)
        R_out = (A @ xn + b) * weights
        want = _reference(rule_name, A, b, xn, R_out, low.reshape(-1), high.reshape(-1))
        torch.testing.assert_close(got[n].reshape(-1), want, rtol=1e-5, atol=1e-5)


def test_alpha_beta_requires_alpha_minus_beta_one():
    with pytest.raises(ValueError, match="alpha - beta"):
        R.alpha_beta(2.0, 2.0)
    with pytest.raises(ValueError, match="beta"):
        R.alpha_beta(0.0, -1.0)


def test_box_bounds_per_channel():
    layer = nn.Conv2d(3, 2, 3, padding=1).eval()
    x = torch.rand(2, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    low, high = torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])
    weights = torch.randn(2 * 16)
    got = _explain(layer, x, R.zbox(low, high), weights)
    for n in range(2):
        A, b = _matrix(layer, x[n:n + 1])
        xn = x[n].reshape(-1)
        R_out = (A @ xn + b) * weights
        lo = low.view(3, 1, 1).expand(3, 4, 4).reshape(-1)
        hi = high.view(3, 1, 1).expand(3, 4, 4).reshape(-1)
        torch.testing.assert_close(got[n].reshape(-1), _reference("zbox", A, b, xn, R_out, lo, hi))


def test_box_bounds_of_wrong_shape_are_rejected():
    layer = nn.Conv2d(3, 2, 3).eval()
    with pytest.raises(ValueError, match="low"):
        xk.LRP(layer, composite="epsilon_gamma_box", low=torch.zeros(5), high=1.0)(torch.rand(1, 3, 4, 4))


@pytest.mark.parametrize("layer_name", ["linear", "conv1d", "conv2d", "conv2d_1x1", "conv_transpose2d"])
@pytest.mark.parametrize("inputs", ["nonnegative", "nonpositive", "mixed"])
@pytest.mark.parametrize("rectified", [False, True])
@pytest.mark.parametrize("eps", [1e-9, 0.0])
def test_gamma_shortcut_equals_its_parts(layer_name, inputs, rectified, eps):
    """The γ rule's shortcut (denominators from the layer output and one modified forward, one transposed
    pass on rectified outputs) gives the relevance of its terms computed part by part."""
    layer, shape = LAYERS[layer_name](True)
    nn.init.normal_(layer.bias, std=0.5)
    model = (nn.Sequential(layer, nn.ReLU()) if rectified else layer).eval()
    x = {"nonnegative": torch.rand, "nonpositive": lambda *s: -torch.rand(*s), "mixed": torch.randn}[inputs](shape)
    with torch.no_grad():
        weights = torch.randn(model(x).flatten(1).shape[1])
    target = lambda out: (out.flatten(1) * weights).sum(1)  # noqa: E731
    shortcut = R.gamma(0.25, epsilon=eps)
    by_parts = replace(shortcut, favour=None)
    got, want = (xk.LRP(model, composite=Composite("test", conv=r, dense=r))(x, target=target).attribution
                 for r in (shortcut, by_parts))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert got.abs().sum() > 0


def test_one_name_per_rule_setting_and_the_old_names_warn():
    """``epsilon``/``gamma`` everywhere (constructors, rule dicts, composites); ``eps``/``g`` still work for
    one release with a DeprecationWarning naming the new keyword."""
    assert R.gamma(gamma=0.5, epsilon=1e-3) == R.make_rule({"rule": "gamma", "gamma": 0.5, "epsilon": 1e-3})
    with pytest.warns(DeprecationWarning, match="'epsilon'"):
        assert R.epsilon(eps=0.1) == R.epsilon(epsilon=0.1)
    with pytest.warns(DeprecationWarning, match="'gamma'"):
        assert R.gamma(g=0.5) == R.gamma(gamma=0.5)
    with pytest.warns(DeprecationWarning):  # a composite file written before the rename
        assert R.make_rule({"rule": "zplus", "eps": 1e-4}) == R.zplus(epsilon=1e-4)
    with pytest.raises(TypeError, match="both 'eps'"):
        R.epsilon(eps=0.1, epsilon=0.2)
    spec = R.rule_to_dict(R.gamma(gamma=0.5, epsilon=1e-3))
    assert spec == {"rule": "gamma", "gamma": 0.5, "epsilon": 1e-3}
