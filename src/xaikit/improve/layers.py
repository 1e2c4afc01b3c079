"""Layer outputs by name, through forward hooks that exist for one call only (nothing left on the model)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..cav import activations
from ..layers import capture as _capture

__all__ = ["capture", "activations"]


@contextlib.contextmanager
def capture(model: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every output of the layer ``name`` is appended to the yielded list (graph kept):
    :func:`xaikit.layers.capture`."""
    with _capture(model, name) as outputs:
        yield outputs

