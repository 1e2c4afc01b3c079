"""Heatmap conventions: colours, per-sample normalisation, overlays and plots."""
import numpy as np
import pytest
import torch

from xaikit import viz


def test_colour_map_positive_red_negative_blue_zero_white():
    rgb = viz.colourise(np.array([1.0, -1.0, 0.0]))
    np.testing.assert_allclose(rgb[0], [1, 0, 0])
    np.testing.assert_allclose(rgb[1], [0, 0, 1])
    np.testing.assert_allclose(rgb[2], [1, 1, 1])
    # weaker evidence is paler: a half-positive value is between white and red
    half = viz.colourise(np.array([0.5]))[0]
    assert half[0] == pytest.approx(1.0) and 0.3 < half[1] < 0.7 and half[1] == pytest.approx(half[2])


def test_normalise_is_symmetric_and_clips_at_the_percentile():
    a = np.linspace(-1, 1, 201)[None] * 10.0
    a[0, -1] = 1000.0  # one outlier must not wash out the map
    m = viz.normalise(a, percentile=99)
    assert m.max() == 1.0 and m.min() == -1.0
    assert m[0, 100] == 0.0  # zero stays zero
    scale = np.percentile(np.abs(a), 99)
    np.testing.assert_allclose(m[0, :150], np.clip(a[0, :150] / scale, -1, 1))
    np.testing.assert_allclose(viz.normalise(-a, 99), -m)


def test_normalise_each_sample_on_its_own():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 8, 8)) * np.array([0.01, 1.0, 100.0])[:, None, None]
    together = viz.normalise(batch)
    for i in range(3):
        np.testing.assert_array_equal(together[i], viz.normalise(batch[i : i + 1])[0])
    # the small-valued sample still uses the full colour range
    assert np.abs(together[0]).max() == 1.0


def test_normalise_keeps_all_zero_and_sparse_maps():
    maps = np.zeros((2, 4, 4))
    maps[1, 0, 0] = -3.0  # a single non-zero pixel: the 99.5th percentile of |a| is below it
    m = viz.normalise(maps)
    assert np.all(m[0] == 0)
    assert m[1, 0, 0] == -1.0 and np.count_nonzero(m[1]) == 1


def test_relevance_map_reductions():
    a = torch.tensor([[[[1.0]], [[-3.0]], [[1.0]]]])  # (1, 3, 1, 1)
    assert viz.relevance_map(a, "sum")[0, 0, 0] == -1.0
    assert viz.relevance_map(a, "abs")[0, 0, 0] == 5.0
    assert viz.relevance_map(a, "max_abs")[0, 0, 0] == 3.0
    with pytest.raises(ValueError, match="reduce"):
        viz.relevance_map(a, "mean")


def test_to_rgb_uses_the_input_range_or_each_images_own():
    x = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    rgb = viz.to_rgb(x, -1, 1)
    assert rgb.shape == (2, 2, 2, 3) and rgb[0].max() == 0.0 and rgb[1].min() == 1.0
    grey = viz.to_rgb(torch.arange(4.0).reshape(1, 1, 2, 2))
    assert grey.shape == (1, 2, 2, 3) and grey.min() == 0.0 and grey.max() == 1.0
    with pytest.raises(ValueError, match="C = 1 or 3"):
        viz.to_rgb(torch.zeros(1, 2, 4, 4))


def test_overlay_shows_the_image_where_relevance_is_zero_and_colour_where_it_is_full():
    images = np.random.default_rng(1).uniform(size=(1, 8, 8, 3))
    maps = np.zeros((1, 8, 8))
    maps[0, 0, 0], maps[0, 1, 1] = 1.0, -1.0
    out = viz.overlay(images, maps, alpha=1.0)
    assert out.shape == images.shape
    from skimage import color

    grey = color.rgb2gray(images[0]) * 0.6 + 0.4
    np.testing.assert_allclose(out[0, 2:, 2:, 0], grey[2:, 2:])
    np.testing.assert_allclose(out[0, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[0, 1, 1], [0, 0, 1])
    # a coarser map (e.g. Grad-CAM) is resized to the image
    assert viz.overlay(images, np.ones((1, 2, 2))).shape == images.shape


def test_grid_curves_and_score_plots(tmp_path):
    images = np.zeros((2, 8, 8, 3))
    maps = {"A": np.zeros((2, 8, 8)), "B": np.ones((2, 8, 8))}
    fig = viz.plot_grid(images, maps, ["one", "two"])
    assert len(fig.axes) == 2 * 3 + 1 and fig.axes[1].get_title() == "A"  # + the colour bar
    assert "99.5th percentile\nof |relevance|" in fig.axes[-1].get_xlabel()
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["−1", "0", "1"]
    assert viz.save_figure(fig, tmp_path / "grid.png").stat().st_size > 0
    # unsigned maps: their own colour bar and "(min–max)" in the title; long labels wrap between words
    fig = viz.plot_grid(images, {"LRP(epsilon_plus_flat)": maps["A"], "RISE": maps["B"]}, unsigned={"RISE"})
    assert fig.axes[2].get_title() == "RISE (min–max)" and "min" in fig.axes[-1].get_xlabel()
    assert fig.axes[1].get_title() == "LRP(epsilon_\nplus_flat)"


def test_unsigned_maps_are_stretched_from_minimum_to_maximum():
    """Issue 18: RISE's values 9.5–11.5 all showed as the top of a zero-centred scale (solid red)."""
    rise = np.array([[[9.5, 10.0], [11.0, 11.5]]])
    stretched = viz.normalise_unsigned(rise)
    np.testing.assert_allclose(stretched, [[[0.0, 0.25], [0.75, 1.0]]])
    assert viz.normalise(rise).min() > 0.8  # a signed scale: all near its red end
    colours = viz.colourise(stretched, signed=False)
    assert len({tuple(np.round(c, 3)) for c in colours.reshape(-1, 3)}) == 4
    assert np.all(viz.normalise_unsigned(np.full((1, 2, 2), 3.0)) == 0)

    fig = viz.plot_curves({"A": (np.linspace(0, 1, 5), np.arange(5.0), np.ones(5)),
                           "B": (["conv1", "conv2"], [1.0, 0.5])}, title="curves")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["A", "B"]
    with pytest.raises(ValueError, match="x has 3 points"):
        viz.plot_curves({"A": ([0, 1, 2], [1.0])})

    fig = viz.plot_scores(["m1", "m2"], ["up", "down"], np.array([[1.0, 1.0], [2.0, 0.5]]), [True, False])
    texts = {t.get_text(): t.get_fontweight() for t in fig.axes[0].texts}
    assert texts["2"] == "bold" and texts["0.5"] == "bold" and texts["1"] == "normal"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["up ↑", "down ↓"]
