"""``xaikit serve``: a local web application to explain a model interactively and explore runs (docs/serve.md).

Needs the ``serve`` extra (``pip install "xaikit[serve]"``: FastAPI, uvicorn, python-multipart).
"""
from .config import ServeConfig, ServedModel

__all__ = ["ServeConfig", "ServedModel", "create_app", "serve", "start"]


def __getattr__(name: str):
    """The app and the server import FastAPI only when asked for."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("serve", "start"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'xaikit.serve' has no attribute {name!r}")
