"""Operations without a handler (recorded as linear or unknown), the chain of index and affine operations
from the model input to a first layer, and what every handler uses to dispatch the parts of an operation."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..classify import AFFINE, INDEX_OPS, LINEAR, tensors_in

if TYPE_CHECKING:
    from ..session import Session


def classify_plain(s: Session, func: Callable, name: str, args: tuple, kwargs: dict, acts: list) -> Any:
    """Run an operation without a handler and record whether it is safe (linear) or unknown."""
    out = func(*args, **kwargs)
    if any(t.requires_grad for t in tensors_in(out)):
        s.coverage.add("linear" if name in LINEAR else "unknown", name)
        if len(acts) == 1 and id(acts[0]) in s.chain and isinstance(out, torch.Tensor):
            if name in INDEX_OPS:
                _extend_chain(s, func, args, kwargs, acts[0], out)
            elif name in AFFINE and out.shape == acts[0].shape and getattr(func, "__name__", "") != "__rtruediv__":
                _extend_chain(s, func, args, kwargs, acts[0], out, affine=True)
    return out


def _extend_chain(s: Session, func, args, kwargs, source: torch.Tensor, out: torch.Tensor,
                  affine: bool = False) -> None:
    """Remember how ``out`` is computed from the model input by index operations and element-wise affine maps
    (for first-layer rules); an affine map moves no element, so the positions pass it unchanged."""
    parent = s.chain[id(source)][1]

    def replay(base: torch.Tensor, positions: bool = False) -> torch.Tensor:
        value = parent(base, positions)
        if affine and positions:
            return value
        swap = lambda a: value if a is source else a  # noqa: E731
        return func(*[swap(a) for a in args], **{k: swap(v) for k, v in kwargs.items()})

    s.chain[id(out)] = (out, replay)


def call(s: Session, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run one part of a decomposed operation through the engine, as if the model had called it."""
    return s.dispatch(func, args, kwargs)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ a ⊙ b`` per row (first dimension) without a temporary of their size."""
    return torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ a ⊙ b`` of two tensors of the same shape, as a batched dot product (no temporary)."""
    n, k = a.shape[0], math.prod(a.shape[1:])  # (k, not -1: a layer may see no rows, e.g. an idle expert)
    return torch.bmm(a.reshape(n, 1, k), b.reshape(n, k, 1)).reshape(n)
