"""Waterfall, force and single-image plots: the figure is made and the numbers behind it add up (the bars run
from the base value to the model's output; the images are the overlay/heatmap of the attribution)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.ensemble import GradientBoostingRegressor
from torch import nn

import xaikit as xk
from xaikit import viz


@pytest.fixture(scope="module")
def tree_explanation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = x[:, 0] - 2 * x[:, 1] + x[:, 2] * x[:, 3]
    model = GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0).fit(x, y)
    return xk.tabular.TreeSHAP(model)(x[:3]), x[:3], model


def test_waterfall_bars_chain_from_base_to_output(tree_explanation):
    expl, x, model = tree_explanation
    names = [f"f{j}" for j in range(6)]
    fig = viz.plot_waterfall(expl, sample=1, feature_names=names, x=x, top=3)
    assert isinstance(fig, Figure)
    bars = fig.xaikit_bars
    base, output = expl.info["base_value"][1].item(), model.predict(x[1:2])[0]
    assert len(bars) == 4 and bars[-1][0].startswith("f")  # three features + "3 other features"; largest on top
    assert bars[0][0] == "3 other features"
    assert bars[0][1] == pytest.approx(base, abs=1e-12)
    for (_, start, width), (_, following, _) in zip(bars, bars[1:]):
        assert following == pytest.approx(start + width, abs=1e-12)  # each bar starts where the previous ended
    assert bars[-1][1] + bars[-1][2] == pytest.approx(output, abs=1e-9)
    phi = expl.attribution[1].numpy()
    top = np.argsort(-np.abs(phi))[:3]
    assert [b[2] for b in bars[1:]] == pytest.approx(phi[top][::-1].tolist(), abs=1e-12)
    assert bars[-1][0] == f"f{top[0]} = {x[1, top[0]]:.3g}"


def test_waterfall_shows_what_is_not_attributed_and_force_plot_adds_up():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()
    x, background = torch.randn(2, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    expl = xk.GradientShap(model, background=background, samples=4, seed=0)(x, target=0)  # a Monte-Carlo sum
    fig = viz.plot_waterfall(expl, sample=0)
    bars = fig.xaikit_bars
    assert bars[0][0] == "not attributed"
    assert bars[0][2] == pytest.approx(-expl.info["convergence_delta"][0].item(), abs=1e-12)
    assert bars[-1][1] + bars[-1][2] == pytest.approx(model(x)[0, 0].item(), abs=1e-12)  # ends at f(x)
    expl = xk.DeepLift(model, baseline=background[:1])(x, target=0)
    fig = viz.plot_force(expl, sample=1, top=4)
    bars = fig.xaikit_bars
    widths = np.array([w for _, _, w in bars])
    output, base = model(x)[1, 0].item(), model(background[:1])[0, 0].item()
    assert widths.sum() == pytest.approx(output - base, abs=1e-12)  # red minus blue lengths: f(x) − base
    positive = [(s, w) for _, s, w in bars if w > 0]
    assert positive[0][0] + positive[0][1] == pytest.approx(output, abs=1e-12)  # the red stack ends at f(x)
    with pytest.raises(ValueError, match="base_value"):
        viz.plot_waterfall(xk.Gradient(model)(x, target=0))
    assert viz.plot_waterfall(xk.Gradient(model)(x, target=0), base_value=0.0).xaikit_bars


def test_single_image_blended_and_side_by_side():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 8, 8)
    attribution = torch.randn(2, 3, 8, 8)
    fig = viz.plot_image(x, attribution, sample=1, low=0, high=1)
    expected = viz.overlay(viz.to_rgb(x[1:], 0, 1), viz.normalise(viz.relevance_map(attribution[1:])))[0]
    assert np.allclose(fig.xaikit_images["blended"], expected)
    assert len(fig.axes) == 1
    fig = viz.plot_image(x, attribution, mode="side_by_side", sample=0, low=0, high=1)
    assert np.allclose(fig.xaikit_images["image"], x[0].permute(1, 2, 0).numpy())
    assert np.allclose(fig.xaikit_images["heatmap"], viz.heatmap(attribution[:1])[0])
    assert len(fig.axes) == 3  # the image, the heatmap, its colour bar
    with pytest.raises(ValueError, match="mode"):
        viz.plot_image(x, attribution, mode="overlay")
    with pytest.raises(ValueError, match="sample"):
        viz.plot_image(x, attribution, sample=5)
