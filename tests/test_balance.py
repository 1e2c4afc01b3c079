"""The relevance balance of every LRP call (issue 29): which operations absorbed how much, and the warnings
issued on every call — about unknown operations, and when the rules' own terms absorbed most of a sample's
relevance."""
import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from models import SENet, vgg_like
from text_models import bert
from xaikit.propagation.balance import ABSORBED_SHARE, by_rules, rule_share


def _explain(model, x, composite, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expl = xk.LRP(model, composite=composite, **kwargs)(x, target=0)
    return expl, [str(w.message) for w in caught]


@pytest.mark.parametrize("case", ["vgg", "senet", "bert"])
def test_absorbed_by_operation_adds_up_to_the_absorbed_relevance(case):
    torch.manual_seed(0)
    model, x, composites = {
        "vgg": (lambda: vgg_like().eval(), torch.randn(3, 3, 16, 16), ("epsilon_plus_flat", "epsilon_gamma_box")),
        "senet": (lambda: SENet().eval(), torch.rand(3, 3, 8, 8), ("epsilon", "attnlrp")),
        "bert": (bert, torch.randint(0, 40, (3, 7)), ("attnlrp", "cp_lrp")),
    }[case]
    model = model()
    for composite in composites:
        expl, _ = _explain(model, x, composite)
        c = expl.info["conservation"]
        by = c["absorbed_by"]
        assert by and all(value.shape == c["start"].shape for value in by.values())
        torch.testing.assert_close(sum(by.values()), c["absorbed"], rtol=1e-5, atol=1e-6)
        chunked, _ = _explain(model, x, composite, batch_size=2)  # chunks merge sample by sample
        assert chunked.info["conservation"]["absorbed_by"].keys() == by.keys()
        for label, value in chunked.info["conservation"]["absorbed_by"].items():
            torch.testing.assert_close(value, by[label], rtol=1e-4, atol=1e-6)


class SaturatedGate(nn.Module):
    """Bias-free ``W₂ σ(W₁ x)`` with tiny pre-activations: σ ≈ 1/2, so the identity rule on the sigmoid passes
    ``σ(x) − σ(0) ≈ x/4`` and keeps ``σ(0)·g`` — nearly all of the relevance — as absorbed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 6, bias=False), nn.Linear(6, 2, bias=False)
        with torch.no_grad():
            self.a.weight.mul_(1e-3)

    def forward(self, x):
        return self.b(torch.sigmoid(self.a(x)))


def test_a_large_share_absorbed_by_a_rule_is_warned_about_on_every_call():
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    model = SaturatedGate().eval()
    for _ in range(2):  # every call, not once per process
        expl, messages = _explain(model, x, "epsilon")
        absorbed = [m for m in messages if "absorbed" in m]
        assert len(absorbed) == 1 and "sigmoid:identity" in absorbed[0] and "LRP(epsilon)" in absorbed[0]
    c = expl.info["conservation"]
    assert (rule_share(c) > 0.99).all()
    assert (c["residual"].abs() <= 1e-5 * c["start"].abs()).all()  # the residual alone would not tell


def test_biases_absorbing_much_are_reported_but_not_warned_about():
    """A layer's bias keeps a share that belongs to it (the model's own constant)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].bias.fill_(5.0)
    expl, messages = _explain(model, torch.randn(3, 4) * 0.01, "epsilon")
    c = expl.info["conservation"]
    assert (c["absorbed"].abs() > 0.9 * c["start"].abs()).all()
    assert not by_rules("linear:epsilon") and rule_share(c).max() == 0
    assert not [m for m in messages if "absorbed" in m]
    assert ABSORBED_SHARE == 0.5  # the threshold docs/lrp.md documents


def test_unknown_operations_are_warned_about_on_every_call_with_the_method():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1) * 2

    for composite in ("epsilon", "cp_lrp"):
        expl, messages = _explain(Odd().eval(), torch.randn(2, 3), composite)
        assert expl.info["coverage"]["unknown"] == {"logcumsumexp": 1}
        assert [m for m in messages if "logcumsumexp" in m and f"LRP({composite})" in m]


class SequenceFirstAttention(nn.Module):
    """``nn.MultiheadAttention`` on sequence-first (L, N, E) inputs, with non-zero projection biases."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attention, self.head = nn.MultiheadAttention(8, 2), nn.Linear(8, 3)
        with torch.no_grad():
            self.attention.in_proj_bias.normal_()
            self.attention.out_proj.bias.normal_()

    def forward(self, x):
        t = x.transpose(0, 1)
        return self.head(self.attention(t, t, t, need_weights=False)[0].mean(0))


@pytest.mark.parametrize("composite", ["epsilon", "attnlrp"])
def test_what_each_sample_absorbed_does_not_depend_on_the_batch(composite):
    """Explained in one pass or one sample at a time, each sample absorbs the same: also where a layer's rows
    are not batch-major inside the model (nn.MultiheadAttention's sequence-first projections)."""
    x = torch.randn(3, 7, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _assert_booked_alike_together_and_alone(SequenceFirstAttention().double().eval(), x, composite)


def _assert_booked_alike_together_and_alone(model, x, composite):
    """Each sample absorbs the same (by every operation) explained with the batch or alone."""
    together, _ = _explain(model, x, composite, batch_size=x.shape[0])
    alone, _ = _explain(model, x, composite, batch_size=1)
    a, b = together.info["conservation"], alone.info["conservation"]
    assert (a["absorbed"].abs() > 1e-3).all()
    torch.testing.assert_close(a["absorbed"], b["absorbed"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a["residual"], b["residual"], rtol=0, atol=1e-10)
    for label, value in a["absorbed_by"].items():
        torch.testing.assert_close(value, b["absorbed_by"][label], rtol=1e-10, atol=1e-12)


class RoutedRows(nn.Module):
    """A mixture-of-experts pattern: tokens flattened batch-major, each expert's linear layer (with a bias)
    applied to the rows routed to it, gathered by a data-dependent index, and added back by ``index_add``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.router, self.experts = nn.Linear(4, 2), nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        n, length, dim = x.shape
        rows = x.reshape(-1, dim)
        choice = self.router(rows).argmax(-1)
        out = torch.zeros_like(rows)
        for e, expert in enumerate(self.experts):
            index = torch.nonzero(choice == e).flatten().flip(0)  # any order
            out = out.index_add(0, index, expert(rows[index]))
        return self.head(out.reshape(n, length, dim).mean(1))


@pytest.mark.parametrize("composite", ["epsilon", "zplus_bias"])
def test_rows_routed_to_experts_are_booked_to_their_samples(composite):
    """Each expert's rows are a data-dependent subset of the tokens, in any order: what its bias absorbs goes
    to the samples the rows came from (the same as when each sample is explained alone)."""
    from xaikit.propagation import Composite, rules
    chosen = Composite("zplus_bias", dense=rules.zplus(bias=True)) if composite == "zplus_bias" else composite
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _assert_booked_alike_together_and_alone(RoutedRows().double().eval(), x, chosen)
