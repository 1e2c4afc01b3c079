"""The data folder's images as one tensor, for the views that search it (concepts' reference samples, the
nearest examples): read once per app, at most :data:`LIMIT` of them."""
from __future__ import annotations

from typing import Any

import torch

from ..data import read_image
from .inputs import catalogue
from .refusals import Refused
from .state import AppState

#: images of the data folder searched at most (the first ones, sorted by name)
LIMIT = 256


def folder_images(state: AppState) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """``(x (N, 3, S, S), items)``: the data folder's first :data:`LIMIT` images as the model reads them and their
    catalogue entries (``ref``, ``name``, ``url``), in the same order."""
    if "folder_images" in state.cache:
        return state.cache["folder_images"]
    served = state.need_model()
    items = [item for item in catalogue(state) if item["kind"] == "image"][:LIMIT]
    if not items:
        raise Refused(409, "this view searches the images of the data folder: start xaikit serve with --data "
                           "FOLDER of images")
    low = 0.0 if served.low is None else served.low
    high = 1.0 if served.high is None else served.high
    x = torch.stack([read_image(state.path(item["name"]), served.size, low, high) for item in items])
    parameter = next(served.model.parameters(), None)
    if parameter is not None:
        x = x.to(parameter.device, parameter.dtype)
    state.cache["folder_images"] = (x, items)
    return x, items
