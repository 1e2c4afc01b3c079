"""CEM: every pertinent negative flips the prediction, every pertinent positive keeps it (digits MLP, shapes
CNN); the boxes of the paper; batch invariance; the autoencoder term; bad input."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from examples_helpers import shapes_case, snapshot, unchanged
from xaikit.examples import CEM
from xaikit.targets import Contrast


@functools.lru_cache(maxsize=1)
def digits():
    from xaikit.zoo import train_digits_mlp

    return train_digits_mlp(seed=0)


def _margin(scores, target):
    """[f]_t − max_{i≠t}[f]_i per sample."""
    own = scores.gather(1, target[:, None])[:, 0]
    return own - scores.scatter(1, target[:, None], float("-inf")).amax(1)


def _check(model, result, x, low, high):
    with torch.no_grad():
        pp_class, pn_class = model(result.pp).argmax(1), model(result.pn).argmax(1)
    # the input itself is a (trivial, dense) PP of its predicted class: a PP exists for every sample, and the
    # search must return one whatever the CPU's rounding made of the iterates
    assert result.pp_found.all() and result.pn_found.all()
    assert torch.equal(pp_class, result.target)                          # every PP keeps the prediction
    assert (pn_class != result.target).all()                              # every PN flips it
    assert torch.equal(pp_class, result.pp_class) and torch.equal(pn_class, result.pn_class)
    # the paper's boxes: the PP lies between "absent" and x, the PN inside the feature range
    lo, hi = torch.minimum(result.absent, x), torch.maximum(result.absent, x)
    assert ((result.pp >= lo - 1e-6) & (result.pp <= hi + 1e-6)).all()
    assert ((result.pn >= low - 1e-6) & (result.pn <= high + 1e-6)).all()


def test_cem_on_the_digits_mlp():
    model, x, y = digits()
    before = snapshot(model)
    cem = CEM(model, feature_range=(0.0, 1.0), iterations=100, c_steps=3)
    result = cem(x[:6])
    _check(model, result, x[:6], 0.0, 1.0)
    assert torch.equal(result.target, model(x[:6]).argmax(1))
    # sparse: the L1 shrinkage leaves most pixels untouched
    assert result.info["pn_sparsity"].mean() < 0.5 and result.info["pp_sparsity"].mean() < 0.5
    assert torch.equal(result.explanation("pn").attribution, result.pn - x[:6])
    assert torch.equal(result.explanation("pp").attribution, result.pp_map)
    assert unchanged(model, before)


def test_cem_on_the_shapes_cnn():
    model, _, test = shapes_case()
    x = test.x[:3]
    result = CEM(model, feature_range=(-1.0, 1.0), iterations=60, c_steps=3, c_init=100.0)(x)
    _check(model, result, x, -1.0, 1.0)


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_a_pp_is_found_for_every_sample_whose_input_keeps_its_class(kappa):
    # a budget with which FISTA from δ = 0 cannot move (c·α·|∇| below the shrinkage β): the search must still
    # return a PP for every sample whose whole input keeps t₀ with margin κ (the paper's δ = x₀ − absent is
    # one), and every PP it returns keeps t₀ with that margin and lies between "absent" and x
    model, _, test = shapes_case()
    x = test.x[:3]
    result = CEM(model, mode="pp", kappa=kappa, feature_range=(-1.0, 1.0), c_init=0.1, c_steps=1, iterations=3)(x)
    with torch.no_grad():
        input_margin = _margin(model(x), result.target)
        pp_margin = _margin(model(result.pp), result.target)
    assert (input_margin > kappa).any()
    assert result.pp_found[input_margin > kappa].all()
    assert (pp_margin[result.pp_found] > kappa).all()
    assert torch.equal(result.pp_class[result.pp_found], result.target[result.pp_found])
    lo, hi = torch.minimum(result.absent, x), torch.maximum(result.absent, x)
    assert ((result.pp >= lo) & (result.pp <= hi)).all()


def test_samples_are_independent_of_their_batch_mates():
    model, x, _ = digits()
    cem = CEM(model, mode="pn", feature_range=(0.0, 1.0), iterations=40, c_steps=2)
    both = cem(x[:3])
    alone = cem(x[1:2])
    assert torch.allclose(both.pn[1:2], alone.pn, atol=1e-5) and both.pp is None


def test_an_identity_autoencoder_adds_nothing_and_another_target_needs_no_change():
    model, x, _ = digits()
    settings = dict(mode="pn", feature_range=(0.0, 1.0), iterations=30, c_steps=2)
    plain = CEM(model, **settings)(x[:2])
    with_ae = CEM(model, gamma=5.0, autoencoder=nn.Identity(), **settings)(x[:2])
    assert torch.equal(plain.pn, with_ae.pn)
    shrink = nn.Linear(64, 64, bias=False)
    nn.init.zeros_(shrink.weight)                     # AE(x) = 0: the term is γ‖x + δ‖², pulling towards 0
    pulled = CEM(model, gamma=5.0, autoencoder=shrink, **settings)(x[:2])
    assert pulled.pn_found.all() and pulled.pn.sum() < plain.pn.sum()
    # explaining a class the model does not predict: x itself is already "not that class", δ = 0
    other = (model(x[:2]).argmax(1) + 1) % 10
    result = CEM(model, **settings)(x[:2], target=other)
    assert torch.equal(result.target, other) and torch.equal(result.pn, x[:2]) and result.pn_found.all()


def test_bad_input():
    model, x, _ = digits()
    with pytest.raises(ValueError, match="needs an autoencoder"):
        CEM(model, gamma=1.0)
    with pytest.raises(ValueError, match="unknown mode"):
        CEM(model, mode="pq")
    with pytest.raises(TypeError, match="unknown setting 'kapa'"):
        CEM(model, kapa=0.1)
    with pytest.raises(ValueError, match="outside feature_range"):
        CEM(model, feature_range=(0.0, 0.5))(x[:2])
    with pytest.raises(ValueError, match="kappa must be"):
        CEM(model, kappa=-1.0)
    with pytest.raises(TypeError, match="CEM explains a class"):
        CEM(model)(x[:2], target=Contrast(1, 2))
    with pytest.raises(ValueError, match="target has 3 entries"):
        CEM(model)(x[:2], target=[1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        CEM(model)(torch.full((1, 64), float("nan")))
    with pytest.raises(ValueError, match="feature_range must be a pair"):
        CEM(model, feature_range=(0.0,))
