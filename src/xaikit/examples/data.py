"""Data sets of the examples room: the one adapter :class:`xaikit.data.Data` in order, and sample shapes.

A data set is any form :mod:`xaikit.data` accepts (a tensor, ``(x, y[, mask])``, an object with ``.x`` and ``.y``,
a Dataset, a DataLoader or iterable of batches, an image folder, a table). A DataLoader must not shuffle: the
examples' results (neighbours, proponents) refer to samples by their position in the data set. Samples are read
back by index where the form has random access (a tensor, a map-style Dataset, a DataLoader over one, a folder).
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import Batch, Data

__all__ = ["Batch", "DataSource", "check_sample_shape", "sample_shape"]


class DataSource(Data):
    """:class:`xaikit.data.Data` that refuses a shuffling DataLoader (results refer to samples by position)."""

    def __init__(self, data: Any, batch_size: int | str = 256, name: str = "data") -> None:
        super().__init__(data, batch_size, name, ordered=True)


def sample_shape(x: torch.Tensor, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape of a batch's samples while a data set is read: ``x``'s, which must equal ``shape`` (that of the
    batches before; ``None`` for the first batch)."""
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(f"the data's samples change shape: {shape} then {tuple(x.shape[1:])}")
    return tuple(x.shape[1:])


def check_sample_shape(x: torch.Tensor, shape: tuple[int, ...], built: str = "the index was built") -> None:
    """A query ``x`` must hold samples of the data set's sample ``shape``: a ``ValueError`` naming both and the
    shape to pass (``built`` says what was built on the data set)."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"x has samples of shape {tuple(x.shape[1:])} but {built} on samples of shape "
                         f"{tuple(shape)}; pass x as (N, {', '.join(map(str, shape))})")
