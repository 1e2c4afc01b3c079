"""Pictures of concepts: conditional heatmaps with their share of the relevance, reference-sample grids,
embeddings with thumbnails, and the "concepts" section of the HTML report (:func:`concepts_section`).

Inputs are numpy arrays or tensors; images ``(N, H, W, 3)`` in [0, 1] (see :func:`xaikit.viz.to_rgb`).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from .heatmap import DEFAULT_CMAP, _numpy, normalise, overlay, relevance_map, save_png
from .report import IMAGES, Section, slug


def _concept_label(concept: Any, labels: Mapping | None) -> str:
    if labels and not isinstance(concept, list) and concept in labels:
        return str(labels[concept])
    return f"ch {concept}" if not isinstance(concept, list) else "ch " + "+".join(map(str, concept))


def reference_strip(crops: np.ndarray) -> np.ndarray:
    """Reference crops ``(n, h, w, 3)`` side by side with a 1-pixel white gap: ``(h, n·(w+1)−1, 3)``."""
    crops = np.asarray(crops)
    n, h, w = crops.shape[:3]
    strip = np.ones((h, n * (w + 1) - 1, 3))
    for i in range(n):
        strip[:, i * (w + 1): i * (w + 1) + w] = crops[i]
    return strip


def plot_references(crops: Mapping[Any, np.ndarray], labels: Mapping | None = None, cell: float = 1.0) -> Figure:
    """A channel × reference-sample grid: one row per channel (``{channel: crops (n, h, w, 3)}``)."""
    rows = list(crops)
    n = max(len(c) for c in crops.values())
    fig = Figure(figsize=(cell * n + 1.0, cell * len(rows) + 0.3))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, channel in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            if i < len(crops[channel]):
                ax.imshow(np.clip(crops[channel][i], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(_concept_label(channel, labels), fontsize=8)
    fig.tight_layout()
    return fig


def plot_composition(image: np.ndarray, heatmaps: Any, concepts: Sequence, shares: Sequence[float],
                     references: Mapping[Any, np.ndarray] | None = None, labels: Mapping | None = None,
                     cmap: str = DEFAULT_CMAP, cell: float = 2.0) -> Figure:
    """One prediction's concepts: the input, then per concept its conditional heatmap over the input titled
    with its share in %, and (if given) its reference crops below."""
    k = len(concepts)
    maps = normalise(relevance_map(heatmaps))
    rows = 2 if references else 1
    fig = Figure(figsize=(cell * (k + 1), cell * (1.4 if references else 1) + 0.5))
    axes = fig.subplots(rows, k + 1, squeeze=False, gridspec_kw={"height_ratios": [1, 0.4][:rows]})
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("input", fontsize=9)
    for j, (concept, share) in enumerate(zip(concepts, shares)):
        axes[0, j + 1].imshow(overlay(image[None], maps[j: j + 1], 0.85, cmap)[0])
        axes[0, j + 1].set_title(f"{_concept_label(concept, labels)}: {share:.1f} %", fontsize=9)
        if references and concept in references:
            axes[1, j + 1].imshow(reference_strip(references[concept]))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_embedding(points: np.ndarray, labels: Sequence | None = None, thumbnails: np.ndarray | None = None,
                   zoom: float = 0.6, title: str = "", size: float = 6.0) -> Figure:
    """A 2-D embedding: points coloured by label, with image thumbnails ``(N, h, w, 3)`` drawn at the points."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 2:
        raise ValueError(f"points must be (N, 2) or more dimensions, got shape {points.shape}")
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    colours = None if labels is None else np.asarray(labels)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=12)
    if labels is not None:
        ax.legend(*scatter.legend_elements(), fontsize=7, loc="best")
    if thumbnails is not None:
        for point, thumb in zip(points, np.asarray(thumbnails)):
            ax.add_artist(AnnotationBbox(OffsetImage(np.clip(thumb, 0, 1), zoom=zoom), point[:2], frameon=False))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def concepts_section(folder: str | Path, images: np.ndarray, composition: Any, names: Sequence[str],
                     references: Mapping[Any, np.ndarray] | None = None, labels: Mapping | None = None,
                     title: str = "Concepts", note: str = "", cmap: str = DEFAULT_CMAP) -> Section:
    """The report's "concepts" section: for each image, the top concepts of a layer with their share of the
    relevance in %, their conditional heatmaps, and the reference crops of each concept.

    ``composition``: a :class:`xaikit.concepts.ConditionalHeatmapsResult` (e.g. from
    :class:`xaikit.concepts.Composition`), sample-major; ``references``: ``{channel: crops (n, h, w, 3)}``.
    """
    folder = Path(folder)
    images = np.asarray(images)
    maps = normalise(relevance_map(composition.heatmaps))
    sample = _numpy(composition.sample).astype(int)
    shares = _numpy(composition.share)
    rows = []
    for i, name in enumerate(names):
        src = f"{IMAGES}/concepts_{slug(name)}__input.png"
        save_png(folder / src, images[i])
        cells = [f'<th class="row">{html.escape(name)}</th><td><img src="{src}" alt="{html.escape(name)}"></td>']
        for k in np.flatnonzero(sample == i):
            concept = composition.concepts[k]
            label = _concept_label(concept, labels)
            src = f"{IMAGES}/concepts_{slug(name)}__{slug(label)}.png"
            save_png(folder / src, overlay(images[i: i + 1], maps[k: k + 1], 0.85, cmap)[0])
            crops = ""
            if references and concept in references:
                ref = f"{IMAGES}/concepts_refs_{slug(label)}.png"
                if not (folder / ref).exists():
                    save_png(folder / ref, reference_strip(references[concept]))
                crops = f'<br><img class="refs" src="{ref}" alt="reference samples of {html.escape(label)}">'
            cells.append(f'<td><img src="{src}" alt="{html.escape(label)} on {html.escape(name)}">'
                         f'<br><small>{html.escape(label)}: {shares[k]:.1f} %</small>{crops}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    layer = html.escape(str(getattr(composition, "layer", "")))
    body = (f'<div class="scroll"><table class="grid">'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="legend">top concepts (channels) of layer <code>{layer}</code>, each with its share of the '
            "relevance at the layer (signed, % of Σ|R|) and its concept-conditional heatmap (CRP)"
            + ("; below: its reference samples (relevance maximisation)" if references else "") + "</p>")
    return Section(title, body, note)
