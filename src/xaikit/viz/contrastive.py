"""Report sections for rules (anchors) and counterfactuals: rules as text (for images with the anchor's parts
shown and the rest dimmed), counterfactuals side by side with the input, the changed cells or pixels marked.

Takes plain tensors, arrays and strings (it does not import :mod:`xaikit.rules` or
:mod:`xaikit.counterfactuals`), writes PNGs into the report folder and returns a
:class:`~xaikit.viz.report.Section`.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .heatmap import _numpy, colourise, save_png, to_rgb
from .report import IMAGES, Section, slug

__all__ = ["rules_section", "counterfactuals_section", "anchor_image", "change_map"]


def anchor_image(rgb: np.ndarray, region: np.ndarray, dim: float = 0.25) -> np.ndarray:
    """The image ``(H, W, 3)`` in [0, 1] with the pixels outside ``region`` ``(H, W)`` faded to grey (``dim``:
    how much of them is kept), so the anchor's parts stand out."""
    keep = np.asarray(region, dtype=bool)[..., None]
    faded = dim * rgb + (1 - dim) * 0.85
    return np.where(keep, rgb, faded)


def change_map(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The change ``c − x`` of an image ``(C, H, W)`` summed over channels, as RGB ``(H, W, 3)``: red where the
    counterfactual is larger, blue where smaller, white where unchanged (scaled by the largest change)."""
    delta = (np.asarray(c, dtype=np.float64) - np.asarray(x, dtype=np.float64)).reshape(x.shape)
    delta = delta.sum(0) if delta.ndim == 3 else delta
    top = np.abs(delta).max()
    return colourise(delta / top if top > 0 else delta, signed=True)


def _img(folder: Path, name: str, rgb: np.ndarray, alt: str, caption: str = "") -> str:
    src = f"{IMAGES}/{name}.png"
    save_png(folder / src, rgb)
    text = f"<br><small>{html.escape(caption)}</small>" if caption else ""
    return f'<td><img src="{src}" alt="{html.escape(alt)}">{text}</td>'


def rules_section(rules: Sequence[str], names: Sequence[str] | None = None, title: str = "Rules (anchors)",
                  note: str = "", folder: str | Path | None = None, images: Any = None, regions: Any = None,
                  low: float | None = None, high: float | None = None, prefix: str = "anchors_") -> Section:
    """One rule per sample as text (``IF … THEN class … — precision …, coverage …``).

    Images: give ``folder``, ``images`` ``(N, C, H, W)`` and ``regions`` ``(N, H, W)`` bool (the pixels of the
    anchor's parts): each row shows the input, the anchor (other parts dimmed) and the rule.
    """
    names = list(names) if names is not None else [f"sample {i}" for i in range(len(rules))]
    if images is None:
        items = "".join(f"<li><b>{html.escape(n)}</b>: <code>{html.escape(r)}</code></li>"
                        for n, r in zip(names, rules))
        return Section(title, f'<ul class="rules">{items}</ul>', note)
    if folder is None or regions is None:
        raise ValueError("rules_section on images needs folder= (where the PNGs go) and regions= (N, H, W)")
    folder = Path(folder)
    rgb = to_rgb(_numpy(images), low, high)
    masks = _numpy(regions).astype(bool)
    rows = []
    for i, (name, rule) in enumerate(zip(names, rules)):
        cells = [f'<th class="row">{html.escape(name)}</th>',
                 _img(folder, f"{prefix}{slug(name)}__input", rgb[i], name),
                 _img(folder, f"{prefix}{slug(name)}__anchor", anchor_image(rgb[i], masks[i]), f"anchor of {name}"),
                 f'<td style="text-align:left"><code>{html.escape(rule)}</code></td>']
        rows.append(f"<tr>{''.join(cells)}</tr>")
    small = " small" if rgb.shape[1] < 150 else ""
    body = (f'<div class="scroll"><table class="grid{small}"><thead><tr><th></th><th>input</th><th>anchor</th>'
            f'<th>rule</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="legend">anchor: the parts the rule fixes; the faded parts are free (drawn from the '
            'perturbation distribution) and the prediction holds with the stated precision</p>')
    return Section(title, body, note)


def counterfactuals_section(x: Any, counterfactuals: Any, found: Any, classes: Any, predicted: Any,
                            names: Sequence[str] | None = None, feature_names: Sequence[str] | None = None,
                            title: str = "Counterfactuals", note: str = "", folder: str | Path | None = None,
                            low: float | None = None, high: float | None = None, labels: Any = None,
                            prefix: str = "counterfactuals_") -> Section:
    """Counterfactuals beside their input, the changes marked.

    Parameters
    ----------
    x : ``(N, D)`` rows or ``(N, C, H, W)`` images; ``counterfactuals`` : ``(N, k, ...)``; ``found`` : ``(N, k)``.
    classes : ``(N,)`` the model's class of each input; ``predicted`` : ``(N, k)`` of each counterfactual.
    feature_names : tables: the column names (the table shows one row per input, then its counterfactuals, with the
        changed cells highlighted). Images: give ``folder``; each row shows the input, then per counterfactual the
        image and its change (red: larger, blue: smaller, white: unchanged).
    labels : tables, optional: ``labels(column, value) -> str`` (category names).
    """
    xs, cfs = _numpy(x), _numpy(counterfactuals)
    ok, cls, pred = _numpy(found).astype(bool), _numpy(classes).reshape(-1), _numpy(predicted)
    n, k = ok.shape
    names = list(names) if names is not None else [f"sample {i}" for i in range(n)]
    if xs.ndim == 2:
        columns = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(xs.shape[1])]
        show = labels if labels is not None else (lambda j, v: f"{v:.4g}")
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        rows = []
        for i in range(n):
            cells = "".join(f"<td>{html.escape(show(j, float(v)))}</td>" for j, v in enumerate(xs[i]))
            rows.append(f'<tr class="input"><th class="row">{html.escape(names[i])}</th><td>x</td>'
                        f"<td>{int(cls[i])}</td>{cells}</tr>")
            for j in range(k):
                if not ok[i, j]:
                    rows.append(f'<tr><th></th><td>{j}</td><td colspan="{len(columns) + 1}" class="missing">none found '
                                "within the constraints</td></tr>")
                    continue
                cells = "".join(
                    (f'<td class="changed">{html.escape(show(q, float(v)))}</td>' if v != xs[i, q] else
                     f"<td>{html.escape(show(q, float(v)))}</td>") for q, v in enumerate(cfs[i, j]))
                rows.append(f"<tr><th></th><td>{j}</td><td>{int(pred[i, j])}</td>{cells}</tr>")
        body = (f'<div class="scroll"><table class="scores"><thead><tr><th></th><th>counterfactual</th><th>class</th>'
                f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
                '<style>td.changed{background:#ffe08a;font-weight:700}</style>'
                '<p class="legend">each input (x) is followed by its counterfactuals; changed cells are '
                'highlighted</p>')
        return Section(title, body, note)
    if folder is None:
        raise ValueError("counterfactuals_section on images needs folder= (where the PNGs go)")
    folder = Path(folder)
    rgb = to_rgb(xs, low, high)
    rows = []
    for i in range(n):
        cells = [f'<th class="row">{html.escape(names[i])}<br><small>class {int(cls[i])}</small></th>',
                 _img(folder, f"{prefix}{slug(names[i])}__input", rgb[i], names[i])]
        for j in range(k):
            if not ok[i, j]:
                cells.append('<td class="missing" colspan="2">none found within the constraints</td>')
                continue
            changed = int((cfs[i, j] != xs[i]).reshape(xs.shape[1], -1).any(0).sum())
            cells.append(_img(folder, f"{prefix}{slug(names[i])}__{j}", to_rgb(cfs[i, j][None], low, high)[0],
                              f"counterfactual {j} of {names[i]}", f"class {int(pred[i, j])}"))
            cells.append(_img(folder, f"{prefix}{slug(names[i])}__{j}_change", change_map(xs[i], cfs[i, j]),
                              f"change {j} of {names[i]}", f"{changed} pixels changed"))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>counterfactual {j}</th><th>change</th>" for j in range(k))
    small = " small" if rgb.shape[1] < 150 else ""
    body = (f'<div class="scroll"><table class="grid{small}"><thead><tr><th></th><th>input</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="legend">change: <span class="swatch pos"></span> larger <span class="swatch zero"></span> '
            'unchanged <span class="swatch neg"></span> smaller than the input (each scaled by its largest '
            'change)</p>')
    return Section(title, body, note)
