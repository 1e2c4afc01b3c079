"""The engine leaves the user's model alone, folds BatchNorm correctly, handles non-linearities, products,
the first layer behind padding/reshapes, and reports its coverage."""
import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.propagation import Composite, rules as R
from models import ResNetLike, assert_unchanged, mlp, randomise_batchnorm, snapshot, vgg_like


def _no_mode_left():
    return torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat", "guided_backprop"])
def test_model_unchanged_after_call(composite):
    model = randomise_batchnorm(ResNetLike()).eval()
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)  # mixed requires_grad flags stay as they are
    model.fc.register_forward_hook(lambda m, i, o: None)  # the user's own hook stays
    before = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    expl = xk.LRP(model, composite=composite, batch_size=2)(x)
    assert_unchanged(model, before)
    assert _no_mode_left()
    assert torch.equal(expl.output, model(x))  # the explained forward pass is the model's own


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        self.bn(self.conv(x))
        raise RuntimeError("boom")


def test_model_unchanged_after_a_call_that_raised():
    model = Exploding().eval()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        xk.LRP(model, composite="epsilon_gamma_box")(torch.randn(1, 3, 8, 8))
    assert_unchanged(model, before)
    assert _no_mode_left()


def test_batchnorm_is_folded_into_the_preceding_layer():
    torch.manual_seed(1)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
    randomise_batchnorm(nn.Sequential(bn))
    bn.weight.data[0] = -0.7  # a negative scale flips which weights count as positive
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), conv, bn, nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)).eval()
    folded = copy.deepcopy(model)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fconv = nn.Conv2d(3, 4, 3, padding=1)
        fconv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fconv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    folded = nn.Sequential(folded[0], folded[1], fconv, nn.ReLU(), nn.Flatten(), folded[6]).eval()
    x = torch.randn(3, 3, 4, 4)
    for composite in ("epsilon", "epsilon_gamma_box", "epsilon_alpha2_beta1"):
        settings = {"epsilon": 0.1}
        a = xk.LRP(model, composite=composite, **settings)(x, target=1)
        b = xk.LRP(folded, composite=composite, **settings)(x, target=1)
        torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-4, atol=1e-6)
        assert a.info["coverage"]["handled"]["batch_norm:folded"] == 1


def test_fold_is_not_used_when_the_layer_output_has_other_consumers():
    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            h = self.conv(x)
            return (self.bn(h) + h).relu().flatten(1)

    model = randomise_batchnorm(Branching()).eval()
    expl = xk.LRP(model, composite="epsilon_gamma_box", epsilon=0.01)(torch.randn(2, 2, 3, 3))
    assert "batch_norm:folded" not in expl.info["coverage"]["handled"]
    c = expl.info["conservation"]
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"])


@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.ELU(), nn.Softplus(),
                                 nn.ReLU6(inplace=True)])
def test_identity_rule_conserves_through_non_homogeneous_activations(act):
    """R_x = R_y where f(0) = 0; where f(0) ≠ 0 (sigmoid, softplus) the constant f(0) absorbs f(0)·g, like a
    bias: here f(0)·Σ_j W2[target, j]."""
    model = nn.Sequential(nn.Linear(6, 8, bias=False), act, nn.Linear(8, 3, bias=False)).eval()
    x = torch.randn(4, 6)
    expl = xk.LRP(model, composite="zero")(x)
    c = expl.info["conservation"]
    zero = float(copy.deepcopy(act)(torch.zeros(1)))
    torch.testing.assert_close(c["absorbed"], zero * model[2].weight.detach()[expl.target].sum(1))
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-5, atol=1e-6)
    assert expl.info["coverage"]["unknown"] == {}


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.ReLU6(inplace=True), nn.Hardtanh(), nn.Hardtanh(-2.0, 3.0)])
@pytest.mark.parametrize("clipped", ["few", "many"])
def test_identity_rule_on_clamps_passes_each_value_its_relevance(act, clipped):
    """Under the identity rule the relevance of y = clamp(x) is that of x: attribution_i = w_i · y_i for y ↦ w·y,
    on values inside the clamp, clipped at either bound, and at 0."""
    torch.manual_seed(0)
    x = torch.rand(3, 64) * 0.8 - 0.4  # inside every clamp
    if clipped == "few":
        x[:, 5], x[:, 9] = 7.0, -5.0
    else:
        x = torch.randn(3, 64) * 12
    x[:, 0] = 0.0
    model = nn.Sequential(act, nn.Linear(64, 1, bias=False)).eval()
    expl = xk.LRP(model, composite="zero")(x.clone())
    y = act(x.clone())
    torch.testing.assert_close(expl.attribution, model[1].weight.detach() * y)


class _RectifiedNet(nn.Module):
    """conv → BN → rectifier → conv → head; ``extra`` adds a second, relevance-free consumer of the BN output,
    which keeps the engine from reading the first layer's relevance at the rectifier's output."""

    def __init__(self, rectifier: nn.Module, extra: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.act = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), rectifier
        self.conv2, self.head, self.extra = nn.Conv2d(6, 4, 3), nn.Linear(4 * 4 * 4, 3), extra

    def forward(self, x):
        h = self.bn(self.conv(x))
        out = self.head(self.conv2(self.act(h)).flatten(1))
        return out + 0.0 * h.sum() if self.extra else out


@pytest.mark.parametrize("rectifier", [nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6()], ids=["relu", "relu_", "relu6"])
@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_relevance_read_at_the_rectifier_output_is_the_same(rectifier, composite):
    """A rectifier that is a layer output's only consumer passes its gradient on unchanged and the layer's rule
    reads R = y ⊙ g_y at the rectifier's output; with a second consumer it runs its own backward. Same result."""
    x = torch.randn(2, 3, 6, 6) * 3  # ReLU6 clips some values
    fused, plain = (randomise_batchnorm(_RectifiedNet(rectifier, extra)).eval() for extra in (False, True))
    plain.load_state_dict(fused.state_dict())
    settings = {"low": -10.0, "high": 10.0} if "box" in composite else {}
    a, b = (xk.LRP(m, composite=composite, **settings)(x.clone(), target=1) for m in (fused, plain))
    torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-5, atol=1e-6)
    c = a.info["conservation"]
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-4, atol=1e-5)


class Gated(nn.Module):
    def __init__(self, gate: bool):
        super().__init__()
        self.a, self.b = nn.Linear(4, 5, bias=False), nn.Linear(4, 5, bias=False)
        self.gate = gate

    def forward(self, x):
        other = torch.sigmoid(self.b(x)) if self.gate else self.b(x)
        return (self.a(x) * other).sum(1, keepdim=True)


def test_products_of_activations_split_relevance_uniformly():
    model = Gated(gate=False).eval()
    x = torch.randn(3, 4)
    expl = xk.LRP(model, composite="zero")(x, target=0)
    c = expl.info["conservation"]
    torch.testing.assert_close(c["input"], c["start"], rtol=1e-5, atol=1e-6)
    assert "mul:uniform" in expl.info["coverage"]["handled"]


def test_gates_get_no_relevance_signal_takes_all():
    model = Gated(gate=True).eval()
    x = torch.randn(3, 4)
    expl = xk.LRP(model, composite="zero")(x, target=0)
    # all relevance flows through the signal branch a(x): equal to LRP-0 of a(x) ⊙ (constant gate)
    gate = torch.sigmoid(model.b(x)).detach()
    want = x * (model.a.weight.t() @ gate.t()).t()
    torch.testing.assert_close(expl.attribution, want)
    assert "mul:signal_takes_all" in expl.info["coverage"]["handled"]


def test_guided_backprop_and_deconvnet_closed_form():
    torch.manual_seed(3)
    w1, w2 = torch.randn(5, 4), torch.randn(1, 5)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 1, bias=False)).eval()
    model[0].weight.data, model[2].weight.data = w1.clone(), w2.clone()
    x = torch.randn(6, 4)
    mask = (x @ w1.t() > 0).float()
    guided = xk.GuidedBackprop(model)(x, target=0).attribution
    deconv = xk.DeconvNet(model)(x, target=0).attribution
    torch.testing.assert_close(guided, (mask * w2.clamp(min=0)) @ w1)
    torch.testing.assert_close(deconv, w2.clamp(min=0).expand(6, 5) @ w1)


def test_excitation_backprop_is_zplus_everywhere():
    model = vgg_like().eval()
    x = torch.rand(2, 3, 16, 16)
    eb = xk.ExcitationBackprop(model)(x).attribution
    zplus = xk.LRP(model, composite=Composite("z+", R.zplus(), R.zplus(), R.zplus()))(x).attribution
    torch.testing.assert_close(eb, zplus)


def test_first_layer_rule_reaches_the_input_through_padding_and_reshapes():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.fc = nn.Linear(4 * 6 * 6, 2, bias=False)

        def forward(self, x):
            x = F.pad(x.reshape(x.shape[0], 3, 6, 6), (1, 1, 1, 1))
            return self.fc(self.conv(x).relu().flatten(1))

    x = torch.randn(2, 108)
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
        settings = {"low": -5.0, "high": 5.0} if "box" in composite else {}
        expl = xk.LRP(Padded().eval(), composite=composite, **settings)(x)
        c = expl.info["conservation"]
        assert expl.info["coverage"]["handled"].get(f"conv2d:{'flat' if 'flat' in composite else 'zbox'}") == 1
        torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-4, atol=1e-6)


def test_unknown_operations_are_reported_and_warned_about():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1) * 2

    model = Odd().eval()
    with pytest.warns(UserWarning, match="logcumsumexp"):
        expl = xk.LRP(model, composite="epsilon")(torch.randn(2, 3))
    assert expl.info["coverage"]["unknown"] == {"logcumsumexp": 1}


def test_forward_kwargs_reach_the_model_and_attribution_is_for_x():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2, bias=False)

        def forward(self, x, mask=None, scale=1.0):
            return self.fc(x * mask) * scale

    model = Masked().eval()
    x, mask = torch.randn(3, 4), torch.tensor([[1.0, 0, 1, 1]] * 3)
    expl = xk.LRP(model, composite="zero")(x, target=0, forward_kwargs={"mask": mask, "scale": 2.0})
    assert expl.attribution.shape == x.shape
    assert (expl.attribution[:, 1] == 0).all()
    torch.testing.assert_close(expl.attribution.sum(1), 2.0 * model.fc(x * mask)[:, 0].detach())


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_batch_size_invariance(composite):
    model = randomise_batchnorm(ResNetLike()).eval()
    x = torch.randn(5, 3, 16, 16)
    results = [xk.LRP(model, composite=composite, batch_size=b, low=-4.0, high=4.0)(x, target=1).attribution
               for b in (1, 3, "auto")] if "box" in composite else [
        xk.LRP(model, composite=composite, batch_size=b)(x, target=1).attribution for b in (1, 3, "auto")]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-5, atol=1e-6)


def test_settings_override_preset_values():
    model = mlp().eval()
    x = torch.randn(2, 8)
    small = xk.LRP(model, composite="epsilon", epsilon=1e-9)(x).attribution
    large = xk.LRP(model, composite="epsilon", epsilon=10.0)(x).attribution
    assert large.abs().sum() < small.abs().sum()
    assert xk.LRP(model, composite="epsilon_gamma_box", gamma=0.5).composite.conv.settings == {"gamma": 0.5}


def test_forward_args_are_passed_positionally():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2, bias=False)

        def forward(self, x, y):
            return self.fc(x) + self.fc(y)

    model = TwoInputs().eval()
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    expl = xk.LRP(model, composite="zero")(x, target=0, forward_args=(y,))
    torch.testing.assert_close(expl.attribution.sum(1), model.fc(x)[:, 0].detach())
    c = expl.info["conservation"]  # the relevance of y is neither input nor absorbed: it is the residual
    torch.testing.assert_close(c["residual"], model.fc(y)[:, 0].detach())


def test_composite_selects_rules_by_first_layer_then_name_then_type_then_kind():
    model = vgg_like().eval()  # convs at 0, 2, 5; linears at 9, 12
    composite = xk.propagation.with_rules(
        "epsilon", by_name={"5": "alpha_beta"}, by_type={nn.Conv2d: "zplus"}, first="flat")
    handled = xk.LRP(model, composite=composite)(torch.rand(1, 3, 16, 16)).info["coverage"]["handled"]
    assert handled == {"conv2d:flat": 1, "conv2d:zplus": 1, "conv2d:alpha_beta": 1, "linear:epsilon": 2}
    with pytest.raises(ValueError, match="unknown rule 'gama'; valid: zero, epsilon"):
        xk.propagation.with_rules("epsilon", by_name={"0": "gama"})


class _Recording(nn.Module):
    """conv-BN-ReLU6-conv-add-ReLU; keeps weak references to its activations; raises on request."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.head = nn.Conv2d(4, 4, 1), nn.Linear(4 * 6 * 6, 3)
        self.refs, self.fail = [], False

    def forward(self, x):
        a = F.relu6(self.bn(self.conv1(x)))
        b = F.relu(self.conv2(a) + a)
        self.refs += [weakref.ref(t) for t in (a, b)]
        if self.fail:
            raise RuntimeError("failing forward")
        return self.head(b.flatten(1))


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon"])
def test_a_call_keeps_no_activation_alive(composite):
    """The rules' backward functions and the values they hold form reference cycles through the autograd
    graph, which the garbage collector cannot see: the session releases them after every call (a leak of
    about 0.8 GB per call on ResNet-50 at batch 8 before)."""
    model = randomise_batchnorm(_Recording()).eval()
    x = torch.randn(2, 3, 6, 6)
    for fail in (False, True):
        model.refs.clear()
        model.fail = fail
        try:
            xk.LRP(model, composite=composite)(x, target=0)
        except RuntimeError:
            assert fail
        gc.collect()
        assert model.refs and all(ref() is None for ref in model.refs), (composite, fail)


def test_an_activation_copied_into_a_cache_is_linear():
    """``cache.copy_(h)`` (a state-space model's conv/ssm state written into its cache): the copy is the
    identity on ``h``, not an unknown operation, and the relevance is that of the model without it."""
    class Cached(nn.Module):
        def __init__(self, cache: bool):
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b, self.cache = nn.Linear(4, 6), nn.Linear(6, 2), cache

        def forward(self, x):
            h = torch.relu(self.a(x))
            if self.cache:
                state = torch.zeros_like(h)
                state.copy_(h)
                return self.b(h) + 0 * state.sum(-1, keepdim=True)
            return self.b(h)

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    cached = xk.LRP(Cached(True).eval(), composite="epsilon")(x, target=0)
    plain = xk.LRP(Cached(False).eval(), composite="epsilon")(x, target=0)
    assert cached.info["coverage"]["unknown"] == {}
    torch.testing.assert_close(cached.attribution, plain.attribution)
