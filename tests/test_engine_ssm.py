"""The engine on state-space and recurrent-style models (issue 29, item 4): selective scans whose decays and
steps depend on the input (Mamba, Mamba-2), RWKV's weights divided by their running sum, the selections of the
stabilising max trick, squared ReLUs and cumulative sums.

MambaLRP (Jafari et al. 2024) holds the input-dependent parameters of a scan constant, like the gates of
an LSTM or CP-LRP's attention weights; the relevance then flows through the scan's input path. The toy models
below check that against a reference written out by hand (gradient × input of the same forward with the
weights detached); the `transformers` models check the engine's promise on the real code (tests/engine_matrix.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from engine_matrix import check_bias_free, check_model, quiet
from models import assert_unchanged, snapshot
from text_models import bias_free
from xaikit.propagation import make_composite, with_rules

VOCAB = 48


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class SelectiveScan(nn.Module):
    """``h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) B``, ``y_t = h_t C``, ``Δ_t = softplus(W u_t)``: Mamba's slow
    path with the step (and so the decay) depending on the input; ``hold`` detaches Δ (the reference)."""

    def __init__(self, d: int = 3, n: int = 4) -> None:
        super().__init__()
        g = _generator(1)
        self.step = nn.Linear(d, d, bias=False)
        self.A = nn.Parameter(-torch.rand(d, n, generator=g) - 0.5)
        self.B = nn.Parameter(torch.randn(n, generator=g))
        self.C = nn.Parameter(torch.randn(n, generator=g))
        self.head = nn.Linear(d, 2, bias=False)
        self.hold = False

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        dt = F.softplus(self.step(u))
        if self.hold:
            dt = dt.detach()
        decay = torch.exp(dt[..., None] * self.A)
        h = u.new_zeros(u.shape[0], u.shape[2], self.A.shape[1])
        for t in range(u.shape[1]):
            h = decay[:, t] * h + (dt[:, t] * u[:, t])[..., None] * self.B
        return self.head(h @ self.C)


class WeightedAverage(nn.Module):
    """``Σ_i exp(k_i) v_i / Σ_i exp(k_i)`` over the sequence, written out as RWKV does: a running numerator and
    denominator, stabilised by a running maximum; ``hold`` detaches the weights and the denominator."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.head = nn.Linear(d, 2, bias=False)
        self.hold = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v = self.key(x), self.value(x)
        held = (lambda t: t.detach()) if self.hold else (lambda t: t)
        num = den = torch.zeros_like(k[:, 0])
        top = torch.zeros_like(k[:, 0]) - 1e38
        for t in range(x.shape[1]):
            new = torch.maximum(top, k[:, t])
            e_old, e_new = held(torch.exp(top - new)), held(torch.exp(k[:, t] - new))
            num = e_old * num + e_new * v[:, t]
            den = e_old * den + e_new
            top = new
        return self.head(num / held(den))


def _reference(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Gradient × input of ``model`` with its data-dependent weights detached (``model.hold``)."""
    model.hold = True
    try:
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    finally:
        model.hold = False
    return x.detach() * grad


@pytest.mark.parametrize("build", [SelectiveScan, WeightedAverage])
@pytest.mark.parametrize("composite", ["epsilon", "cp_lrp", "attnlrp"])
def test_data_dependent_weights_are_held_constant_as_gates(build, composite):
    """ε, CP-LRP and AttnLRP (gate rule "signal takes all"): the relevance equals gradient × input of the same
    model with its input-dependent step/decays (exp, softplus) and its denominator held constant, and sums to the
    logit."""
    torch.manual_seed(0)
    model = build().double().eval()
    x = torch.randn(2, 5, model.head.in_features, generator=_generator(2), dtype=torch.float64)
    before = snapshot(model)
    expl = xk.LRP(model, composite=composite, epsilon=1e-12)(x, target=1)
    assert_unchanged(model, before)
    assert expl.info["coverage"]["unknown"] == {}
    torch.testing.assert_close(expl.attribution, _reference(model, x, 1), rtol=1e-7, atol=1e-10)
    c = expl.info["conservation"]
    torch.testing.assert_close(c["input"], c["start"], rtol=1e-7, atol=0)


@pytest.mark.parametrize("build", [SelectiveScan, WeightedAverage])
def test_the_uniform_gate_rule_passes_a_share_to_the_weights_and_accounts_for_it(build):
    """Gate rule "uniform": half of a weighted signal's relevance goes to the weight, through exp and softplus by
    the identity rule; what the rule keeps (f(0)·g) is absorbed, so the balance closes."""
    torch.manual_seed(0)
    model = build().double().eval()
    x = torch.randn(2, 5, model.head.in_features, generator=_generator(2), dtype=torch.float64)
    composite = with_rules(make_composite("attnlrp", epsilon=1e-12), gate="uniform")
    with pytest.warns(UserWarning, match="absorbed"):  # the rules' f(0) shares: the balance warns
        expl = xk.LRP(model, composite=composite)(x, target=1)
    assert expl.info["coverage"]["unknown"] == {}
    c = expl.info["conservation"]
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-7, atol=0)
    assert not torch.allclose(expl.attribution, _reference(model, x, 1))


class Selections(nn.Module):
    """A clamp and a maximum with a constant (bounds reached), a squared ReLU and a cumulative sum."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(4, 6, bias=False), nn.Linear(4, 6, bias=False)
        self.head = nn.Linear(18, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        clamped = torch.clamp(h, -0.3, 0.4)
        floor = torch.maximum(torch.full_like(h, 0.1), h)
        squared = torch.square(torch.relu(self.b(x)))
        return self.head(torch.cat([clamped, floor, torch.cumsum(squared, 1)], 1))


def test_selections_squares_and_cumulative_sums_are_exact():
    """Where a clamp or maximum selects its bound, the output is that constant: its share ``bound · g`` is
    absorbed (closed form: the head's weight at those positions, as ε → 0 passes ``g = W``); elsewhere
    relevance passes exactly. The squared ReLU passes ``R_x = R_{x²}`` (x·x, uniform rule), the cumulative sum
    is linear: with the bounds' share, the input relevance is the logit."""
    model = Selections().double().eval()
    x = torch.randn(3, 4, generator=_generator(4), dtype=torch.float64)
    expl = xk.LRP(model, composite="epsilon", epsilon=1e-12)(x, target=0)
    handled = expl.info["coverage"]["handled"]
    assert expl.info["coverage"]["unknown"] == {}
    assert {"clamp:selection", "maximum:selection", "square:uniform"} <= set(handled)
    h = model.a(x).detach()
    w = model.head.weight[0].detach()
    clamped = torch.clamp(h, -0.3, 0.4)
    bound = ((clamped != h) * clamped * w[:6]).sum(1) + ((h < 0.1) * 0.1 * w[6:12]).sum(1)
    assert (bound.abs() > 1e-3).all()  # the bounds are reached
    c = expl.info["conservation"]
    torch.testing.assert_close(c["absorbed"], bound, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-7, atol=0)


def test_identity_rule_passes_nothing_to_a_masked_score():
    """A sigmoid gate of scores masked with −inf (AttnLRP: half the gated product's relevance reaches the
    gate): at a masked score the gate is 0 and so is its relevance; the rule absorbs nothing there and passes
    nothing, so the balance closes (before, f(0)·g was absorbed there and −f(0)·g lost at the mask)."""
    torch.manual_seed(5)
    score, value, head = nn.Linear(4, 6, bias=False), nn.Linear(4, 6, bias=False), nn.Linear(6, 2, bias=False)
    mask = torch.tensor([True, False, True, False, False, True])

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score, self.value, self.head = score, value, head

        def forward(self, x):
            return self.head(torch.sigmoid(self.score(x).masked_fill(mask, float("-inf"))) * self.value(x))

    model = Masked().double().eval()
    expl = xk.LRP(model, composite="attnlrp", epsilon=1e-12)(torch.randn(2, 4, generator=_generator(6),
                                                                          dtype=torch.float64), target=0)
    c = expl.info["conservation"]
    torch.testing.assert_close(c["input"] + c["absorbed"], c["start"], rtol=1e-7, atol=0)


# -- transformers models, small configs, random weights -------------------------------------------------------


def _ssm(kind: str) -> nn.Module:
    """A tiny causal LM whose scan matters: time steps of order 1, varied decays, a larger selective projection."""
    import transformers as T

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, use_cache=False)
    if kind == "mamba":
        model = T.MambaForCausalLM(T.MambaConfig(**common, state_size=4, expand=2, conv_kernel=3, time_step_rank=4))
    elif kind == "falcon_mamba":
        model = T.FalconMambaForCausalLM(T.FalconMambaConfig(**common, state_size=4, expand=2, conv_kernel=3,
                                                             time_step_rank=4))
    elif kind == "mamba2":
        model = T.Mamba2ForCausalLM(T.Mamba2Config(**common, state_size=8, expand=2, conv_kernel=3, num_heads=4,
                                                   head_dim=8, n_groups=1, chunk_size=4))
    else:
        model = T.RwkvForCausalLM(T.RwkvConfig(**common, attention_hidden_size=16, intermediate_size=32,
                                               context_length=16))
    g = _generator(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("dt_proj.bias", "dt_bias")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.2)
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
            elif name.endswith("x_proj.weight"):
                p.mul_(4)
            elif name.endswith(("time_decay", "time_first")):
                p.copy_(torch.randn(p.shape, generator=g))
    return quiet(lambda: model.eval())


SSM_MODELS = ["mamba", "falcon_mamba", "mamba2", "rwkv"]
IDS = torch.randint(3, VOCAB, (2, 7), generator=_generator(0))
KWARGS = {"use_cache": False}


@pytest.mark.parametrize("kind", SSM_MODELS)
def test_state_space_llms_close_the_balance_with_nothing_unknown(kind):
    """Float64 with biases, ε, CP-LRP and AttnLRP: runs, no unknown operation, relative residual ≤ 1e-4, the
    model unchanged (the scans compute in float32 inside)."""
    check_model(quiet(lambda: _ssm(kind).double()), IDS, xk.NextToken(-1), KWARGS)


@pytest.mark.parametrize("kind", SSM_MODELS)
def test_state_space_llms_conserve_without_additive_constants(kind):
    """Biases and norm shifts zeroed: the input relevance is the logit within 1e-3 (AttnLRP: with the shares
    its identity rules keep)."""
    check_bias_free(bias_free(_ssm(kind)), IDS, xk.NextToken(-1), KWARGS,
                    composites=("epsilon", "cp_lrp", "attnlrp"))
