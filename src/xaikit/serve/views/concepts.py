"""The concepts view: a prediction's top concepts (channels of a layer) with their share of the relevance
(:class:`xaikit.concepts.Composition`), a concept's conditional heatmap on click
(:class:`~xaikit.concepts.ConditionalHeatmaps`) and its reference samples in the data folder
(:class:`~xaikit.concepts.ReferenceSamples`, a background job)."""
from __future__ import annotations

import base64
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from torch import nn

from ...concepts import Composition, ConditionalHeatmaps, ReferenceSamples
from ...methods.cam import find_layer
from .. import compute, inputs
from ..dataset import folder_images
from ..page import render
from ..refusals import Refused, library_call
from ..requests import read_json, threaded
from ..state import AppState

TITLE = "Concepts"
NEEDS_MODEL = True
#: reference samples shown per concept
REFERENCES = 6

BODY = """
<div class="row">
  <section class="panel" style="width:320px">
    <h3>Input</h3>
    <div id="inputs" class="thumbs"></div>
    <label for="layer">layer</label><select id="layer"></select>
    <label for="top">concepts</label><input type="number" id="top" min="1" value="5">
    <p><button id="find">Top concepts</button></p>
  </section>
  <section class="panel" style="min-width:300px">
    <h3>Top concepts <span class="muted">(share of the relevance at the layer)</span></h3>
    <div id="concepts" class="muted">pick an input</div>
  </section>
  <section class="panel" style="width:280px">
    <h3>Conditional heatmap</h3><div id="conditional" class="muted">click a concept</div>
    <div class="readout" id="conditional-readout"></div>
  </section>
</div>
<h3>Reference samples <span class="muted">(the data folder's samples where the concept is most relevant)</span></h3>
<div id="references-progress"></div><div id="references" class="row"></div>
"""


def layers_of(model: nn.Module) -> list[str]:
    """The layers a concept can live in: the convolutions and linear layers, by name."""
    return [name for name, m in model.named_modules() if name and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def mount(app: FastAPI, state: AppState) -> None:
    @app.get("/concepts", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render(state, "concepts", TITLE, BODY, scripts=("concepts.js",))

    @app.get("/api/concepts/options")
    def options() -> dict[str, Any]:
        model = state.need_model().model
        with library_call("layer"):
            default = find_layer(model, None)[0]
        return {"layers": layers_of(model), "layer": default}

    @app.post("/api/concepts/top")
    async def top(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        return await threaded(lambda: _top(state, body))

    @app.post("/api/concepts/heatmap")
    async def heatmap(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        return await threaded(lambda: _conditional(state, body))

    @app.post("/api/concepts/references")
    async def references(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        layer, channel = _layer(state, body), _channel(body)
        job = state.jobs.submit(_references, state, layer, channel, name=f"references of {layer}:{channel}")
        return {"job": job.id}


def _layer(state: AppState, body: dict) -> str:
    model = state.need_model().model
    with library_call("layer"):
        return find_layer(model, body.get("layer") or None)[0]


def _channel(body: dict) -> int:
    channel = body.get("channel")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise Refused(400, f"channel must be a channel index (an int >= 0), got {channel!r}")
    return channel


def _top(state: AppState, body: dict) -> dict[str, Any]:
    served = state.need_model()
    sample = inputs.load(state, body)
    layer, count = _layer(state, body), body.get("top", 5)
    with state.model_lock, library_call("concepts"):
        result = Composition(served.model, layer, top=int(count))(sample.x, compute.parse_target(body.get("target")))
    return {"layer": layer, "target": int(result.target[0]),
            "concepts": [{"channel": int(c), "share": float(s), "relevance": float(r)}
                         for c, s, r in zip(result.concepts, result.share.tolist(), result.relevance.tolist())]}


def _conditional(state: AppState, body: dict) -> dict[str, Any]:
    served = state.need_model()
    sample = inputs.load(state, body)
    layer, channel = _layer(state, body), _channel(body)
    with state.model_lock, library_call("conditional heatmap"):
        result = ConditionalHeatmaps(served.model, layer)(sample.x, compute.parse_target(body.get("target")),
                                                          concepts=[channel])
    answer = compute.encode_map(result.heatmaps[0])
    answer.update({"layer": layer, "channel": channel, "share": float(result.share[0]),
                   "relevance": float(result.relevance[0])})
    return answer


def _references(job: Any, state: AppState, layer: str, channel: int) -> dict[str, Any]:
    served = state.need_model()
    job.report(0.05, "reading the data folder")
    x, items = folder_images(state)
    job.check()
    key = ("references", layer)
    tool = ReferenceSamples(served.model, layer, n=min(REFERENCES, len(x)), target="prediction", progress=False)
    if key not in state.cache:
        job.report(0.2, f"searching {len(x)} samples")
        with state.model_lock, library_call("reference samples"):
            state.cache[key] = tool(x)
    refs = state.cache[key]
    job.check()
    job.report(0.8, "cropping")
    with state.model_lock, library_call("reference samples"):
        ids = refs.of(channel)
        crops, _ = tool.crops(x, refs, channel, size=64) if len(ids) else ([], None)
    values = refs.values["relevance"][channel][: len(ids)].tolist()
    return {"layer": layer, "channel": channel, "seen": refs.seen,
            "samples": [{**items[i], "index": i, "value": v,
                         "crop": base64.b64encode(inputs.png(crop[None], served)).decode()}
                        for i, v, crop in zip(ids.tolist(), values, crops)]}
