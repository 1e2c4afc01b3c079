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
