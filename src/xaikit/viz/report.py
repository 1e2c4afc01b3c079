"""A self-contained HTML report: one folder with ``index.html``, its PNG pictures and the raw tables.

A report is a list of :class:`Section` objects, each an HTML fragment whose pictures were written into the
report folder (relative links, no network, no scripts). The producers here make the usual ones:

- :func:`image_section`: per-sample heatmap grids (input, then one heatmap per method) and a method × sample
  overview picture;
- :func:`scores_section`: the methods × metrics table (mean ± standard error, an arrow per metric for its
  direction, the best method per metric marked), the table as a picture, and curves (pixel-flipping, MPRT);
- :func:`html_section`: any ready HTML fragment, e.g. token heatmaps from :mod:`xaikit.viz.text`;
- :func:`note_section`: a part that could not be made, with the reason;
- :func:`concepts_section` (from :mod:`xaikit.viz.concepts`): top concepts of a layer with their % share,
  conditional heatmaps and reference crops.

:func:`write_report` puts them together with the settings and the versions used.
"""
from __future__ import annotations

import datetime
import html
import json
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from .heatmap import DEFAULT_CMAP, colourise, overlay, plot_curves, plot_grid, plot_scores, save_figure, save_png

IMAGES = "images"


@dataclass
class Section:
    """One part of the report: a title, an HTML fragment (links relative to the report folder) and a note."""

    title: str
    html: str
    note: str = ""


@dataclass
class Scores:
    """What the report needs of a benchmark table.

    Attributes
    ----------
    methods, metrics : list of str
        Row and column labels.
    mean, sem : ndarray ``(methods, metrics)``
        Mean score and its standard error over samples (``sem`` may be ``None``).
    higher_is_better : list of bool
        Direction of each metric.
    curves : dict
        ``{curve name: {method: (x, y) or (x, y, err)}}``, e.g. pixel-flipping or MPRT curves.
    errors : dict
        ``{(method, metric): message}`` for cells that failed.
    """

    methods: list[str]
    metrics: list[str]
    mean: np.ndarray
    sem: np.ndarray | None
    higher_is_better: list[bool]
    curves: dict[str, dict[str, tuple]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def of(cls, table: Any) -> "Scores":
        """Read a benchmark table.

        Either :class:`xaikit.metrics.BenchmarkResult` (per-cell ``mean(method, metric)`` and ``sem(...)``,
        ``higher_is_better`` as ``{metric: bool}``, ``curves`` as ``{(method, metric): (N, S) tensor}`` with the
        curve positions in ``info[(method, metric)]``, failed cells in ``info[...]["error"]``), or any object
        with ``methods``, ``metrics``, ``mean`` and ``sem`` as ``(methods, metrics)`` arrays,
        ``higher_is_better`` as a sequence or mapping and optionally ``curves`` in the form of this class.
        """
        if isinstance(table, cls):
            return table
        missing = [a for a in ("methods", "metrics", "mean", "higher_is_better") if not hasattr(table, a)]
        if missing:
            raise TypeError(f"the score table lacks {', '.join(missing)}; expected a benchmark table "
                            "(methods, metrics, mean, sem, higher_is_better, curves)")
        methods, metrics = [str(m) for m in table.methods], [str(m) for m in table.metrics]
        direction = table.higher_is_better
        if isinstance(direction, Mapping):
            direction = [direction[m] for m in table.metrics]
        mean, sem = (_cells(table, name, methods, metrics) for name in ("mean", "sem"))
        for name, value in (("mean", mean), ("sem", sem)):
            if value is not None and value.shape != (len(methods), len(metrics)):
                raise ValueError(f"table.{name} must be (methods, metrics) = ({len(methods)}, {len(metrics)}), "
                                 f"got {value.shape}")
        info = getattr(table, "info", {}) or {}
        errors = {key: str(cell["error"]) for key, cell in info.items()
                  if isinstance(cell, Mapping) and "error" in cell}
        return cls(methods, metrics, mean, sem, [bool(d) for d in direction], _curves(table, info), errors)

    def best(self) -> np.ndarray:
        """Boolean ``(methods, metrics)``: the best mean per metric in its direction (ties all marked; NaN never)."""
        goodness = np.where(np.asarray(self.higher_is_better)[None, :], self.mean, -self.mean)
        top = np.nanmax(np.where(np.isnan(goodness), -np.inf, goodness), axis=0, keepdims=True)
        return np.isfinite(goodness) & (goodness == top)


def _cells(table: Any, name: str, methods: list[str], metrics: list[str]) -> np.ndarray | None:
    """``(methods, metrics)`` values of an array attribute or of a per-cell accessor ``table.name(method, metric)``."""
    value = getattr(table, name, None)
    if value is None:
        return None
    if callable(value):
        return np.array([[value(method, metric) for metric in metrics] for method in methods], dtype=np.float64)
    return np.asarray(_array(value), dtype=np.float64)


def _curves(table: Any, info: Mapping) -> dict[str, dict[str, tuple]]:
    """Curves by name, then method: ``(x, mean over samples, standard error)``; per-cell ``(N, S)`` curves keyed by
    ``(method, metric)`` are averaged over the samples, their positions taken from the cell's info (a 1-D entry of
    length S, e.g. ``fraction`` or ``layers``), else 0..S-1."""
    curves = dict(getattr(table, "curves", {}) or {})
    if not curves or not all(isinstance(k, tuple) for k in curves):
        return curves
    out: dict[str, dict[str, tuple]] = {}
    for (method, metric), values in curves.items():
        values = np.asarray(_array(values), dtype=np.float64).reshape(-1, np.shape(values)[-1])
        counts = np.sum(~np.isnan(values), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(values, axis=0) / np.maximum(counts, 1)
            spread = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / np.maximum(counts - 1, 1))
            sem = np.where(counts > 1, spread / np.sqrt(np.maximum(counts, 1)), np.nan)
        mean = np.where(counts > 0, mean, np.nan)
        out.setdefault(metric, {})[method] = (_positions(info.get((method, metric), {}), values.shape[1]), mean, sem)
    return out


#: axis labels of the curves, by the name of the positions a metric reports in its info
CURVE_AXES = {
    "fraction": ("fraction of the input perturbed (in the metric's order)", "target score (model output)"),
    "layers": ("model stage (layers randomised so far)", "similarity to the original explanation"),
    "sizes": ("subset size n (features)", "correlation of Σ relevance and output drop"),
    "regions": ("regions perturbed (in the metric's order)", "target score (model output)"),
    "segments": ("fraction of segments removed (most relevant first)", "class probability"),
    "percentages": ("percentage of pixels imputed (ROAD)", "target score (model output)"),
}


def curve_axes(table: Any, metric: str) -> tuple[str, str]:
    """The x and y labels of ``metric``'s curve, from the positions its cells report (else generic ones)."""
    for (_, name), cell in (getattr(table, "info", {}) or {}).items():
        if name == metric and isinstance(cell, Mapping):
            for key in CURVE_AXES:
                if key in cell:
                    return CURVE_AXES[key]
    return ("step", "value")


def _positions(cell: Mapping, steps: int) -> np.ndarray:
    for value in cell.values() if isinstance(cell, Mapping) else ():
        array = np.asarray(_array(value)) if not isinstance(value, (str, bytes)) else None
        if array is not None and array.ndim == 1 and len(array) == steps:
            return array
    return np.arange(steps)


def _array(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def slug(text: str) -> str:
    """A file-name-safe version of a label: ``"LRP(epsilon_plus_flat)"`` -> ``"lrp-epsilon_plus_flat"``."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "x"


def image_section(folder: str | Path, images: np.ndarray, maps: Mapping[str, np.ndarray], names: Sequence[str],
                  captions: Sequence[str] | None = None, times: Mapping[str, float] | None = None,
                  title: str = "Heatmaps", note: str = "", overlay_alpha: float | None = None,
                  cmap: str = DEFAULT_CMAP, prefix: str = "", overview_rows: int = 16,
                  unsigned: Collection[str] = ()) -> Section:
    """Per-sample heatmap grids: one row per sample, the input then one heatmap per method.

    ``images``: ``(N, H, W, 3)`` in [0, 1]; ``maps``: method label -> normalised maps ``(N, H, W)`` in
    [-1, 1]; ``names``: file-safe sample names; ``captions``: e.g. the predicted class; ``times``: seconds per
    method, shown in the column header; ``unsigned``: labels of maps in [0, 1] that are not signed relevances
    (min–max, sequential colours). Writes ``images/<prefix><sample>__<method>.png`` and an overview grid of the
    first ``overview_rows`` samples with the heatmaps over the inputs.
    """
    folder = Path(folder)
    captions = list(captions) if captions is not None else list(names)
    head = "".join(
        f"<th>{_breakable(label)}" + ("<br><small>min–max</small>" if label in unsigned else "")
        + (f"<br><small>{times[label]:.2f} s</small>" if times and label in times else "") + "</th>"
        for label in maps
    )
    rows = []
    for i, name in enumerate(names):
        src = f"{IMAGES}/{prefix}{slug(name)}__input.png"
        save_png(folder / src, images[i])
        cells = [f'<th class="row">{html.escape(name)}<br><small>{html.escape(captions[i])}</small></th>',
                 f'<td><img src="{src}" alt="{html.escape(name)}"></td>']
        for label, m in maps.items():
            signed = label not in unsigned
            if overlay_alpha:
                rgb = overlay(images[i : i + 1], m[i : i + 1], overlay_alpha, cmap, signed)[0]
            else:
                rgb = colourise(m[i], cmap, signed)
            src = f"{IMAGES}/{prefix}{slug(name)}__{slug(label)}.png"
            save_png(folder / src, rgb)
            cells.append(f'<td><img src="{src}" alt="{html.escape(label)} on {html.escape(name)}"></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    grid = f"{IMAGES}/{prefix}grid.png"
    shown = slice(0, overview_rows)
    save_figure(plot_grid(images[shown], {k: m[shown] for k, m in maps.items()}, captions[shown], overlay_alpha=0.85,
                          cmap=cmap, unsigned=unsigned), folder / grid)
    small = " small" if images.shape[1] < 150 else ""  # small inputs are magnified without smoothing
    body = (f'<div class="scroll"><table class="grid{small}"><thead><tr><th></th><th>input</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="legend"><span class="swatch neg"></span> negative <span class="swatch zero"></span> zero '
            f'<span class="swatch pos"></span> positive relevance (each heatmap scaled on its own by a high '
            f'percentile of its |relevance|)'
            + (' · maps marked min–max are not signed relevances: dark = their minimum, yellow = their maximum'
               if any(label in unsigned for label in maps) else "") + '</p>'
            f'<details><summary>Overview (heatmaps over the inputs)</summary><img class="wide" src="{grid}" '
            f'alt="method by sample grid"></details>')
    return Section(title, body, note)


def _breakable(label: str) -> str:
    """Escaped label that may wrap before its settings and inside a CamelCase name:
    ``Integrated<wbr>Gradients<wbr>(steps,<wbr> 16)`` (long names overlapped their neighbours at 1,400 px)."""
    escaped = html.escape(label).replace("(", "<wbr>(").replace(",", ",<wbr>").replace("_", "_<wbr>")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "<wbr>", escaped)


def scores_section(folder: str | Path, table: Any, title: str = "Scores", note: str = "",
                   files: Mapping[str, str] | None = None) -> Section:
    """The methods × metrics table with direction arrows and the best method per metric marked, the table as
    a picture, and the curves. ``table``: a benchmark table or :class:`Scores`; ``files``: label -> relative
    path of downloads written beside the report (e.g. ``{"CSV": "scores.csv"}``)."""
    folder = Path(folder)
    scores = Scores.of(table)
    best = scores.best()
    head = "".join(
        f'<th title="{"higher" if up else "lower"} is better">{html.escape(metric)}&nbsp;'
        f'<span class="arrow">{"↑" if up else "↓"}</span></th>'
        for metric, up in zip(scores.metrics, scores.higher_is_better)
    )
    rows = []
    for i, method in enumerate(scores.methods):
        cells = []
        for j in range(len(scores.metrics)):
            value = _format(scores.mean[i, j], None if scores.sem is None else scores.sem[i, j])
            error = scores.errors.get((method, scores.metrics[j]))
            if error is not None:
                cells.append(f'<td class="failed" title="{html.escape(error)}">failed</td>')
            else:
                cells.append(f'<td class="best">{value} ★</td>' if best[i, j] else f"<td>{value}</td>")
        rows.append(f"<tr><th>{html.escape(method)}</th>{''.join(cells)}</tr>")
    body = [f'<div class="scroll"><table class="scores"><thead><tr><th>method</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div><p class="legend">mean ± standard error over samples; '
            "↑ higher is better, ↓ lower is better; ★ best per metric</p>"]
    if files:
        body.append("<p>" + " · ".join(f'<a href="{html.escape(p)}">{html.escape(k)}</a>' for k, p in files.items())
                    + "</p>")
    picture = f"{IMAGES}/scores.png"
    save_figure(plot_scores(scores.methods, scores.metrics, scores.mean, scores.higher_is_better, scores.sem),
                folder / picture)
    body.append(f'<details><summary>Table as a picture</summary><img src="{picture}" alt="score table"></details>')
    if scores.curves:
        figures = []
        for name, curves in scores.curves.items():
            src = f"{IMAGES}/curve_{slug(name)}.png"
            xlabel, ylabel = curve_axes(table, name)
            save_figure(plot_curves(curves, title=name, xlabel=xlabel, ylabel=ylabel), folder / src)
            figures.append(f'<img src="{src}" alt="{html.escape(name)} curves">')
        body.append(f'<h3>Curves</h3><div class="curves">{"".join(figures)}</div>')
    return Section(title, "".join(body), note)


def _format(mean: float, sem: float | None) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4g}" + ("" if sem is None or not np.isfinite(sem) else f" ± {sem:.2g}")


def about(text: str) -> str:
    """A highlighted paragraph that says what a section shows (its model and data), so parts of a report on
    different models are not read as one."""
    return f'<p class="about">{html.escape(text)}</p>'


def html_section(title: str, fragment: str, note: str = "") -> Section:
    """A section made of a ready HTML fragment (e.g. token heatmaps from :mod:`xaikit.viz.text`)."""
    return Section(title, fragment, note)


def note_section(title: str, reason: str) -> Section:
    """A section that could not be made, with the one-line reason."""
    return Section(title, f'<p class="missing">Not included: {html.escape(reason)}</p>')


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages that made the report."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("xaikit", "torch", "numpy", "scipy", "scikit-image", "matplotlib", "transformers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _key_values(mapping: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(v if isinstance(v, str) else json.dumps(v, default=str))}"
        "</td></tr>"
        for k, v in mapping.items()
    )
    return f'<table class="settings">{rows}</table>'


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#222}
.scroll{overflow-x:auto}
section{border:1px solid #ccc;border-radius:6px;padding:.2em 1em 1em;margin:1.4em 0;background:#fcfcfc}
section h2{margin-top:.6em} .about{background:#eef3fa;border-left:4px solid #5b7db1;padding:.4em .8em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse} th,td{padding:.3em .5em;text-align:center;vertical-align:top}
table.grid{table-layout:fixed;width:100%} table.grid thead th:first-child{width:8em}
table.grid img{width:100%;max-width:150px;height:auto;display:block;margin:auto}
table.grid.small img{image-rendering:pixelated}
table.grid th{font-weight:600;font-size:.85em;max-width:150px;overflow-wrap:normal;word-break:normal;hyphens:none}
table.grid th.row{text-align:right;vertical-align:middle;overflow-wrap:anywhere}
table.scores td,table.scores th{border:1px solid #ddd} table.scores td{white-space:nowrap} table.scores td.best{font-weight:700;background:#e3f4e3}
table.scores td.failed{color:#a33;cursor:help}
table.settings th{text-align:left;font-weight:600} table.settings td{text-align:left;font-family:monospace}
.note{color:#555;font-style:italic} .missing{color:#a33} .legend{color:#555;font-size:.85em}
.swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;border:1px solid #aaa}
.swatch.neg{background:#0000ff}.swatch.zero{background:#fff}.swatch.pos{background:#ff0000}
img.wide{max-width:100%} .curves img{max-width:48%;margin:.3em} details{margin:.6em 0}
"""


def write_report(folder: str | Path, sections: Sequence[Section], settings: Mapping[str, Any] | None = None,
                 title: str = "xaikit report") -> Path:
    """Write ``folder/index.html`` from the sections, the settings and the versions; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class=\"note\">made {made}</p>"]
    if sections:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>'
                                           for i, s in enumerate(sections)) + "</ul></nav>")
    for i, section in enumerate(sections):
        note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
        parts.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>{note}{section.html}</section>')
    parts.append(f"<section id=\"settings\"><h2>Settings</h2>{_key_values(settings or {})}"
                 f"<h3>Versions</h3>{_key_values(versions())}</section></body></html>")
    index = folder / "index.html"
    index.write_text("".join(parts), encoding="utf-8")
    (folder / "settings.json").write_text(json.dumps({"settings": dict(settings or {}), "versions": versions()},
                                                     indent=2, default=str), encoding="utf-8")
    return index
