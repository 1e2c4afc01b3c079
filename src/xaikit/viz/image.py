"""One image and its attribution in one figure: blended (the heatmap over a pale grey copy of the image) or side
by side (the image, then the heatmap with a colour bar), as Captum's ``visualize_image_attr`` modes
``blended_heat_map`` and ``original_image`` + ``heat_map`` do.

The colours follow every xaikit heatmap (:mod:`xaikit.viz.heatmap`): positive red, negative blue, zero white,
the map scaled on its own by a high percentile of its absolute relevance. The arrays drawn are in
``fig.xaikit_images`` (``{"image", "heatmap"}`` or ``{"blended"}``), so they can be checked without pixels.
"""
from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure

from ..explanation import Explanation
from .heatmap import DEFAULT_CMAP, DEFAULT_PERCENTILE, _numpy, colourise, normalise, overlay, relevance_map, to_rgb

MODES = ("blended", "side_by_side")


def plot_image(x, attribution, mode: str = "blended", sample: int = 0, low: float | None = None,
               high: float | None = None, alpha: float = 0.85, percentile: float = DEFAULT_PERCENTILE,
               reduce: str = "sum", title: str | None = None) -> Figure:
    """One image with its attribution.

    Parameters
    ----------
    x : tensor or array ``(N, C, H, W)`` or ``(C, H, W)``
        The explained images (C = 1 or 3).
    attribution : Explanation, tensor or array
        Of the same images (``(N, C, H, W)``, ``(N, H, W)``, or one image's).
    mode : str
        ``"blended"`` (the heatmap over a grey copy of the image, :func:`~xaikit.viz.overlay`) or
        ``"side_by_side"``.
    sample : int
        Which image of the batch.
    low, high : float, optional
        The model's input range, for the image's colours (default: the image's own minimum and maximum).
    alpha : float
        Blending strength of the heatmap (``"blended"``).
    percentile, reduce
        As in :func:`~xaikit.viz.heatmap`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    method = attribution.method if isinstance(attribution, Explanation) else None
    a = _numpy(attribution.attribution if isinstance(attribution, Explanation) else attribution)
    images = _numpy(x)
    if images.ndim == 3:
        images, a = images[None], a[None]
    if images.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W) or one image (C, H, W), got shape {images.shape}")
    n = images.shape[0]
    if not isinstance(sample, int) or isinstance(sample, bool) or not -n <= sample < n:
        raise ValueError(f"sample must be an image index in 0..{n - 1}, got {sample!r}")
    if a.shape[0] != n:
        raise ValueError(f"attribution holds {a.shape[0]} maps but x holds {n} images")
    rgb = to_rgb(images[sample:sample + 1] if sample >= 0 else images[sample:][:1], low, high)
    maps = normalise(relevance_map(a[sample:sample + 1] if sample >= 0 else a[sample:][:1], reduce), percentile)
    label = title if title is not None else (method or "attribution")
    if mode == "blended":
        blended = overlay(rgb, maps, alpha)[0]
        fig = Figure(figsize=(4.0, 4.2))
        ax = fig.add_subplot()
        ax.imshow(blended)
        ax.set_axis_off()
        ax.set_title(label, fontsize=10)
        fig.xaikit_images = {"blended": blended}
    else:
        fig = Figure(figsize=(8.0, 4.2))
        left, right = fig.subplots(1, 2)
        left.imshow(rgb[0])
        left.set_title("input", fontsize=10)
        heat = colourise(maps[0], DEFAULT_CMAP)
        right.imshow(heat)
        right.set_title(label, fontsize=10)
        for ax in (left, right):
            ax.set_axis_off()
        mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1, 1), cmap=DEFAULT_CMAP)
        bar = fig.colorbar(mappable, ax=right, fraction=0.046, pad=0.02, ticks=[-1, 0, 1])
        bar.set_label(f"relevance / its {percentile:g}th percentile of |relevance|")
        fig.xaikit_images = {"image": rgb[0], "heatmap": heat}
    fig.tight_layout()
    return fig

