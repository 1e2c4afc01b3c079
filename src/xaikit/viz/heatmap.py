"""Heatmaps of attributions: colour map, per-sample normalisation, overlays, grids, curves and score plots.

Convention (Bach et al. 2015; Montavon et al. 2018, "Methods for interpreting and understanding deep neural
networks", Fig. 6): relevance is shown on a diverging colour map, positive evidence red, negative evidence
blue, zero white. Each sample is scaled on its own, symmetrically about zero, by a high percentile of its
absolute relevance, so one hot pixel does not wash out the map and a sample's picture never depends on the
other samples of its batch.

Maps that are not signed relevances (RISE's expected scores, which sit far from zero) are *unsigned*: each
is stretched from its own minimum to its maximum on a sequential colour map (:data:`SEQUENTIAL_CMAP`), and
figures say so in their titles and colour bars.

Everything is drawn with matplotlib (colour maps, figures) and scikit-image (grey conversion, resizing). Figures
are built with matplotlib's object API (no pyplot state, no backend switch): they display in notebooks and save
with :func:`save_figure`.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Collection, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from skimage import color, transform, util

#: default colour map: blue (negative) - white (zero) - red (positive)
DEFAULT_CMAP = "bwr"
#: default percentile of |relevance| that maps to full colour (per sample)
DEFAULT_PERCENTILE = 99.5
#: colour map of unsigned maps (min-max per sample)
SEQUENTIAL_CMAP = "viridis"


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


@functools.lru_cache(maxsize=16)
def relevance_cmap(name: str = DEFAULT_CMAP) -> Colormap:
    """A matplotlib colour map resampled to an odd number of colours, so that zero maps exactly to its centre
    (white for ``bwr``/``seismic``) instead of the first colour right of it."""
    if name not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {name!r}; diverging ones: bwr, seismic, coolwarm, RdBu_r")
    return matplotlib.colormaps[name].resampled(255)


def relevance_map(attribution, reduce: str = "sum") -> np.ndarray:
    """Collapse the channel axis of an image attribution: ``(N, C, H, W)`` -> ``(N, H, W)``.

    ``reduce="sum"`` adds the channel relevances (relevance is additive; the LRP convention), ``"abs"`` adds
    their absolute values, ``"max_abs"`` keeps the largest magnitude (the saliency-map convention of
    Simonyan et al. 2014). ``(N, H, W)`` and ``(N, L)`` (tokens, features) are returned as they are.
    """
    a = _numpy(attribution)
    if a.ndim != 4:
        if a.ndim < 2:
            raise ValueError(f"attribution must have a batch dimension, got shape {a.shape}")
        return a
    if reduce == "sum":
        return a.sum(1)
    if reduce == "abs":
        return np.abs(a).sum(1)
    if reduce == "max_abs":
        return np.abs(a).max(1)
    raise ValueError(f"unknown reduce {reduce!r}; valid: 'sum', 'abs', 'max_abs'")


def normalise(maps, percentile: float = DEFAULT_PERCENTILE) -> np.ndarray:
    """Scale every sample on its own to [-1, 1], symmetrically about zero.

    The ``percentile`` of the sample's absolute values maps to ±1 and larger values are clipped; zero stays
    zero. An all-zero sample stays all zero.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    m = _numpy(maps)
    flat = np.abs(m.reshape(m.shape[0], -1))
    scale = np.percentile(flat, percentile, axis=1)
    scale = np.where(scale > 0, scale, flat.max(1))  # sparse maps: fall back to the maximum
    scale = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (m.ndim - 1))
    return np.clip(m / scale, -1.0, 1.0)


def normalise_unsigned(maps) -> np.ndarray:
    """Stretch every sample on its own from its minimum (0) to its maximum (1); a constant sample gives 0."""
    m = _numpy(maps)
    flat = m.reshape(m.shape[0], -1)
    low = flat.min(1).reshape((-1,) + (1,) * (m.ndim - 1))
    span = (flat.max(1) - flat.min(1)).reshape(low.shape)
    return np.where(span > 0, (m - low) / np.where(span > 0, span, 1.0), 0.0)


def colourise(normalised, cmap: str = DEFAULT_CMAP, signed: bool = True) -> np.ndarray:
    """Map values in [-1, 1] to RGB in [0, 1] (shape ``(..., 3)``): -1 blue, 0 white, +1 red for ``bwr``;
    unsigned maps (values in [0, 1]) on :data:`SEQUENTIAL_CMAP`."""
    if not signed:
        return matplotlib.colormaps[SEQUENTIAL_CMAP](np.asarray(normalised))[..., :3]
    return relevance_cmap(cmap)((np.asarray(normalised) + 1.0) / 2.0)[..., :3]


def heatmap(attribution, percentile: float = DEFAULT_PERCENTILE, cmap: str = DEFAULT_CMAP,
            reduce: str = "sum") -> np.ndarray:
    """RGB heatmaps ``(N, H, W, 3)`` in [0, 1] of a batch of image attributions ``(N, C, H, W)``."""
    return colourise(normalise(relevance_map(attribution, reduce), percentile), cmap)


def to_rgb(x, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Input images ``(N, C, H, W)`` (C = 1 or 3) -> ``(N, H, W, 3)`` in [0, 1] for display.

    ``low``/``high`` is the model's input range (e.g. -1, 1); without it each image is stretched to its own
    minimum and maximum.
    """
    a = _numpy(x)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3, got shape {a.shape}")
    if low is None or high is None:
        lo = a.min(axis=(1, 2, 3), keepdims=True)
        hi = a.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo, hi = np.float64(low), np.float64(high)
    a = np.clip((a - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).transpose(0, 2, 3, 1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def overlay(images: np.ndarray, normalised: np.ndarray, alpha: float = 0.85, cmap: str = DEFAULT_CMAP,
            signed: bool = True) -> np.ndarray:
    """Relevance drawn over a pale grey version of the images: ``(N, H, W, 3)`` in [0, 1].

    Each pixel mixes the grey image with its heatmap colour in proportion to ``alpha · |relevance|``, so
    irrelevant regions show the photo and relevant ones the colour. Heatmaps of another size (e.g. Grad-CAM
    on a feature map) are resized to the image with scikit-image.
    """
    images = np.asarray(images)
    normalised = np.asarray(normalised)
    n, h, w = images.shape[:3]
    if normalised.shape[1:] != (h, w):
        normalised = np.stack([transform.resize(m, (h, w), order=1, anti_aliasing=False) for m in normalised])
    grey = color.gray2rgb(color.rgb2gray(images)) * 0.6 + 0.4
    weight = (alpha * np.abs(normalised))[..., None]
    return (1.0 - weight) * grey + weight * colourise(normalised, cmap, signed)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` image in [0, 1] as an 8-bit PNG."""
    from skimage import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, util.img_as_ubyte(np.clip(rgb, 0.0, 1.0)), check_contrast=False)
    return path


def column_title(label: str, width: int = 16) -> str:
    """A method label wrapped for a narrow column: breaks after ``(``, ``,`` and ``_`` rather than inside words."""
    parts, line, lines = re.split(r"(?<=[(,_])", label), "", []
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


def plot_grid(images: np.ndarray, maps: Mapping[str, np.ndarray], row_labels: Sequence[str] | None = None,
              overlay_alpha: float | None = None, cmap: str = DEFAULT_CMAP, cell: float = 2.0,
              unsigned: Collection[str] = (), percentile: float = DEFAULT_PERCENTILE) -> Figure:
    """A sample × method grid: one row per sample, the input first, then one column per method, and colour bars.

    ``images``: ``(N, H, W, 3)`` in [0, 1] (see :func:`to_rgb`); ``maps``: method label -> normalised maps
    ``(N, H, W)`` in [-1, 1] (see :func:`normalise`), or in [0, 1] for the labels in ``unsigned`` (see
    :func:`normalise_unsigned`). With ``overlay_alpha`` the heatmaps are drawn over the image
    (:func:`overlay`). The colour bars say what the colours mean: relevance relative to each map's
    ``percentile`` of |relevance|, and min–max for unsigned maps.
    """
    n = len(images)
    columns = ["input", *maps]
    fig = Figure(figsize=(max(cell * len(columns), 5.0), cell * n + 1.2))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for row in range(n):
        for col, label in enumerate(columns):
            ax = axes[row, col]
            if label == "input":
                ax.imshow(images[row])
            else:
                m = maps[label][row : row + 1]
                signed = label not in unsigned
                if overlay_alpha:
                    shown = overlay(images[row : row + 1], m, overlay_alpha, cmap, signed)[0]
                else:
                    shown = colourise(m[0], cmap, signed)
                ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                title = label if label == "input" or label not in unsigned else f"{label} (min–max)"
                ax.set_title(column_title(title), fontsize=8)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=8)
    height = cell * n + 1.2
    fig.tight_layout(rect=(0, 0.85 / height, 1, 1))
    bars = [(relevance_cmap(cmap), (-1, 1), [-1, 0, 1],
             f"relevance ÷ the {percentile:g}th percentile\nof |relevance| of each map (clipped)")]
    if any(label in unsigned for label in maps):
        bars.append((matplotlib.colormaps[SEQUENTIAL_CMAP], (0, 1), [0, 0.5, 1],
                     "unsigned maps:\n(value − min) ÷ (max − min) of each map"))
    for k, (colours, limits, ticks, text) in enumerate(bars):
        ax = fig.add_axes((0.08 + k * 0.48, 0.5 / height, 0.36, 0.15 / height))
        bar = fig.colorbar(ScalarMappable(Normalize(*limits), colours), cax=ax, orientation="horizontal", ticks=ticks)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(text, fontsize=7)
    return fig


def plot_features(maps: Mapping[str, np.ndarray], feature_names: Sequence[str] | None = None,
                  sample_names: Sequence[str] | None = None, cmap: str = DEFAULT_CMAP,
                  values: Mapping[str, np.ndarray] | None = None) -> Figure:
    """Attributions of tabular inputs: one panel per method, samples × features coloured by normalised
    relevance (``maps``: label -> ``(N, F)`` in [-1, 1]); each cell is annotated with its attribution from
    ``values`` (label -> ``(N, F)`` raw attributions; default: the normalised value) when there is room."""
    n, f = next(iter(maps.values())).shape
    fig = Figure(figsize=(min(2.0 + 0.55 * f, 16.0), (0.5 + 0.3 * n) * len(maps) + 1.5))
    axes = fig.subplots(len(maps), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (label, m) in zip(axes, maps.items()):
        ax.imshow(colourise(m, cmap), aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=9)
        shown = _numpy(values[label]) if values is not None and label in values else np.asarray(m)
        if n * f <= 400:
            for i in range(n):
                for j in range(f):
                    ax.text(j, i, f"{shown[i, j]:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if abs(m[i, j]) > 0.6 else "black")
        ax.set_yticks(range(n), list(sample_names) if sample_names else range(n), fontsize=7)
    axes[-1].set_xticks(range(f), list(feature_names) if feature_names else range(f), rotation=60, ha="right",
                        fontsize=7)
    fig.tight_layout()
    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), relevance_cmap(cmap)), ax=list(axes), ticks=[-1, 0, 1],
                       fraction=0.03, pad=0.02)
    bar.set_label("relevance, normalised per method", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return fig


def plot_curves(curves: Mapping[str, tuple], title: str = "", xlabel: str = "", ylabel: str = "",
                ax: Axes | None = None) -> Figure:
    """Line plot of one curve per method, e.g. pixel-flipping (fraction removed -> score) or MPRT
    (randomised layer -> similarity).

    ``curves``: label -> ``(x, y)`` or ``(x, y, err)``; ``err`` (e.g. the standard error over samples) is
    drawn as a band. ``x`` may hold strings (layer names).
    """
    if ax is None:
        fig = Figure(figsize=(7.5 if len(curves) > 4 else 5.0, 3.4))
        ax = fig.subplots()
    else:
        fig = ax.figure
    for label, curve in curves.items():
        x, y = _numpy_labels(curve[0]), _numpy(curve[1])
        if len(x) != len(y):
            raise ValueError(f"curve {label!r}: x has {len(x)} points but y has {len(y)}")
        position = np.arange(len(x)) if x.dtype.kind in "USO" else x.astype(np.float64)
        (line,) = ax.plot(position, y, label=label, marker="." if len(x) <= 20 else None)
        if len(curve) > 2 and curve[2] is not None:
            err = _numpy(curve[2])
            ax.fill_between(position, y - err, y + err, color=line.get_color(), alpha=0.2, linewidth=0)
        if x.dtype.kind in "USO":
            ax.set_xticks(position, [str(v) for v in x], rotation=45, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(curves) > 4:  # many methods: the legend beside the plot, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    elif curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _numpy_labels(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def plot_scores(methods: Sequence[str], metrics: Sequence[str], mean, higher_is_better: Sequence[bool],
                sem=None) -> Figure:
    """A score table as a picture: one column per metric, cells coloured by the method's rank on that metric
    (dark green = best, in the metric's own direction) and annotated with mean (± standard error)."""
    mean = _numpy(mean)
    if mean.shape != (len(methods), len(metrics)):
        raise ValueError(f"mean must be (methods, metrics) = ({len(methods)}, {len(metrics)}), got {mean.shape}")
    sem = None if sem is None else _numpy(sem)
    goodness = np.where(np.asarray(higher_is_better, bool)[None, :], mean, -mean)
    # rank 0 = best per metric; NaN scores rank last; every method tied with the best is in bold
    ranks = np.argsort(np.argsort(-np.nan_to_num(goodness, nan=-np.inf), axis=0, kind="stable"), axis=0)
    top = np.nanmax(np.where(np.isnan(goodness), -np.inf, goodness), axis=0, keepdims=True)
    tied_best = np.isfinite(goodness) & (goodness == top)
    shade = 1.0 - ranks / max(len(methods) - 1, 1)
    fig = Figure(figsize=(1.6 + 1.5 * len(metrics), 0.8 + 0.42 * len(methods)))
    ax = fig.subplots()
    ax.imshow(shade, cmap="Greens", vmin=-0.2, vmax=1.3, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(metrics)):
            text = f"{mean[i, j]:.3g}" + (f"\n±{sem[i, j]:.2g}" if sem is not None else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    fontweight="bold" if tied_best[i, j] else "normal")
    arrows = ["↑" if h else "↓" for h in higher_is_better]
    ax.set_xticks(range(len(metrics)), [f"{m} {a}" for m, a in zip(metrics, arrows)], rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(methods)), list(methods), fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
