"""Plots of tabular attributions: a bar chart of one row, a beeswarm-style summary over many rows.

Both take a :class:`xaikit.tabular.FeatureTableResult` (``xk.tabular.feature_table(expl, names, x)``). Positive
attributions are red and negative blue, as in the heatmaps; the beeswarm colours each point by its feature's
value in the row (low blue, high red, scaled per feature over the rows shown), the summary-plot convention
of the Shapley literature (Lundberg et al., Nature Machine Intelligence 2020).
"""
from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..tabular import FeatureTableResult

_RED, _BLUE = "#d62728", "#1f77b4"


def _check(table: object) -> FeatureTableResult:
    if not isinstance(table, FeatureTableResult):
        raise TypeError(f"table must be an xk.tabular.FeatureTableResult (xk.tabular.feature_table(expl, names, x)), "
                        f"got {type(table).__name__}")
    return table


def plot_bar(table: FeatureTableResult, sample: int = 0, top: int = 15, title: str | None = None) -> Figure:
    """Horizontal bars of one row's attributions, largest |attribution| on top, labelled ``name = value``
    and annotated with the attribution."""
    rows = _check(table).rows(sample, top)[::-1]
    fig = Figure(figsize=(7.0, 0.9 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    attributions = np.array([a for _, _, a in rows])
    ax.barh(range(len(rows)), attributions, color=[_RED if a >= 0 else _BLUE for a in attributions])
    labels = [name if np.isnan(value) else f"{name} = {value:.3g}" for name, value, _ in rows]
    ax.set_yticks(range(len(rows)), labels)
    span = float(np.abs(attributions).max()) if len(rows) else 1.0
    for k, a in enumerate(attributions):
        ax.text(a + (0.01 if a >= 0 else -0.01) * span, k, f"{a:+.3g}", va="center",
                ha="left" if a >= 0 else "right", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1.25 * span if attributions.min(initial=0) < 0 else -0.05 * span, 1.25 * span)
    ax.set_xlabel("attribution (contribution to the explained output)")
    ax.set_title(title if title is not None else f"{table.method}: row {sample}", fontsize=10)
    fig.tight_layout()
    return fig


def _swarm_offsets(values: np.ndarray, bins: int = 60) -> np.ndarray:
    """Vertical offsets in [-0.4, 0.4] that spread points with similar values (deterministic)."""
    offsets = np.zeros(len(values))
    if len(values) < 2 or np.ptp(values) == 0:
        return offsets
    cell = np.minimum(((values - values.min()) / np.ptp(values) * bins).astype(int), bins - 1)
    most = np.bincount(cell).max()
    for c in np.unique(cell):
        members = np.flatnonzero(cell == c)
        steps = np.arange(len(members))
        offsets[members] = np.where(steps % 2, -(steps + 1) // 2, steps // 2) * (0.8 / max(most, 2))
    return offsets


def plot_beeswarm(table: FeatureTableResult, top: int = 15, title: str | None = None) -> Figure:
    """One row of points per feature (most important on top, by mean |attribution|): each point is a row's
    attribution, coloured by that row's feature value."""
    summary = _check(table).summary(top)
    index = [table.names.index(name) for name, _, _ in summary][::-1]
    fig = Figure(figsize=(7.5, 1.0 + 0.36 * len(index)))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["coolwarm"]
    for k, j in enumerate(index):
        phi, value = table.attributions[:, j], table.values[:, j]
        low, high = np.nanmin(value) if np.isfinite(value).any() else 0.0, np.nanmax(value) if np.isfinite(value).any() else 0.0
        scaled = (value - low) / (high - low) if high > low else np.full_like(value, 0.5)
        colours = np.where(np.isfinite(scaled)[:, None], cmap(np.nan_to_num(scaled, nan=0.5)), (0.6, 0.6, 0.6, 1.0))
        ax.scatter(phi, k + _swarm_offsets(phi), c=colours, s=12, linewidths=0)
    ax.set_yticks(range(len(index)), [table.names[j] for j in index])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("attribution (contribution to the explained output)")
    mappable = matplotlib.cm.ScalarMappable(cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, ticks=[0, 1], fraction=0.04, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value (per feature, over the rows)")
    ax.set_title(title if title is not None else f"{table.method}: {table.n} rows", fontsize=10)
    fig.tight_layout()
    return fig
