"""In-place detection reads an explicit table, not any positional ``True`` (issue 22, defect 1)."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.propagation.classify import INPLACE_FLAG, is_inplace


class PositionalKeepdim(nn.Module):
    """``h.view(n, 2, 4).sum(1, True)``: keepdim given by position."""

    def __init__(self, keyword: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.keyword = nn.Linear(6, 8), nn.Linear(4, 3), keyword

    def forward(self, x):
        h = torch.relu(self.fc1(x)).view(x.shape[0], 2, 4)
        h = h.sum(1, keepdim=True) if self.keyword else h.sum(1, True)
        return self.fc2(h.flatten(1))


@pytest.mark.parametrize("method", [xk.LRP, xk.Gradient])
def test_keepdim_by_position_explains_like_the_keyword_form(method):
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    positional = method(PositionalKeepdim(keyword=False).eval())(x, target=1)
    keyword = method(PositionalKeepdim(keyword=True).eval())(x, target=1)
    torch.testing.assert_close(positional.attribution, keyword.attribution)
    if method is xk.LRP:
        conservation = positional.info["conservation"]
        torch.testing.assert_close(conservation["start"], conservation["input"] + conservation["absorbed"])


class PositionalDropout(nn.Module):
    """``F.dropout(h, 0.5, False)``: ``training=False`` by position; ``F.dropout(h, 0.0, True)`` trains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 2)

    def forward(self, x):
        h = self.fc1(x)
        h = F.dropout(F.relu(h), 0.0, True)  # training=True by position, p=0: the identity, not in place
        return self.fc2(h)


def test_training_flag_by_position_is_not_an_inplace_flag():
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    model = PositionalDropout().eval()
    lrp = xk.LRP(model, composite="epsilon")(x, target=0)
    grad = xk.InputXGradient(model)(x, target=0)
    torch.testing.assert_close(lrp.attribution, grad.attribution, atol=1e-4, rtol=1e-4)
    assert not lrp.info["coverage"]["unknown"]


def test_is_inplace_reads_the_table():
    t = torch.ones(2, 3)
    assert not is_inplace(torch.Tensor.sum, (t, 1, True), {})
    assert not is_inplace(F.dropout, (t, 0.5, True), {})
    assert is_inplace(F.dropout, (t, 0.5, True, True), {})
    assert is_inplace(F.relu, (t, True), {})
    assert is_inplace(F.relu, (t,), {"inplace": True})
    assert not is_inplace(F.relu, (t,), {})
    assert is_inplace(torch.Tensor.add_, (t, 1.0), {})
    assert is_inplace(torch.Tensor.__iadd__, (t, 1.0), {})
    assert is_inplace(torch.Tensor.__setitem__, (t, 0, 1.0), {})
    assert not is_inplace(torch.Tensor.__add__, (t, 1.0), {})


def test_the_inplace_table_covers_every_functional_with_an_inplace_flag():
    """Every ``torch.nn.functional`` function with an ``inplace`` parameter is in the table, at its position."""
    expected = {}
    for name in dir(F):
        func = getattr(F, name)
        if not callable(func) or name.startswith("_"):
            continue
        try:
            parameters = list(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            continue
        if "inplace" in parameters:
            expected[func] = parameters.index("inplace")
    assert expected, "torch.nn.functional has functions with an inplace flag"
    missing = {f.__name__: i for f, i in expected.items() if INPLACE_FLAG.get(f) != i}
    assert not missing, f"in-place flags missing from or wrong in INPLACE_FLAG: {missing}"
