"""Plots of feature interactions and of relevant walks on a graph.

- :func:`plot_interaction_matrix`: the order-2 values of one sample as a symmetric matrix (order-1 values on
  the diagonal), red positive, blue negative, one colour scale centred at 0;
- :func:`plot_interaction_network`: features as nodes on a circle (size and colour: order-1 value), pairs as
  edges (width: |value|, colour: sign), the strongest ``top`` pairs only — for tables and tokens;
- :func:`plot_interaction_heatmap`: on an image, the pairs of superpixels (or grid cells) that interact with
  one chosen feature, each feature's region coloured by its interaction with it;
- :func:`plot_walks`: the top relevant walks of GNN-LRP drawn on the graph (Schnake et al. 2022, Fig. 1).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from ..interactions import RelevantWalksResult, ShapleyInteractionsResult
from .heatmap import relevance_cmap

_RED, _BLUE = "#d62728", "#1f77b4"


def _check(result: object) -> ShapleyInteractionsResult:
    if not isinstance(result, ShapleyInteractionsResult):
        raise TypeError(f"result must be an xk.interactions.ShapleyInteractionsResult, got {type(result).__name__}")
    if result.order < 2:
        raise ValueError(f"result has order {result.order}: interaction plots need order >= 2")
    return result


def _names(d: int, names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) != d:
        raise ValueError(f"names has {len(names)} entries for {d} features")
    return list(names) if names is not None else [str(j) for j in range(d)]


def plot_interaction_matrix(result: ShapleyInteractionsResult, sample: int = 0,
                            names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """The ``(d, d)`` matrix of one sample (:meth:`ShapleyInteractionsResult.matrix`) as a heatmap."""
    matrix = _check(result).matrix(sample).numpy()
    d = matrix.shape[0]
    labels = _names(d, names)
    fig = Figure(figsize=(1.2 + 0.42 * d, 0.9 + 0.42 * d))
    ax = fig.add_subplot()
    span = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap=relevance_cmap(), vmin=-span, vmax=span)
    ax.set_xticks(range(d), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(d), labels, fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"{result.index} (diagonal: order 1)")
    ax.set_title(title or f"{result.index} interactions, sample {sample}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_interaction_network(result: ShapleyInteractionsResult, sample: int = 0,
                             names: Sequence[str] | None = None, top: int = 12, title: str | None = None) -> Figure:
    """Features on a circle, the ``top`` pairs of largest ``|I|`` as edges (red positive, blue negative)."""
    matrix = _check(result).matrix(sample).numpy()
    d = matrix.shape[0]
    labels = _names(d, names)
    angle = 2 * math.pi * np.arange(d) / d
    xy = np.stack([np.cos(angle), np.sin(angle)], 1)
    pairs = sorted(((abs(matrix[i, j]), i, j) for i in range(d) for j in range(i + 1, d)), reverse=True)[:top]
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    strongest = pairs[0][0] if pairs and pairs[0][0] > 0 else 1.0
    for size, i, j in pairs:
        ax.plot(*xy[[i, j]].T, color=_RED if matrix[i, j] >= 0 else _BLUE, linewidth=0.5 + 5 * size / strongest,
                alpha=0.8, zorder=1)
    first = np.diag(matrix)
    scale = float(np.abs(first).max()) or 1.0
    ax.scatter(*xy.T, s=80 + 600 * np.abs(first) / scale, c=[_RED if v >= 0 else _BLUE for v in first],
               edgecolors="black", zorder=2)
    for k in range(d):
        ax.text(*(1.18 * xy[k]), labels[k], ha="center", va="center", fontsize=8)
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.45, 1.45)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{result.index}: top {len(pairs)} pairs (width |I|), nodes: order 1", fontsize=10)
    return fig


def plot_interaction_heatmap(result: ShapleyInteractionsResult, image: torch.Tensor, feature: int,
                             sample: int = 0, title: str | None = None) -> Figure:
    """The image beside a map of each feature's (superpixel's) interaction with ``feature``: red regions raise
    the score together with it, blue ones lower it; ``feature`` itself is outlined."""
    matrix = _check(result).matrix(sample)
    mask = result.features[sample if result.features.shape[0] > 1 else 0].reshape(-1, *result.features.shape[-2:])[0]
    if not 0 <= feature < matrix.shape[0]:
        raise ValueError(f"feature must be in 0..{matrix.shape[0] - 1}, got {feature}")
    values = matrix[feature].clone()
    values[feature] = 0.0
    mapped = values[mask].numpy()
    picture = image.detach().cpu().double()
    picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
    fig = Figure(figsize=(7.0, 3.4))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.imshow(picture.permute(1, 2, 0).numpy() if picture.shape[0] == 3 else picture[0].numpy(), cmap="gray")
    span = float(np.abs(mapped).max()) or 1.0
    shown = right.imshow(mapped, cmap=relevance_cmap(), vmin=-span, vmax=span)
    for ax in (left, right):
        ax.contour((mask == feature).numpy(), levels=[0.5], colors="black", linewidths=1.5)
        ax.axis("off")
    fig.colorbar(shown, ax=right, shrink=0.8)
    right.set_title(title or f"{result.index} with feature {feature}", fontsize=10)
    return fig


def plot_walks(walks: RelevantWalksResult, positions: np.ndarray | None = None, top: int = 5,
               title: str | None = None) -> Figure:
    """The graph (grey edges) with the ``top`` most relevant walks drawn as curved arrows, red positive."""
    if not isinstance(walks, RelevantWalksResult):
        raise TypeError(f"walks must be an xk.interactions.RelevantWalksResult, got {type(walks).__name__}")
    n = int(max(walks.edge_index.max(), walks.walks.max())) + 1
    if positions is None:
        angle = 2 * math.pi * np.arange(n) / n
        positions = np.stack([np.cos(angle), np.sin(angle)], 1)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    for u, v in walks.edge_index.T.tolist():
        ax.plot(*positions[[u, v]].T, color="#bbbbbb", linewidth=1.0, zorder=1)
    node_relevance = walks.node_relevance(n).numpy()
    scale = float(np.abs(node_relevance).max()) or 1.0
    ax.scatter(*positions.T, s=60 + 300 * np.abs(node_relevance) / scale,
               c=[_RED if r >= 0 else _BLUE for r in node_relevance], edgecolors="black", zorder=3)
    chosen = walks.top(top, "absolute")
    strongest = abs(chosen[0][1]) if chosen and chosen[0][1] != 0 else 1.0
    for rank, (walk, value) in enumerate(chosen):
        bend = 0.15 + 0.1 * rank
        for a, b in zip(walk[:-1], walk[1:]):
            if a == b:
                ax.scatter(*positions[a], s=400, facecolors="none", edgecolors=_RED if value >= 0 else _BLUE,
                           linewidths=1 + 3 * abs(value) / strongest, zorder=2)
                continue
            ax.add_patch(FancyArrowPatch(positions[a], positions[b], connectionstyle=f"arc3,rad={bend}",
                                         arrowstyle="-|>", mutation_scale=12, color=_RED if value >= 0 else _BLUE,
                                         linewidth=1 + 3 * abs(value) / strongest, alpha=0.8, zorder=2))
    for k in range(n):
        ax.text(*positions[k], str(k), ha="center", va="center", fontsize=7, zorder=4)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"top {len(chosen)} relevant walks (GNN-LRP)", fontsize=10)
    return fig
