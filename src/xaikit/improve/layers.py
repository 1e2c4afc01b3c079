"""Layer outputs by name, through forward hooks that exist for one call only (nothing left on the model)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..layers import capture as _capture
from ..modes import eval_semantics


@contextlib.contextmanager
def capture(model: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every output of the layer ``name`` is appended to the yielded list (graph kept):
    :func:`xaikit.layers.capture`."""
    with _capture(model, name) as outputs:
        yield outputs


def activations(model: nn.Module, name: str, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The outputs of the layer ``name`` for ``x`` (in eval semantics, in chunks, without gradients)."""
    parts = []
    with torch.no_grad(), eval_semantics(model), capture(model, name) as outputs:
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
            parts.append(outputs.pop().detach())
    return torch.cat(parts)
