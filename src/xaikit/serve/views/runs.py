"""The run explorer: a ``xaikit run`` folder browsed without its model (:class:`xaikit.run.RunBrowser`).

A paginated gallery of heatmaps (only the page's maps are read), filters (class, prediction, correct/wrong,
failed, metric ranges), sorting by any metric, the methods × metrics table of the filtered rows, and SpRAy
clusters of the heatmaps with their members.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ..page import render
from ..refusals import Refused, library_call
from ..requests import read_json as _json, threaded as _threaded
from ..state import AppState

TITLE = "Runs"
#: the side length the gallery's maps are pooled to at most (the full map on request)
THUMB = 48
#: rows per page at most
MAX_PAGE = 200

BODY = """
<div class="row">
  <section class="panel" style="width:320px">
    <h3>Run</h3>
    <div id="run-about" class="muted">loading</div>
    <h3 style="margin-top:10px">Filters</h3>
    <label for="f-label">label</label><select id="f-label"><option value="">any</option></select>
    <label for="f-prediction">prediction</label><select id="f-prediction"><option value="">any</option></select>
    <label for="f-correct">correct</label>
    <select id="f-correct"><option value="">any</option><option value="true">correct</option>
      <option value="false">wrong</option></select>
    <label for="f-failed">failed</label>
    <select id="f-failed"><option value="">any</option><option value="false">succeeded</option>
      <option value="true">failed</option></select>
    <label for="f-range-column">metric range</label><select id="f-range-column"><option value="">none</option></select>
    <div class="row" style="gap:4px"><input type="number" id="f-range-low" step="any" placeholder="low"
      style="width:48%"><input type="number" id="f-range-high" step="any" placeholder="high" style="width:48%"></div>
    <label for="sort">sort by</label><select id="sort"></select>
    <label for="descending"><input type="checkbox" id="descending"> descending</label>
    <label for="map-method">heatmaps of</label><select id="map-method"></select>
    <p><button id="apply">Apply</button></p>
  </section>
  <section class="panel" style="flex:1; min-width:420px">
    <h3>Methods × metrics <span class="muted">(filtered rows)</span></h3>
    <div id="table"></div>
    <h3 style="margin-top:10px">SpRAy clusters <span class="muted">(heatmaps of the filtered rows; filter one
      class first)</span></h3>
    <label for="n-clusters">clusters (empty: eigengap)</label><input type="number" id="n-clusters" min="2" max="12">
    <p><button id="cluster" class="plain">Cluster</button></p>
    <div id="clusters" class="row"></div>
  </section>
</div>
<h3>Gallery <span id="count" class="muted"></span></h3>
<div class="row"><button id="prev" class="plain">‹ previous</button><span id="where" class="muted"></span>
  <button id="next" class="plain">next ›</button></div>
<div id="gallery" class="row" style="margin-top:8px"></div>
"""


def _browser(state: AppState) -> Any:
    if state.config.run is None:
        raise Refused(409, "this app serves no run folder: start it with xaikit serve --run FOLDER")
    browser = state.cache.get("runs:browser")
    if browser is None:
        from ...run.browse import RunBrowser

        with library_call("run folder"):
            browser = RunBrowser(state.config.run)
        state.cache["runs:browser"] = browser
    return browser


def thumbnail(values: np.ndarray, side: int = THUMB) -> tuple[list[float | None], int, int]:
    """A map summed over its channels (the first dimension of a 3-D map) and average-pooled to at most
    ``side`` × ``side``: ``(row-major values, height, width)``; NaN as ``None``."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3:
        array = array.sum(0)
    elif array.ndim == 1:
        array = array[None]
    elif array.ndim > 3:
        array = array.reshape(-1, *array.shape[-2:]).sum(0)
    h, w = array.shape
    if max(h, w) > side:
        pooled = F.adaptive_avg_pool2d(torch.from_numpy(array)[None, None], (min(h, side), min(w, side)))[0, 0]
        array = pooled.numpy()
        h, w = array.shape
    flat = [None if not math.isfinite(v) else float(v) for v in array.ravel().tolist()]
    return flat, h, w


def _benchmark_json(table: Any) -> dict[str, Any]:
    cells = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
             for row in table._rows()]
    return {"methods": table.methods, "metrics": table.metrics, "cells": cells,
            "higher_is_better": table.higher_is_better}


def mount(app: FastAPI, state: AppState) -> None:
    @app.get("/runs", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render(state, "runs", TITLE, BODY, scripts=("runs.js",))

    @app.get("/api/runs/info")
    def info() -> dict[str, Any]:
        browser = _browser(state)
        with library_call("run folder"):
            table = browser.table()
            manifest = browser.manifest
            return {"folder": browser.out.name, "num_samples": manifest["num_samples"], "rows": table.num_rows,
                    "shards_done": len(browser.store.done()), "num_shards": manifest["num_shards"],
                    "model": manifest["spec"].get("model"), "methods": browser.methods,
                    "map_methods": browser.map_methods, "metrics": browser.metrics,
                    "score_columns": browser.score_columns, "sortable": browser.sortable,
                    "classes": browser.classes(), "sample_shape": manifest["sample_shape"]}

    @app.post("/api/runs/page")
    async def rows(request: Request) -> dict[str, Any]:
        body = await _json(request)
        browser = _browser(state)

        def work() -> dict[str, Any]:
            with library_call("run query"):
                limit = int(body.get("limit", 24))
                if not 0 < limit <= MAX_PAGE:
                    raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
                found = browser.page(body.get("filters"), body.get("sort", "index"), bool(body.get("descending")),
                                     int(body.get("offset", 0)), limit)
                method = (body.get("method") or browser.map_methods[0]) if browser.map_methods else None
                maps = []
                if method is not None and found.rows:
                    for index, values in zip(found.indices, browser.maps(method, found.indices)):
                        flat, h, w = thumbnail(values)
                        maps.append({"index": index, "values": flat, "h": h, "w": w})
            return {"rows": found.rows, "total": found.total, "offset": found.offset, "limit": found.limit,
                    "sort": found.sort, "descending": found.descending, "method": method, "maps": maps}

        return await _threaded(work)

    @app.post("/api/runs/table")
    async def table(request: Request) -> dict[str, Any]:
        body = await _json(request)
        browser = _browser(state)

        def work() -> dict[str, Any]:
            with library_call("methods × metrics"):
                return _benchmark_json(browser.benchmark_table(body.get("filters")))

        return await _threaded(work)

    @app.post("/api/runs/clusters")
    async def clusters(request: Request) -> dict[str, Any]:
        body = await _json(request)
        browser = _browser(state)

        def work() -> dict[str, Any]:
            with library_call("SpRAy"):
                n = body.get("n_clusters")
                found = browser.clusters(body.get("method") or browser.map_methods[0], body.get("filters"),
                                         n_clusters=None if n in (None, "") else int(n))
            members = found.members
            return {"method": found.method, "n_clusters": found.n_clusters, "sampled": found.sampled,
                    "eigenvalues": found.eigenvalues[:12],
                    "clusters": [{"cluster": c, "size": len(members[c]), "members": members[c],
                                  "mean": found.mean[c].ravel().tolist(), "h": int(found.mean.shape[1]),
                                  "w": int(found.mean.shape[2])} for c in range(found.n_clusters)]}

        return await _threaded(work)

    @app.get("/api/runs/map")
    def full_map(method: str, index: int) -> dict[str, Any]:
        browser = _browser(state)
        with library_call("map"):
            values = browser.maps(method, [index])[0]
        flat, h, w = thumbnail(values, side=512)
        return {"index": index, "method": method, "values": flat, "h": h, "w": w}

