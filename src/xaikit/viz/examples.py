"""Report section for explanation by example: a query, its nearest samples with the BiLRP heatmaps of why
each is similar, and its pertinent positive and negative (CEM).

Takes plain tensors/arrays (it does not import :mod:`xaikit.examples`), writes PNGs into the report folder and
returns a :class:`~xaikit.viz.report.Section`.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

from .heatmap import DEFAULT_CMAP, _numpy, colourise, normalise, relevance_map, save_png, to_rgb
from .report import IMAGES, Section


def _images(x, low: float | None, high: float | None) -> np.ndarray:
    a = _numpy(x)
    if a.ndim == 3:
        a = a[None]
    return to_rgb(a, low, high)


def _maps(m, percentile: float) -> np.ndarray:
    a = _numpy(m)
    if a.ndim == 3:
        a = a[None]
    return normalise(relevance_map(a), percentile)


def _cell(folder: Path, name: str, rgb: np.ndarray, alt: str, caption: str = "") -> str:
    src = f"{IMAGES}/{name}.png"
    save_png(folder / src, rgb)
    text = f"<br><small>{html.escape(caption)}</small>" if caption else ""
    return f'<td><img src="{src}" alt="{html.escape(alt)}">{text}</td>'


def examples_section(folder: str | Path, query, caption: str, neighbours, neighbour_captions: Sequence[str],
                     query_maps=None, neighbour_maps=None, pertinent: dict | None = None,
                     low: float | None = None, high: float | None = None, title: str = "Explanation by example",
                     note: str = "", percentile: float = 99.5, cmap: str = DEFAULT_CMAP,
                     prefix: str = "examples_", attribution: dict | None = None) -> Section:
    """One explained sample: its ``k`` nearest samples and, optionally, why each is similar and its PP/PN.

    Parameters
    ----------
    query : ``(C, H, W)`` or ``(1, C, H, W)`` image; ``caption``: e.g. its predicted class.
    neighbours : ``(k, C, H, W)`` images, nearest first; ``neighbour_captions``: e.g. label and similarity.
    query_maps, neighbour_maps : ``(k, C, H, W)`` or ``(k, H, W)``, optional
        Relevance on the query (resp. on each neighbour) for their similarity (BiLRP marginals).
    pertinent : dict, optional
        ``{"pp": image, "pp_map": map, "pp_caption": str, "pn": image, "pn_map": map, "pn_caption": str}``
        (any subset): the pertinent positive/negative inputs and their maps (``δ``).
    low, high : the model's input range for display.
    attribution : dict, optional
        The training samples behind the prediction (training-data attribution, e.g. TRAK):
        ``{"proponents": (k, C, H, W), "proponent_captions": [...], "opponents": (k, C, H, W),
        "opponent_captions": [...], "method": "TRAK ..."}`` (strongest first).
    """
    folder = Path(folder)
    q = _images(query, low, high)
    nb = _images(neighbours, low, high)
    if len(neighbour_captions) != len(nb):
        raise ValueError(f"neighbour_captions has {len(neighbour_captions)} entries for {len(nb)} neighbours")
    rows = [
        "<tr><th class=\"row\">sample</th>" + _cell(folder, f"{prefix}query", q[0], "query", caption)
        + "".join(_cell(folder, f"{prefix}neighbour{j}", nb[j], f"neighbour {j + 1}", neighbour_captions[j])
                  for j in range(len(nb))) + "</tr>"
    ]
    for label, maps, key in (("why similar: on the query", query_maps, "qmap"),
                             ("why similar: on the neighbour", neighbour_maps, "nmap")):
        if maps is None:
            continue
        m = _maps(maps, percentile)
        rows.append(f'<tr><th class="row">{html.escape(label)}</th><td></td>'
                    + "".join(_cell(folder, f"{prefix}{key}{j}", colourise(m[j], cmap), f"{label} {j + 1}")
                              for j in range(len(m))) + "</tr>")
    head = "".join(f"<th>neighbour {j + 1}</th>" for j in range(len(nb)))
    body = [f'<div class="scroll"><table class="grid small"><thead><tr><th></th><th>query</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>']
    if pertinent:
        cells, heads = [], []
        for kind, name in (("pp", "pertinent positive"), ("pn", "pertinent negative")):
            if pertinent.get(kind) is not None:
                heads.append(f"<th>{name}</th>")
                cells.append(_cell(folder, f"{prefix}{kind}", _images(pertinent[kind], low, high)[0], name,
                                   pertinent.get(f"{kind}_caption", "")))
            if pertinent.get(f"{kind}_map") is not None:
                heads.append(f"<th>{name}: δ</th>")
                cells.append(_cell(folder, f"{prefix}{kind}_map",
                                   colourise(_maps(pertinent[f"{kind}_map"], percentile)[0], cmap), f"{name} δ"))
        body.append(f'<h3>Contrastive explanation (CEM)</h3><div class="scroll"><table class="grid small"><thead><tr>'
                    f'<th>query</th>{"".join(heads)}</tr></thead><tbody><tr>'
                    + _cell(folder, f"{prefix}query_cem", q[0], "query", caption) + "".join(cells)
                    + "</tr></tbody></table></div>"
                    '<p class="legend">pertinent positive: what must stay present to keep the class (the rest set to '
                    '"absent"); pertinent negative: the smallest sparse addition that changes the class; δ: red where '
                    "the input is raised, blue where it is lowered (PP: against the absent value; PN: against the query).</p>")
    if attribution:
        body.append(_attribution_table(folder, prefix, attribution, low, high))
    body.append('<p class="legend"><span class="swatch neg"></span> negative <span class="swatch zero"></span> zero '
                '<span class="swatch pos"></span> positive relevance (each heatmap scaled on its own)</p>')
    return Section(title, "".join(body), note)


def _attribution_table(folder: Path, prefix: str, attribution: dict, low: float | None, high: float | None) -> str:
    """Rows of a prediction's top proponents and opponents among the training samples."""
    rows, width = [], 0
    for kind, name in (("proponents", "proponents: raised the prediction"),
                       ("opponents", "opponents: lowered it")):
        if attribution.get(kind) is None:
            continue
        images = _images(attribution[kind], low, high)
        captions = list(attribution.get(f"{kind[:-1]}_captions", [""] * len(images)))
        if len(captions) != len(images):
            raise ValueError(f"attribution['{kind[:-1]}_captions'] has {len(captions)} entries for "
                             f"{len(images)} {kind}")
        width = max(width, len(images))
        rows.append(f'<tr><th class="row">{html.escape(name)}</th>'
                    + "".join(_cell(folder, f"{prefix}{kind}{j}", images[j], f"{kind[:-1]} {j + 1}", captions[j])
                              for j in range(len(images))) + "</tr>")
    head = "".join(f"<th>{j + 1}</th>" for j in range(width))
    method = html.escape(str(attribution.get("method", "training-data attribution")))
    return (f'<h3>Training samples behind the prediction ({method})</h3><div class="scroll"><table class="grid '
            f'small"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="legend">proponents: training samples whose presence raised the predicted class\'s margin '
            "most; opponents: those that lowered it most (strongest first).</p>")
