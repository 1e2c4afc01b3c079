"""The base HTML page: a nav bar linking the mounted views, the view's body, the shared style and script."""
from __future__ import annotations

import html
from typing import Sequence

from .state import AppState


def render(state: AppState, active: str, title: str, body: str, scripts: Sequence[str] = ()) -> str:
    """The page of view ``active``: ``body`` (HTML) under the nav bar; ``scripts`` are file names under
    ``/static/`` loaded after the shared ``xaikit.js``."""
    links = "".join(
        f'<a href="/{name}" class="{"active" if name == active else ""}" data-view="{name}">{html.escape(label)}</a>'
        for name, label in state.views)
    model = state.config.model
    about = html.escape(f"model {model.spec}" if model is not None else "no model")
    tags = "".join(f'<script src="/static/{html.escape(s)}"></script>' for s in scripts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xaikit · {html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body data-view="{html.escape(active)}">
<nav class="top"><span class="brand">xaikit</span>{links}<span class="about">{about}</span></nav>
<div id="message" role="alert" hidden></div>
<main>{body}</main>
<script src="/static/xaikit.js"></script>{tags}
</body></html>"""
