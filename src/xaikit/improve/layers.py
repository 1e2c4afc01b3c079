"""Layers chosen by name, and reversible forward hooks on them for one call (nothing left on the model)."""
from __future__ import annotations

import contextlib
import difflib
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import eval_semantics


def named_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model`` (as in ``model.named_modules()``), or a ``ValueError`` listing the
    closest valid names."""
    if not isinstance(name, str):
        raise TypeError(f"layer must be a module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = [n for n in modules if n]
        close = difflib.get_close_matches(name, names, n=5) or names[:10]
        raise ValueError(f"unknown layer {name!r}; valid names include: {', '.join(close)} "
                         "(see model.named_modules())")
    return modules[name]


def _tensor_output(out, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer {name!r} returns {type(out).__name__}; choose a layer whose output is one tensor")
    return out


@contextlib.contextmanager
def capture(model: nn.Module, name: str) -> Iterator[list[torch.Tensor]]:
    """Inside the block, every output of layer ``name`` is appended to the yielded list (graph kept)."""
    outputs: list[torch.Tensor] = []
    handle = named_module(model, name).register_forward_hook(
        lambda module, args, out: outputs.append(_tensor_output(out, name)))
    try:
        yield outputs
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_output(model: nn.Module, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, the output ``a`` of layer ``name`` is replaced by ``fn(a)``."""
    handle = named_module(model, name).register_forward_hook(
        lambda module, args, out: fn(_tensor_output(out, name)))
    try:
        yield
    finally:
        handle.remove()


def activations(model: nn.Module, name: str, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The outputs of layer ``name`` for ``x`` (in eval semantics, in chunks, without gradients)."""
    parts = []
    with torch.no_grad(), eval_semantics(model), capture(model, name) as outputs:
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
            parts.append(outputs.pop().detach())
    return torch.cat(parts)
