"""The revise view: explanatory interactive learning (:mod:`xaikit.improve.revise`).

The user picks a training sample, sees the model's heatmap, paints the regions that are a wrong reason (one
mask, applied to every training sample) or flags a SpRAy cluster of one class's heatmaps as an artifact; the
revision (RRR fine-tuning of a copy, or P-ClArC) runs as a background job with progress and cancel, then the
heatmaps and the accuracy of every evaluation set before and after are shown, and the masks, the revised
weights and the settings are saved as files that ``xaikit improve`` repeats.

The training data come from the app's config: ``config.extra["revise"]`` is a dict with ``x``, ``y`` (tensors),
``evaluate`` (``name -> (x, y)``) and ``about`` (the data spec saved with the revision), as
``xaikit serve --train-data decoy-digits`` (or ``--revise-data``) loads it (:mod:`xaikit.serve.training`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from ...improve.revise import STRATEGIES, Revise, RevisionCancelled
from ...improve.spray import spray
from ..jobs import Cancelled, Job
from ..page import render
from ..refusals import Refused, library_call
from ..state import AppState
from ..training import training_data
from ..requests import read_json as _json, threaded as _threaded
from .runs import thumbnail

TITLE = "Revise"
#: the settings the browser may give (anything else is refused by Revise's own settings check)
SETTINGS = ("lam", "method", "epochs", "lr", "batch_size", "seed", "layer", "classifier")
#: the defaults shown in the form
DEFAULTS = {"strategy": "rrr", "lam": 10.0, "method": "input_x_gradient", "epochs": 5, "lr": 0.01,
            "batch_size": 64, "seed": 0, "classifier": "pattern"}

BODY = """
<div class="row">
  <section class="panel" style="width:300px">
    <h3>Training samples</h3>
    <div id="samples" class="thumbs"></div>
    <div id="data-about" class="muted"></div>
  </section>
  <section class="panel" style="width:300px">
    <h3>Heatmap <span id="sample-about" class="muted"></span></h3>
    <div style="position:relative; width:264px; height:264px">
      <canvas id="heatmap" style="position:absolute; width:264px; height:264px; image-rendering:pixelated"></canvas>
      <canvas id="mask" style="position:absolute; width:264px; height:264px; image-rendering:pixelated;
        cursor:crosshair"></canvas>
    </div>
    <p class="muted">paint the wrong reason (drag; shift erases); the mask applies to every training sample</p>
    <p><button id="clear-mask" class="plain">Clear mask</button> <span id="mask-count" class="muted"></span></p>
  </section>
  <section class="panel" style="width:300px">
    <h3>Revision</h3>
    <label for="strategy">strategy</label>
    <select id="strategy"><option value="rrr">right for the right reasons (fine-tune a copy)</option>
      <option value="p_clarc">P-ClArC (flagged cluster)</option></select>
    <label for="lam">λ</label><input type="number" id="lam" step="any">
    <label for="method">explainer (RRR penalty and heatmaps)</label><input type="text" id="method">
    <label for="epochs">epochs</label><input type="number" id="epochs" min="1">
    <label for="lr">learning rate</label><input type="number" id="lr" step="any">
    <label for="layer">layer (P-ClArC)</label><select id="layer"></select>
    <p><button id="start">Revise</button> <button id="cancel" class="plain" disabled>Cancel</button></p>
    <progress id="progress" max="1" value="0"></progress> <span id="status" class="muted"></span>
  </section>
</div>
<div class="row" style="margin-top:10px">
  <section class="panel" style="width:420px">
    <h3>SpRAy clusters of one class</h3>
    <label for="cluster-class">class</label><select id="cluster-class"></select>
    <p><button id="find-clusters" class="plain">Find clusters</button></p>
    <div id="clusters" class="row"></div>
  </section>
  <section class="panel" style="flex:1; min-width:420px">
    <h3>Before and after</h3>
    <div id="result" class="muted">no revision yet</div>
  </section>
</div>
"""


def _data(state: AppState) -> dict[str, Any]:
    return training_data(state, "the revise view")


def _out(state: AppState) -> Path:
    folder = state.config.extra.get("revise_out")
    if folder is None:
        folder = state.cache.get("revise:out")
        if folder is None:
            folder = state.cache["revise:out"] = tempfile.mkdtemp(prefix="xaikit-revisions-")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _map(values: torch.Tensor) -> dict[str, Any]:
    flat, h, w = thumbnail(values.detach().double().cpu().numpy(), side=512)
    return {"values": flat, "h": h, "w": w}


def _settings(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    strategy = body.get("strategy", "rrr")
    given = dict(body.get("settings") or {})
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise Refused(400, f"unknown revision setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    settings = {k: v for k, v in given.items() if v not in (None, "")}
    for key, kind in (("lam", float), ("lr", float), ("epochs", int), ("batch_size", int), ("seed", int)):
        if key in settings:
            try:
                settings[key] = kind(settings[key])
            except (TypeError, ValueError):
                raise Refused(400, f"revision setting {key} must be a number, got {settings[key]!r}") from None
    if strategy != "p_clarc":
        settings.pop("layer", None)
        settings.pop("classifier", None)
    return strategy, settings


def revise_job(job: Job, state: AppState, strategy: str, settings: dict[str, Any], mask: Any, artifact: Any,
               show: list[int]) -> dict[str, Any]:
    """The background work of one revision: run it, save its files, return what the page shows."""
    data = _data(state)
    served = state.need_model()

    def progress(done: int, total: int, info: dict) -> None:
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        job.report(done / total, f"step {done}/{total}" + (f" ({text})" if text else ""))

    with state.model_lock:
        job.report(0.0, "measuring the model before")
        try:
            result = Revise(served.model, strategy, **settings)(
                data["x"], data["y"], mask, artifact=artifact, evaluate=data.get("evaluate"), show=show,
                progress=progress, cancel=job.cancel_event)
        except RevisionCancelled:
            raise Cancelled() from None
    folder = result.save(_out(state) / f"revision-{job.id}", about={"model": served.spec, "data": data.get("about")})
    return {"accuracy": result.accuracy, "losses": result.losses, "settings": result.settings, "shown": result.shown,
            "before": [_map(h) for h in result.heatmaps_before], "after": [_map(h) for h in result.heatmaps_after],
            "folder": str(folder), "files": sorted(p.name for p in folder.iterdir()),
            "cav_accuracy": None if result.cav is None else result.cav.accuracy}


def mount(app: FastAPI, state: AppState) -> None:
    @app.get("/revise", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return render(state, "revise", TITLE, BODY, scripts=("revise.js",))

    @app.get("/api/revise/info")
    def info() -> dict[str, Any]:
        data = _data(state)
        served = state.need_model()
        layers = [name for name, _ in served.model.named_modules() if name]
        return {"num_samples": int(data["x"].shape[0]), "sample_shape": list(data["x"].shape[1:]),
                "classes": sorted(set(data["y"].tolist())), "strategies": list(STRATEGIES), "defaults": DEFAULTS,
                "layers": layers, "evaluate": sorted(data.get("evaluate") or {}), "about": data.get("about")}

    @app.get("/api/revise/samples")
    def samples(offset: int = 0, limit: int = 48) -> dict[str, Any]:
        data = _data(state)
        if offset < 0 or not 0 < limit <= 200:
            raise Refused(400, "offset must be >= 0 and limit between 1 and 200")
        x, y = data["x"][offset:offset + limit], data["y"][offset:offset + limit]
        return {"items": [{"index": offset + i, "label": int(label), **_map(image)}
                          for i, (image, label) in enumerate(zip(x, y))]}

    @app.get("/api/revise/sample/{index}")
    async def sample(index: int, method: str = "input_x_gradient") -> dict[str, Any]:
        data = _data(state)
        served = state.need_model()
        if not 0 <= index < data["x"].shape[0]:
            raise Refused(404, f"no training sample {index}; there are {data['x'].shape[0]}")

        def work() -> dict[str, Any]:
            x, y = data["x"][index:index + 1], data["y"][index:index + 1]
            with library_call("heatmap"), state.model_lock:
                reviser = Revise(served.model, method=method)
                heat = reviser.heatmaps(served.model, x, y)[0]
                with torch.no_grad():
                    prediction = int(served.model(x).argmax(1)[0])
            return {"index": index, "label": int(y[0]), "prediction": prediction, "method": method,
                    "input": _map(x[0]), "heatmap": _map(heat)}

        return await _threaded(work)

    @app.post("/api/revise/clusters")
    async def clusters(request: Request) -> dict[str, Any]:
        body = await _json(request)
        data = _data(state)
        served = state.need_model()

        def work() -> dict[str, Any]:
            with library_call("SpRAy"), state.model_lock:
                label = int(body.get("label", 0))
                members = torch.nonzero(data["y"] == label)[:, 0]
                if members.numel() < 3:
                    raise ValueError(f"class {label} has {members.numel()} training samples; SpRAy needs 3")
                members = members[:512]
                reviser = Revise(served.model, method=body.get("method") or DEFAULTS["method"])
                heat = reviser.heatmaps(served.model, data["x"][members], data["y"][members])
                n = body.get("n_clusters")
                found = spray(heat if heat.ndim == 4 else heat[:, None], n_clusters=None if n in (None, "") else int(n))
            groups = [members[found.labels == c].tolist() for c in range(found.n_clusters)]
            return {"label": label, "n_clusters": found.n_clusters,
                    "clusters": [{"cluster": c, "size": len(g), "members": g, "values": found.mean[c].ravel().tolist(),
                                  "h": int(found.mean.shape[1]), "w": int(found.mean.shape[2])}
                                 for c, g in enumerate(groups)]}

        return await _threaded(work)

    @app.post("/api/revise/start")
    async def start(request: Request) -> dict[str, Any]:
        body = await _json(request)
        data = _data(state)
        state.need_model()
        strategy, settings = _settings(body)
        with library_call("revision"):
            if strategy not in STRATEGIES:
                raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
            mask = artifact = None
            if strategy == "rrr":
                if body.get("mask") is None:
                    raise ValueError("paint a mask first: RRR needs the regions that are a wrong reason")
                mask = torch.as_tensor(np.asarray(body["mask"], dtype=np.float32))
                if not mask.any():
                    raise ValueError("the mask is empty: paint the regions that are a wrong reason")
            else:
                flagged = [int(i) for i in body.get("artifact") or []]
                if not flagged:
                    raise ValueError("flag a SpRAy cluster first: P-ClArC needs the samples with the artifact")
                artifact = torch.zeros(data["x"].shape[0], dtype=torch.bool)
                artifact[flagged] = True
            show = [int(i) for i in body.get("show") or [0]]
            # checked now (a bad setting or mask is a 400, not a failed job): settings, layer, mask shape
            from ...improve.revise import expand_masks

            Revise(state.config.model.model, strategy, **settings)
            if mask is not None:
                expand_masks(mask, data["x"][:1])
            if not all(0 <= i < data["x"].shape[0] for i in show):
                raise ValueError("show names a sample that is not in the training data")
        job = state.jobs.submit(revise_job, state, strategy, settings, mask, artifact, show, name="revise")
        return {"job": job.id}
