"""Waterfall and force plots of one row's attributions, from the base value to the explained output.

Both read an :class:`~xaikit.explanation.Explanation` whose ``info["base_value"]`` holds the explained output at
the reference (TreeSHAP, DeepLIFT, DeepLIFT-SHAP, GradientSHAP, LayerConductance, or any explanation given
``base_value=``), as shap's waterfall and force plots do (Lundberg et al., Nat. Mach. Intell. 2020, Fig. 2).

- **Waterfall**: from the base value at the bottom, one bar per feature (largest |attribution| on top), each
  starting where the previous ended; the features outside the ``top`` ones form one bar; the last bar ends at
  ``base + Σ φ``. Where the attributions do not sum to ``f(x) − base`` (sampling methods) the gap is one more
  bar, "not attributed", so the chart always ends at the model's output ``f(x)``.
- **Force**: one horizontal band: the positive attributions stacked to the left of ``f(x)`` (pushing the output
  up from the base value), the negative ones to its right (pushing it down).

Positive attributions are red and negative blue, as in every xaikit figure. The numbers behind a figure are in
``fig.xaikit_bars`` (a list of ``(label, start, width)``), so they can be checked without reading pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..explanation import Explanation
from ..tabular import feature_table

_RED, _BLUE, _GREY = "#d62728", "#1f77b4", "#7f7f7f"


def _row(explanation: Explanation, sample: int, feature_names: Sequence[str] | None, x, base_value):
    """(names, values, attributions, base, output) of one row."""
    if not isinstance(explanation, Explanation):
        raise TypeError(f"explanation must be an xk.Explanation, got {type(explanation).__name__}")
    n = explanation.attribution.shape[0]
    if not isinstance(sample, int) or isinstance(sample, bool) or not -n <= sample < n:
        raise ValueError(f"sample must be a row index in 0..{n - 1}, got {sample!r}")
    width = explanation.attribution[0].numel()
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(width)]
    rows = None if x is None else torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    flat = Explanation(explanation.attribution.reshape(n, -1), explanation.target, explanation.output,
                       explanation.method, explanation.info)
    table = feature_table(flat, names, None if rows is None else rows.reshape(n, -1).to(flat.attribution.dtype))
    base = base_value if base_value is not None else explanation.info.get("base_value")
    if base is None:
        raise ValueError("the explanation has no info['base_value']; explain with a method that reports one "
                         "(TreeSHAP, DeepLift, DeepLiftShap, GradientShap, LayerConductance) or pass base_value=")
    base = float(torch.as_tensor(base).reshape(-1)[sample if torch.as_tensor(base).numel() > 1 else 0])
    score = explanation.info.get("score")
    if isinstance(score, torch.Tensor) and score.numel() == n:
        output = float(score.reshape(-1)[sample])
    else:  # the explained output: the model's output at the target
        out = explanation.output.reshape(n, -1)
        target = torch.as_tensor(explanation.target).reshape(-1)
        output = float(out[sample, int(target[sample if target.numel() > 1 else 0])])
    return table.names, table.values[sample], table.attributions[sample], base, output


def _split(names, values, phi, top: int):
    order = np.argsort(-np.abs(phi), kind="stable")
    shown, rest = order[:top], order[top:]
    labels = [names[j] if np.isnan(values[j]) else f"{names[j]} = {values[j]:.3g}" for j in shown]
    widths = [float(phi[j]) for j in shown]
    if len(rest):
        labels.append(f"{len(rest)} other features")
        widths.append(float(phi[rest].sum()))
    return labels, widths


def plot_waterfall(explanation: Explanation, sample: int = 0, feature_names: Sequence[str] | None = None,
                   x=None, top: int = 10, base_value: float | None = None, title: str | None = None) -> Figure:
    """Waterfall chart of one row: base value → one bar per feature → the explained output (see the module).

    Parameters
    ----------
    explanation : Explanation
        With ``info["base_value"]`` (or give ``base_value``); any attribution shape (flattened to features).
    sample : int
        The row.
    feature_names : sequence of str, optional
        One per feature (default ``x0, x1, ...``).
    x : tensor or array, optional
        The explained rows, for the ``name = value`` labels.
    top : int
        Features drawn on their own; the rest form one bar.
    base_value : float, optional
        Overrides ``info["base_value"]``.
    """
    names, values, phi, base, output = _row(explanation, sample, feature_names, x, base_value)
    labels, widths = _split(names, values, phi, top)
    labels, widths = labels[::-1], widths[::-1]  # drawn bottom-up: the largest last, on top
    residual = output - base - float(np.sum(phi))
    if abs(residual) > 1e-9 * max(1.0, abs(output), abs(base)):
        labels, widths = ["not attributed"] + labels, [residual] + widths
    fig = Figure(figsize=(7.5, 1.2 + 0.34 * len(labels)))
    ax = fig.add_subplot()
    start, bars = base, []
    for k, (label, w) in enumerate(zip(labels, widths)):
        colour = _GREY if label == "not attributed" else (_RED if w >= 0 else _BLUE)
        ax.barh(k, w, left=start, color=colour)
        ax.text(start + w, k, f" {w:+.3g} ", va="center", ha="left" if w >= 0 else "right", fontsize=8)
        bars.append((label, start, w))
        start += w
    ax.set_yticks(range(len(labels)), labels)
    ax.axvline(base, color="black", linewidth=0.8, linestyle=":")
    ax.axvline(output, color="black", linewidth=0.8)
    ax.set_xlabel(f"output: base value {base:.4g} → f(x) = {output:.4g}")
    ax.set_title(title if title is not None else f"{explanation.method}: row {sample}", fontsize=10)
    fig.tight_layout()
    fig.xaikit_bars = bars
    return fig


def plot_force(explanation: Explanation, sample: int = 0, feature_names: Sequence[str] | None = None,
               x=None, top: int = 10, base_value: float | None = None, title: str | None = None) -> Figure:
    """Force plot of one row: the positive attributions stacked up to ``f(x)`` from the left, the negative ones
    from ``f(x)`` to the right; the band spans the base value's distance from the output (see the module).
    Arguments as :func:`plot_waterfall`."""
    names, values, phi, base, output = _row(explanation, sample, feature_names, x, base_value)
    labels, widths = _split(names, values, phi, top)
    fig = Figure(figsize=(9.0, 2.4))
    ax = fig.add_subplot()
    bars = []
    positive = sorted([(w, lab) for w, lab in zip(widths, labels) if w > 0])  # the largest next to f(x)
    negative = sorted([(w, lab) for w, lab in zip(widths, labels) if w < 0], reverse=True)
    end = output
    for w, label in reversed(positive):
        ax.barh(0, -w, left=end, color=_RED, edgecolor="white", height=0.5)
        ax.text(end - w / 2, 0.4, label, rotation=30, fontsize=7, ha="left", va="bottom")
        bars.append((label, end - w, w))
        end -= w
    start = output
    for w, label in reversed(negative):
        ax.barh(0, -w, left=start, color=_BLUE, edgecolor="white", height=0.5)
        ax.text(start - w / 2, -0.4, label, rotation=-30, fontsize=7, ha="left", va="top")
        bars.append((label, start, w))
        start -= w
    ax.axvline(output, color="black", linewidth=1.0)
    ax.axvline(base, color="black", linewidth=0.8, linestyle=":")
    ax.set_yticks([])
    ax.set_ylim(-1.5, 1.5)
    ax.set_xlabel(f"base value {base:.4g} (dotted) → f(x) = {output:.4g} (solid); red pushes up, blue down")
    ax.set_title(title if title is not None else f"{explanation.method}: row {sample}", fontsize=10)
    fig.tight_layout()
    fig.xaikit_bars = bars
    return fig
