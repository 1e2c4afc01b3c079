"""The examples view: the nearest samples of the data folder to an input in the model's representation, with
BiLRP similarity maps (:class:`xaikit.examples.FeatureIndex`), its pertinent positive and negative
(:class:`xaikit.examples.CEM`), and its top proponents and opponents among the served training data (TRAK with
the report's settings, :func:`xaikit.examples.shown_trak`; :mod:`xaikit.serve.training`); all run as background
jobs."""
from __future__ import annotations

import base64
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ...examples import CEM, SHOWN_SETTINGS, FeatureIndex, shown_method
from ...modes import eval_semantics
from .. import compute, inputs
from ..dataset import folder_images
from ..page import render
from ..refusals import Refused, library_call
from ..requests import read_json
from ..state import AppState
from ..training import KEY, OPTION, fitted_trak, trak_lock, training_data

TITLE = "Examples"
NEEDS_MODEL = True
#: CEM's search: as the CLI's report (κ = 0, β = 0.1, 4 × 200 iterations, absent = the middle of the range)
CEM_SETTINGS = {"c_init": 100.0, "c_steps": 4, "iterations": 200}
#: training samples shown each way at most
MAX_TRAINING = 50
#: feature values of a table row's caption at most
ROW_VALUES = 12

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
<section class="panel" id="training" style="margin-top:12px">
  <h3>Training data <span class="muted" id="training-about"></span></h3>
  <div class="row" style="align-items:flex-end">
    <div style="width:120px"><label for="training-k">samples each way</label>
      <input type="number" id="training-k" min="1" max="50" value="4"></div>
    <div style="width:160px"><label for="training-target">target (class; empty: the prediction)</label>
      <input type="text" id="training-target" placeholder="argmax"></div>
    <p><button id="training-start">Proponents and opponents</button></p>
  </div>
  <div id="training-progress"></div>
  <h4>Proponents <span class="muted">(raised the target's margin most)</span></h4>
  <div id="proponents" class="row"></div>
  <h4>Opponents <span class="muted">(lowered it most)</span></h4>
  <div id="opponents" class="row"></div>
</section>
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

    @app.get("/api/examples/training")
    def training_info() -> dict[str, Any]:
        data = state.config.extra.get(KEY)
        with state.cache_lock:
            trak = state.cache.get("trak")
        projection = SHOWN_SETTINGS["projection"]
        return {"available": data is not None, "samples": None if data is None else int(data["x"].shape[0]),
                "option": OPTION, "ready": trak is not None,
                "method": shown_method(trak) if trak is not None else f"TRAK without Newton weights, projection "
                                                                     f"{projection} (at most the gradient size)"}

    @app.post("/api/examples/training")
    async def training(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        data = training_data(state, "training-data attribution")
        sample = inputs.load(state, body)
        if sample.forward_kwargs:
            raise Refused(400, "training-data attribution (TRAK) calls the model on one tensor; a model that takes "
                               "more arguments (a text model's attention mask) is not supported")
        if tuple(sample.x.shape[1:]) != tuple(data["x"].shape[1:]):
            raise Refused(400, f"the input has the shape {tuple(sample.x.shape[1:])} but the training data's samples "
                               f"{tuple(data['x'].shape[1:])}; serve images at the training size (--image-size) or "
                               "give training data of the model's inputs")
        target = compute.parse_target(body.get("target"))
        if target is not None and (not isinstance(target, int) or target < 0):
            raise Refused(400, f"target {body.get('target')!r}: training-data attribution explains one class; give "
                               "argmax (the prediction) or a class index")
        k = body.get("k", 4)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TRAINING:
            raise Refused(400, f"k must be an int from 1 to {MAX_TRAINING}, got {k!r}")
        return {"job": state.jobs.submit(_training, state, sample, target, k, name="training-data attribution").id}


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


def _training(job: Any, state: AppState, sample: inputs.Sample, target: int | None, k: int) -> dict[str, Any]:
    """The sample's top-``k`` proponents and opponents among the training data for ``target`` (``None``: the
    prediction), as :meth:`xaikit.examples.TRAK.top` finds them."""
    served = state.need_model()
    trak = fitted_trak(state, job)
    job.check()
    job.report(0.95, "scoring the training data")
    data = training_data(state)
    with trak_lock(state):
        with torch.no_grad(), eval_semantics(trak.model, warn=False), library_call("TRAK", model_errors=True):
            classes = trak.model(sample.x).reshape(1, -1).shape[1]
        if target is not None and target >= classes:
            raise ValueError(f"target {target}: the model has {classes} outputs; give argmax or a class from 0 to "
                             f"{classes - 1}")
        y = None if target is None else torch.tensor([target], device=sample.x.device)
        with library_call("TRAK"):
            found = trak.top(sample.x, y, k=min(k, trak.train_size))
    label = int(found.label[0])
    x, labels = data["x"], data["y"]

    def shown(index: torch.Tensor, score: torch.Tensor) -> list[dict[str, Any]]:
        return [{"index": i, "score": s, "label": int(labels[i]), "label_name": served.label(int(labels[i])),
                 **_training_sample(x[i:i + 1], served)} for i, s in zip(index.tolist(), score.tolist())]
    return {"method": shown_method(trak), "target": label, "target_name": served.label(label),
            "proponents": shown(found.supporting[0], found.supporting_score[0]),
            "opponents": shown(found.opposing[0], found.opposing_score[0])}


def _training_sample(x: torch.Tensor, served: Any) -> dict[str, Any]:
    """How a training sample ``(1, ...)`` is shown: an image ``(1, C, H, W)`` (C = 1 or 3) as a PNG thumbnail,
    anything else (a table row, token ids) as a line of its values."""
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return {"kind": "image", "image": base64.b64encode(inputs.png(x, served)).decode()}
    values = x.reshape(-1).tolist()
    text = ", ".join(f"{v:.4g}" for v in values[:ROW_VALUES]) + (", …" if len(values) > ROW_VALUES else "")
    return {"kind": "row", "text": text}
