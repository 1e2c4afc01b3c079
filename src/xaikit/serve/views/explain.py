"""The explain view: pick or upload an input, choose methods and their settings and a target; each method's
heatmap is one request (drawn as soon as it is computed), the metrics of a shown explanation on demand."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from ...methods.base import METHODS
from ...metrics.base import REGISTRY as METRICS
from ...propagation.composites import PRESETS
from ...settings import settings_of
from .. import compute, inputs
from ..page import render
from ..refusals import Refused
from ..requests import read_json, threaded
from ..state import AppState

TITLE = "Explain"
NEEDS_MODEL = True
#: the methods ticked at first, by the kind of input
DEFAULT_METHODS = {"image": ("lrp", "gradient", "integrated_gradients"), "text": ("lrp", "input_x_gradient"),
                   "table": ("lrp", "integrated_gradients")}
#: the composite chosen at first, by the kind of input (text: AttnLRP, as the CLI)
DEFAULT_COMPOSITE = {"image": "epsilon_plus_flat", "text": "attnlrp", "table": "epsilon_plus"}
#: the metrics offered at first
DEFAULT_METRICS = ("pixel_flipping", "sparseness", "complexity")

BODY = """
<div class="row">
  <section class="panel" style="width:300px">
    <h3>Input</h3>
    <div id="inputs" class="thumbs"></div>
    <div id="typed"></div>
    <form id="upload"><label for="file">or upload one</label>
      <input type="file" id="file" name="file"><button type="submit" class="plain">Upload</button></form>
    <div id="picked" class="muted"></div>
  </section>
  <section class="panel" style="width:300px">
    <h3>Prediction and target</h3>
    <div id="prediction" class="muted">pick an input</div>
    <label for="target">target</label><select id="target"></select>
    <label for="contrast">rather than (contrast "a vs b")</label><select id="contrast"></select>
  </section>
  <section class="panel" style="width:340px">
    <h3>Methods</h3>
    <div id="methods"></div>
    <label for="composite">LRP composite</label><select id="composite"></select>
    <label for="steps">steps (integrated gradients, smooth grad samples)</label>
    <input type="number" id="steps" min="1" value="16">
    <label for="more">another method (spec, e.g. occlusion:window=8)</label><input type="text" id="more">
    <p><button id="explain">Explain</button></p>
    <label for="metric-names">metrics (names or specs)</label><input type="text" id="metric-names">
  </section>
</div>
<h3>Heatmaps</h3>
<div id="cards" class="row"></div>
"""


def mount(app: FastAPI, state: AppState) -> None:
    @app.get("/explain", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render(state, "explain", TITLE, BODY, scripts=("explain.js",))

    @app.get("/api/explain/options")
    def options() -> dict[str, Any]:
        served = state.config.model
        kind = "none" if served is None else ("text" if served.tokenizer is not None else
                                             "image" if served.kind == "image" else served.kind)
        default_kind = kind if kind in DEFAULT_METHODS else "image"
        return {"kind": kind, "methods": sorted(METHODS), "defaults": list(DEFAULT_METHODS[default_kind]),
                "settings": {name: settings_of(cls)[0] for name, cls in METHODS.items()},
                "composites": ["auto", *PRESETS], "composite": DEFAULT_COMPOSITE[default_kind],
                "metrics": METRICS.names(), "default_metrics": list(DEFAULT_METRICS)}

    @app.get("/api/explain/inputs")
    def listing() -> dict[str, Any]:
        return {"items": inputs.catalogue(state)}

    @app.post("/api/explain/upload")
    def upload(file: UploadFile = File(...)) -> dict[str, Any]:
        content = file.file.read(state.config.upload_limit + 1)
        return inputs.upload(state, content, file.filename or "")

    @app.get("/api/explain/uploads/{upload_id}.png", include_in_schema=False)
    def uploaded(upload_id: str) -> Response:
        sample = state.cache.get("uploads", {}).get(f"upload:{upload_id}")
        if sample is None or sample.raw is None:
            raise Refused(404, f"no uploaded image {upload_id!r}")
        return Response(sample.raw, media_type="image/png")

    @app.post("/api/explain/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        return await threaded(lambda: compute.predict(state, inputs.load(state, body)))

    @app.post("/api/explain/heatmap")
    async def heatmap(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        return await threaded(lambda: compute.explain(state, inputs.load(state, body), body.get("method"),
                                                       body.get("settings"), body.get("target")))

    @app.post("/api/explain/metrics")
    async def metrics(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        names = body.get("metrics") or list(DEFAULT_METRICS)
        if isinstance(names, str):
            names = [n for n in names.replace(";", " ").split() if n]
        return await threaded(lambda: compute.metrics(state, inputs.load(state, body), body.get("method"),
                                                       body.get("settings"), body.get("target"), list(names)))
