"""Training mode of the engine on every rule it applies (issue 29, item 9): the identity rule, products and
gates, LayerNorm/GroupNorm/RMSNorm and normalisation statistics written out, the softmax, attention and
recurrent cells have a differentiable form. For each: the explanation with ``create_graph=True`` equals the
usual one (attribution, absorbed relevance, coverage), and its second-order gradients equal central finite
differences (float64) in random directions of the parameters. Then the same on a small ViT and BERT under
AttnLRP and CP-LRP, right-for-the-right-reasons on the ViT, and the statistics and opaque-function checks
active in training mode."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from text_models import VOCAB, bert, vit
from xaikit.improve import RightForRightReasonsLoss


def _explain(model, x, composite, create_graph=False, forward_kwargs=None):
    # one pass over the batch, as training mode takes it (the relevance that layers on sequence-first
    # tensors, inside nn.MultiheadAttention, absorb is shared out per sample only for the whole batch)
    method = xk.LRP(model, composite=composite, batch_size=len(x))
    return method(x, target=0, create_graph=create_graph, forward_kwargs=forward_kwargs)


def _agrees(model, x, composite, forward_kwargs=None):
    """The differentiable explanation equals the usual one: attribution, absorbed relevance and coverage."""
    usual = _explain(model, x, composite, False, forward_kwargs)
    trained = _explain(model, x, composite, True, forward_kwargs)
    assert trained.attribution.requires_grad and not usual.attribution.requires_grad
    scale = usual.attribution.abs().max()
    torch.testing.assert_close(trained.attribution.detach(), usual.attribution, rtol=1e-9, atol=1e-10 * scale)
    conservation = usual.info["conservation"]
    torch.testing.assert_close(trained.info["conservation"]["absorbed"], conservation["absorbed"],
                               rtol=1e-9, atol=1e-10 * conservation["start"].abs().max())
    assert trained.info["coverage"] == usual.info["coverage"]
    assert not usual.info["coverage"]["unknown"]
    return usual


def _second_order(model, x, composite, forward_kwargs=None, frozen=(), directions=2, seed=0):
    """d/dθ of ``L = Σ w ⊙ A + Σ A²`` (A the attribution, scaled to order 1) equals central finite differences
    in ``directions`` random directions of the parameters (those whose name contains none of ``frozen``)."""
    usual = _explain(model, x, composite, False, forward_kwargs).attribution
    unit = usual.abs().max()
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(usual.shape, dtype=usual.dtype, generator=generator)

    def loss() -> torch.Tensor:
        a = _explain(model, x, composite, True, forward_kwargs).attribution / unit
        return (weights * a).sum() + (a ** 2).sum()

    params = [p for name, p in model.named_parameters() if not any(key in name for key in frozen)]
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    assert all(p.grad is None for p in params)
    for _ in range(directions):
        steps = [torch.randn(p.shape, dtype=p.dtype, generator=generator) for p in params]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, steps) if g is not None)
        # a small step: LRP-ε's z/(z + ε·sign z) curves on the scale of ε (1e-6) where an output z nears 0
        h = 1e-8 / math.sqrt(sum(float((d ** 2).mean()) for d in steps) / len(steps))
        values = []
        with torch.no_grad():
            for sign in (1, -1):
                for p, d in zip(params, steps):
                    p.add_(sign * h * d)
                values.append(float(loss()))
                for p, d in zip(params, steps):
                    p.sub_(sign * h * d)
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric - analytic) <= 1e-4 * max(abs(numeric), abs(analytic)), (numeric, analytic)


# -- one small model per rule ---------------------------------------------------------------------------------
class Act(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn, self.a, self.b = fn, nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


class TanhGELU(nn.Module):
    """A parameter-free module computing one non-linearity from several operations (the identity rule as a
    whole, :class:`xaikit.propagation.handlers.elementwise.ElementwiseModules`)."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Gated(nn.Module):
    """``h ⊙ σ(g)`` (a gate) or ``h ⊙ g`` (a product of two activations), optionally in place."""

    def __init__(self, gate: bool = True, inplace: bool = False) -> None:
        super().__init__()
        self.gate, self.inplace = gate, inplace
        self.h, self.g, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h, g = self.h(x), self.g(x)
        g = torch.sigmoid(g) if self.gate else g
        if self.inplace:
            h *= g
        else:
            h = h * g
        return self.out(h)


class WrittenRMSNorm(nn.Module):
    """RMSNorm written out (a normalisation statistic recognised at the op level)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Normed(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.a, self.b = kind, nn.Linear(4, 8), nn.Linear(8, 3)
        self.norm = {"layer": lambda: nn.LayerNorm(8), "layer2d": lambda: nn.LayerNorm((2, 4)),
                     "group": lambda: nn.GroupNorm(2, 4),
                     "rms": lambda: nn.RMSNorm(8), "written": lambda: WrittenRMSNorm(8)}[kind]()
        with torch.no_grad():  # affine parameters away from their initial ones, so that they matter
            for p in self.norm.parameters():
                p.add_(0.1 * torch.randn_like(p))

    def forward(self, x):
        h = self.a(x)
        if self.kind in ("group", "layer2d"):  # over (channels, positions), or two trailing dimensions
            h = self.norm(h.view(-1, 4, 2) if self.kind == "group" else h.view(-1, 2, 4)).flatten(1)
        else:
            h = self.norm(h)
        return self.b(torch.relu(h) + h)


class Attention(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.need_weights = need_weights
        self.attn, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=self.need_weights)[0].mean(1))


class SDPA(nn.Module):
    """``F.scaled_dot_product_attention`` with an additive mask computed from a parameter (a position bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.head = nn.Linear(8, 24), nn.Linear(8, 3)
        self.bias = nn.Parameter(0.3 * torch.randn(3, 3))

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], 3, 3, 2, 4).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        return self.head(out.transpose(1, 2).reshape(x.shape[0], 3, 8).mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell: type) -> None:
        super().__init__()
        self.rnn, self.head = cell(4, 5, batch_first=True), nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


CASES = {  # name: (model, input shape, composite)
    "gelu": (lambda: Act(F.gelu), (3, 4), "epsilon"),
    "silu": (lambda: Act(F.silu), (3, 4), "epsilon"),
    "tanh": (lambda: Act(torch.tanh), (3, 4), "epsilon"),
    "sigmoid": (lambda: Act(torch.sigmoid), (3, 4), "epsilon"),  # f(0) ≠ 0: absorbed
    "softplus": (lambda: Act(F.softplus), (3, 4), "epsilon"),
    "written_gelu": (lambda: Act(TanhGELU()), (3, 4), "epsilon"),
    "signal_takes_all": (lambda: Gated(), (3, 4), "epsilon"),
    "signal_takes_all_inplace": (lambda: Gated(inplace=True), (3, 4), "epsilon"),
    "gate_uniform": (lambda: Gated(), (3, 4), "attnlrp"),
    "product_uniform": (lambda: Gated(gate=False), (3, 4), "epsilon"),
    "product_uniform_inplace": (lambda: Gated(gate=False, inplace=True), (3, 4), "epsilon"),
    "layer_norm": (lambda: Normed("layer"), (3, 4), "attnlrp"),
    "layer_norm_2d": (lambda: Normed("layer2d"), (3, 4), "attnlrp"),
    "group_norm": (lambda: Normed("group"), (3, 4), "attnlrp"),
    "rms_norm": (lambda: Normed("rms"), (3, 4), "attnlrp"),
    "norm_statistic_written_out": (lambda: Normed("written"), (3, 4), "attnlrp"),
    "softmax_taylor_mha": (lambda: Attention(need_weights=True), (2, 3, 8), "attnlrp"),
    "softmax_detach_mha": (lambda: Attention(need_weights=True), (2, 3, 8), "cp_lrp"),
    "fused_attention_attnlrp": (lambda: Attention(need_weights=False), (2, 3, 8), "attnlrp"),
    "fused_attention_cp_lrp": (lambda: Attention(need_weights=False), (2, 3, 8), "cp_lrp"),
    "sdpa_parameter_mask": (lambda: SDPA(), (2, 3, 8), "attnlrp"),
    "lstm": (lambda: Recurrent(nn.LSTM), (2, 3, 4), "epsilon"),
    "gru": (lambda: Recurrent(nn.GRU), (2, 3, 4), "epsilon"),
}


def _case(name: str):
    build, shape, composite = CASES[name]
    torch.manual_seed(1)
    model = build().double().eval()
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return model, x, composite


@pytest.mark.parametrize("name", list(CASES))
def test_each_rule_differentiable_form_equals_explaining_form_and_finite_differences(name):
    model, x, composite = _case(name)
    _agrees(model, x, composite)
    _second_order(model, x, composite)


# -- small transformers ---------------------------------------------------------------------------------------
def _vit():
    model = vit("sdpa").double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return model, x


def _bert():
    model = bert("sdpa").double()
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # padding: the attention mask is a constant input of the attention
    return model, ids, {"attention_mask": mask}


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_second_order_through_a_vit_equals_finite_differences(composite):
    model, x = _vit()
    _agrees(model, x, composite)
    _second_order(model, x, composite, directions=1)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_second_order_through_bert_equals_finite_differences(composite):
    model, ids, kwargs = _bert()
    _agrees(model, ids, composite, kwargs)
    # token ids are explained at the embedding vectors, taken as constants: the word embeddings get no
    # gradient from the explanation (the position and token-type embeddings do, through the engine)
    _second_order(model, ids, composite, kwargs, frozen=("word_embeddings",), directions=1)


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def test_right_for_the_right_reasons_trains_a_vit():
    vit_model, x = _vit()
    model = Logits(vit_model).train()
    y = torch.tensor([0, 1])
    masks = torch.zeros_like(x)
    masks[..., :8] = 1  # the left half is a wrong reason
    loss_fn = RightForRightReasonsLoss(lam=1e4, method="lrp:composite=attnlrp")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    penalties = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no train-mode warning, no unknown operation
        for _ in range(4):
            optimiser.zero_grad()
            parts = loss_fn(model, x, y, masks, return_parts=True)
            parts.loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            optimiser.step()
            penalties.append(parts.terms["penalty"])
    assert all(math.isfinite(p) for p in penalties)
    assert penalties[-1] < penalties[0], penalties


# -- the checks around every pass are active in training mode ---------------------------------------------------
class _Opaque(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


class WithOpaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.b = nn.Linear(4, 6), WrittenRMSNorm(6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(_Opaque.apply(self.norm(self.a(x))))


def test_statistics_and_opaque_functions_are_checked_in_training_mode():
    torch.manual_seed(0)
    model = WithOpaque().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="_Opaque"):
        expl = _explain(model, x, "attnlrp", create_graph=True)
    coverage = expl.info["coverage"]
    assert coverage["unknown"] == {"_Opaque:autograd.Function": 1}
    # the statistic written out is held constant and its operations re-classified as handled
    assert {"mul:identity", "pow:norm_statistic", "rsqrt:norm_statistic"} <= set(coverage["handled"])
    assert coverage == _explain(model, x, "attnlrp").info["coverage"]
