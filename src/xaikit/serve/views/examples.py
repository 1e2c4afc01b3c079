"""The examples view: the nearest samples of the data folder to an input in the model's representation, with
BiLRP similarity maps (:class:`xaikit.examples.FeatureIndex`), and its pertinent positive and negative
(:class:`xaikit.examples.CEM`); both run as background jobs."""
from __future__ import annotations

import base64
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ...examples import CEM, FeatureIndex
from .. import compute, inputs
from ..dataset import folder_images
from ..page import render
from ..refusals import Refused, library_call
from ..requests import read_json
from ..state import AppState

TITLE = "Examples"
NEEDS_MODEL = True
#: CEM's search: as the CLI's report (κ = 0, β = 0.1, 4 × 200 iterations, absent = the middle of the range)
CEM_SETTINGS = {"c_init": 100.0, "c_steps": 4, "iterations": 200}

BODY = """
<div class="row">
  <section class="panel" style="width:320px">
    <h3>Input</h3>
    <div id="inputs" class="thumbs"></div>
    <label for="k">neighbours</label><input type="number" id="k" min="1" value="4">
    <p><button id="neighbours">Nearest examples</button> <button id="cem" class="plain">Pertinent positive and
      negative</button></p>
  </section>
  <section class="panel"><h3>Query</h3><div id="query"></div><div class="readout" id="query-readout"></div></section>
</div>
<div id="progress"></div>
<h3>Nearest examples <span class="muted">(cosine similarity; BiLRP maps: what makes the pair similar)</span></h3>
<div id="neighbours-out" class="row"></div>
<h3>Pertinent positive and negative <span class="muted">(CEM)</span></h3>
<div id="cem-out" class="row"></div>
"""


def mount(app: FastAPI, state: AppState) -> None:
    @app.get("/examples", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render(state, "examples", TITLE, BODY, scripts=("examples.js",))

    @app.post("/api/examples/neighbours")
    async def neighbours(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        sample = inputs.load(state, body)
        k = body.get("k", 4)
        return {"job": state.jobs.submit(_neighbours, state, sample, int(k), name="nearest examples").id}

    @app.post("/api/examples/cem")
    async def cem(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        sample = inputs.load(state, body)
        settings = dict(CEM_SETTINGS)
        for key, top in (("iterations", 1000), ("c_steps", 9)):
            value = body.get(key, settings[key])
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise Refused(400, f"{key} must be an int from 1 to {top}, got {value!r}")
            settings[key] = value
        return {"job": state.jobs.submit(_cem, state, sample, settings, name="pertinent positive and negative").id}


def _index(state: AppState) -> tuple[FeatureIndex, list[dict[str, Any]]]:
    if "feature_index" not in state.cache:
        x, items = folder_images(state)
        with state.model_lock, library_call("nearest examples"):
            state.cache["feature_index"] = (FeatureIndex(state.need_model().model).fit(x), items)
    return state.cache["feature_index"]


def _neighbours(job: Any, state: AppState, sample: inputs.Sample, k: int) -> dict[str, Any]:
    served = state.need_model()
    job.report(0.1, "representing the data folder")
    index, items = _index(state)
    job.check()
    job.report(0.5, "searching and explaining the similarities")
    with state.model_lock, library_call("nearest examples"):
        found = index.neighbours(sample.x, k=min(k, len(index)))
        maps = index.heatmaps(sample.x, found)
    return {"layer": maps.info.get("layer"), "query": compute.encode_map(maps.query[0, 0]),
            "neighbours": [{**items[i], "index": i, "similarity": s, "query_map": compute.encode_map(maps.query[0, j]),
                            "map": compute.encode_map(maps.neighbour[0, j])}
                           for j, (i, s) in enumerate(zip(found.index[0].tolist(), found.similarity[0].tolist()))],
            "preview": base64.b64encode(inputs.png(sample.x, served)).decode()}


def _cem(job: Any, state: AppState, sample: inputs.Sample, settings: dict[str, Any]) -> dict[str, Any]:
    served = state.need_model()
    low = 0.0 if served.low is None else served.low
    high = 1.0 if served.high is None else served.high
    job.report(0.1, f"searching ({settings['c_steps']} × {settings['iterations']} iterations)")
    with state.model_lock, library_call("CEM"):
        result = CEM(served.model, feature_range=(low, high), absent=(low + high) / 2, **settings)(sample.x)
    answer = {"target": int(result.target[0]), "target_name": served.label(int(result.target[0]))}
    for mode, kept in (("pp", "kept"), ("pn", "changed")):
        found = bool(getattr(result, f"{mode}_found")[0])
        cls = int(getattr(result, f"{mode}_class")[0])
        answer[mode] = {"found": found, "class": cls, "class_name": served.label(cls),
                        "sparsity": float(result.info[f"{mode}_sparsity"][0]), "what": kept,
                        "image": base64.b64encode(inputs.png(getattr(result, mode)[:1], served)).decode(),
                        "map": compute.encode_map(getattr(result, f"{mode}_map")[0])}
    return answer
