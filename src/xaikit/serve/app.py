"""``create_app(config)``: the FastAPI application of ``xaikit serve``.

Each view is a module ``xaikit/serve/views/<name>.py`` with ``TITLE`` (its nav bar label), optionally
``NEEDS_MODEL = True`` (left out of the nav bar of an app without a model), and ``mount(app, state)``, which adds
its page ``/<name>`` and its routes ``/api/<name>/...``. The app mounts the
views of :data:`VIEWS` that are present, the static files, the jobs' routes and ``/files/<path>`` (a file of the
served folders, :func:`xaikit.serve.paths.safe_path`).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .config import ServeConfig
from .limits import BodyLimit
from .paths import PathRefused
from .refusals import Refused, message_of, status_of
from .state import AppState

#: the views, in nav bar order; those whose module exists are mounted
VIEWS = ("explain", "concepts", "examples", "runs", "revise")
STATIC = Path(__file__).resolve().parent / "static"


def create_app(config: ServeConfig) -> FastAPI:
    """The app serving ``config``; its state (:class:`~xaikit.serve.state.AppState`) is ``app.state.xaikit``."""
    app = FastAPI(title="xaikit", docs_url=None, redoc_url=None, openapi_url=None)
    state = AppState(config)
    app.state.xaikit = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _handlers(app, state)
    for name in VIEWS:
        if importlib.util.find_spec(f"{__package__}.views.{name}") is None:
            continue
        module = importlib.import_module(f"{__package__}.views.{name}")
        if config.model is not None or not getattr(module, "NEEDS_MODEL", False):
            state.views.append((name, getattr(module, "TITLE", name.title())))  # in the nav bar
        module.mount(app, state)
    _routes(app, state)
    app.router.on_shutdown.append(state.jobs.shutdown)
    return app


def _error(err: BaseException) -> JSONResponse:
    return JSONResponse({"error": message_of(err)}, status_code=status_of(err))


def _handlers(app: FastAPI, state: AppState) -> None:
    for kind in (Refused, PathRefused, FileNotFoundError):
        app.add_exception_handler(kind, lambda request, err: _error(err))
    # HTTP errors of the framework (an unknown route, a body cut off at the limit) in the same form
    app.add_exception_handler(HTTPException, lambda request, err: JSONResponse(
        {"error": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None)))
    # anything else: a JSON answer the page can show (uvicorn still logs the traceback)
    app.add_exception_handler(Exception, lambda request, err: JSONResponse(
        {"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500))

    app.add_middleware(BodyLimit, limit=lambda: state.config.upload_limit)


def _routes(app: FastAPI, state: AppState) -> None:
    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        first = state.views[0][0] if state.views else None
        return RedirectResponse(f"/{first}" if first else "/api/info")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        model = state.config.model
        return {"model": None if model is None else {"spec": model.spec, "kind": model.kind},
                "data": state.config.data is not None, "run": state.config.run is not None,
                "views": [name for name, _ in state.views], "upload_limit": state.config.upload_limit}

    @app.get("/files/{relative:path}")
    def files(relative: str) -> FileResponse:
        path = state.path(relative)
        if not path.is_file():
            raise Refused(404, f"{relative!r} is a folder, not a file")
        return FileResponse(path)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        try:
            return state.jobs.get(job_id).to_json()
        except KeyError as err:
            raise Refused(404, err.args[0]) from None

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        try:
            return state.jobs.cancel(job_id).to_json()
        except KeyError as err:
            raise Refused(404, err.args[0]) from None
