"""Data sets of the examples room: the one adapter :class:`xaikit.data.Data` in order, and model fingerprints.

A data set is any form :mod:`xaikit.data` accepts (a tensor, ``(x, y[, mask])``, an object with ``.x`` and ``.y``,
a Dataset, a DataLoader or iterable of batches, an image folder, a table). A DataLoader must not shuffle: the
examples' results (neighbours, proponents) refer to samples by their position in the data set. Samples are read
back by index where the form has random access (a tensor, a map-style Dataset, a DataLoader over one, a folder).
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..data import Batch, Data

__all__ = ["Batch", "DataSource", "model_fingerprint"]


class DataSource(Data):
    """:class:`xaikit.data.Data` that refuses a shuffling DataLoader (results refer to samples by position)."""

    def __init__(self, data: Any, batch_size: int | str = 256, name: str = "data") -> None:
        super().__init__(data, batch_size, name, ordered=True)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
