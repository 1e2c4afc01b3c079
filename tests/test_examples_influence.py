"""TracIn: the closed form and torch.func gradients against explicit per-sample autograd, projections, top-k."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from examples_helpers import snapshot, unchanged
from xaikit.examples import TracIn


def _case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y, q = torch.randn(20, 5, generator=g), torch.randint(0, 3, (20,), generator=g), torch.randn(4, 5, generator=g)
    second = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    return model, [model.state_dict(), second], [0.5, 2.0], x, y, q


def _explicit(model, states, rates, keep, x, y, q, yq):
    """Σ_i η_i ∇ℓ(w_i, q)·∇ℓ(w_i, z) with one autograd call per sample (the definition, eq. 3)."""
    total = 0
    for state, rate in zip(states, rates):
        net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        net.load_state_dict(state)
        params = [p for n, p in net.named_parameters() if keep(n)]

        def grad(xi, yi):
            loss = F.cross_entropy(net(xi[None]), yi[None])
            return torch.cat([t.flatten() for t in torch.autograd.grad(loss, params)])

        gq = torch.stack([grad(q[i], yq[i]) for i in range(len(q))])
        gt = torch.stack([grad(x[i], y[i]) for i in range(len(x))])
        total = total + rate * gq @ gt.T
    return total


@pytest.mark.parametrize("layer, keep", [("last", lambda n: n.startswith("2.")), ("all", lambda n: True)])
def test_tracin_equals_the_definition(layer, keep):
    model, states, rates, x, y, q = _case()
    before = snapshot(model)
    tracin = TracIn(model, states, rates, layer=layer, batch_size=8).fit((x, y))
    yq = model(q).argmax(1)
    expected = _explicit(model, states, rates, keep, x, y, q, yq)
    assert torch.allclose(tracin.scores(q), expected, atol=1e-5)
    assert torch.allclose(tracin.scores(q, y=torch.tensor([0, 1, 2, 0])),
                          _explicit(model, states, rates, keep, x, y, q, torch.tensor([0, 1, 2, 0])), atol=1e-5)
    assert unchanged(model, before)


def test_random_projection_keeps_the_dot_products():
    model, states, rates, x, y, q = _case()
    exact = TracIn(model, states, rates, layer="all").fit((x, y)).scores(q)
    projected = TracIn(model, states, rates, layer="all", projection=2000, seed=0).fit((x, y)).scores(q)
    correlation = torch.corrcoef(torch.stack([exact.flatten(), projected.flatten()]))[0, 1]
    assert correlation > 0.98, correlation
    again = TracIn(model, states, rates, layer="all", projection=2000, seed=0).fit((x, y)).scores(q)
    assert torch.equal(projected, again)


def test_top_returns_the_extremes_of_the_scores():
    model, states, rates, x, y, q = _case()
    tracin = TracIn(model, states, rates).fit((x, y))
    scores = tracin.scores(q)
    top = tracin.top(q, k=3)
    assert torch.equal(top.supporting, scores.topk(3, dim=1).indices)
    assert torch.equal(top.opposing, scores.topk(3, dim=1, largest=False).indices)
    assert (top.supporting_score[:, 0] > 0).all() and (top.opposing_score[:, 0] < 0).all()


def test_bad_input():
    model, states, rates, x, y, q = _case()
    with pytest.raises(ValueError, match="labelled"):
        TracIn(model).fit(x)
    with pytest.raises(ValueError, match="call fit"):
        TracIn(model).top(q)
    with pytest.raises(ValueError, match="k must be a positive int"):
        TracIn(model).fit((x, y)).top(q, k=0)
    with pytest.raises(ValueError, match="does not match the model"):
        TracIn(model, [{"weight": torch.zeros(1)}])
    with pytest.raises(ValueError, match="one positive value per checkpoint"):
        TracIn(model, states, [1.0])
    with pytest.raises(ValueError, match="closed form needs an nn.Linear"):
        TracIn(model, layer="1")
    with pytest.raises(ValueError, match="projection applies"):
        TracIn(model, projection=8)
    with pytest.raises(TypeError, match="unknown setting 'lr'"):
        TracIn(model, lr=0.1)


def test_a_model_that_is_one_linear_layer():
    """Issue 30 (3): the model itself is the last nn.Linear. Its only parameters are that layer's, so the closed
    form (layer="last") and the per-sample gradients of every parameter (layer="all") are the same TracIn."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    g = torch.Generator().manual_seed(2)
    x, y, q = torch.randn(12, 4, generator=g), torch.randint(0, 3, (12,), generator=g), torch.randn(3, 4, generator=g)
    before = snapshot(model)
    last = TracIn(model).fit((x, y))
    assert last.module is model
    every = TracIn(model, layer="all").fit((x, y))
    assert torch.allclose(last.scores(q), every.scores(q), atol=1e-5)
    assert unchanged(model, before)


@pytest.mark.parametrize("layer", ["last", "all"])
def test_a_query_of_the_wrong_shape_names_the_expected_shape(layer):
    """Issue 30 (4): the query's samples are checked against the training samples' shape (as FeatureIndex does)."""
    model, states, rates, x, y, q = _case()
    tracin = TracIn(model, layer=layer).fit((x, y))
    with pytest.raises(ValueError, match=r"x has samples of shape \(6,\) but .* samples of shape \(5,\); "
                                         r"pass x as \(N, 5\)"):
        tracin.scores(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"pass x as \(N, 5\)"):
        tracin.top(torch.randn(2, 5, 1))
