"""Which sample each row of an activation belongs to, where dimension 0 is not the batch.

The engine books what biases and stabilisers absorb per sample (:meth:`.session.Session.absorb`). A layer
usually sees the batch at dimension 0, or the batch flattened with the positions in batch-major order
(``(N·L, D)``: GPT-2's ``Conv1D``, a mixture-of-experts layer's token rows). A mixture-of-experts layer then
*gathers* the rows routed to each expert (``hidden[token_index]``) or sorts them by expert: the rows of an
expert's linear layer are a subset of the tokens, in any order, and splitting its absorbed relevance by
position would give one sample's share to another. So the session follows, for the activations whose rows
are not the batch, the sample of each row (:data:`Session.rows <.session.Session.rows>`):

- a reshape that merges the batch with the dimensions after it gives each sample's rows in order;
- indexing dimension 0 with an integer or boolean tensor (``getitem``, ``index_select``) selects rows;
- operations that keep the rows (element-wise ones, layers, products with broadcasting) keep the map.

A layout it does not follow (a transpose that moves the batch away from dimension 0) is not tracked:
:meth:`~.session.Session.absorb` then reads rows in batch-major order, as before.
"""
from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, Any, Callable

import torch

from .classify import LAYER_OPS, POINTWISE, tensors_in

if TYPE_CHECKING:
    from .session import Session

#: reshapes that may merge the batch with the dimensions after it
RESHAPES = {"reshape", "view", "flatten", "view_as"}
#: operations whose outputs keep their input's rows (dimension 0 unchanged)
KEEP = POINTWISE | LAYER_OPS | {"matmul", "_grouped_mm", "chunk", "split", "unsqueeze", "squeeze", "contiguous",
                                "masked_fill", "softmax", "layer_norm", "rms_norm", "dropout", "square"}


def follow(s: Session, func: Callable, name: str, args: tuple, kwargs: dict, acts: list, out: Any,
           mark: int) -> None:
    """After each operation: derive the row map of its outputs (see the module docstring)."""
    if s.input is None or not acts:
        return
    source = args[0] if args and any(args[0] is t for t in acts) else acts[0]
    known = s.rows.get(id(source))
    if known is None and (name not in RESHAPES and name not in ("getitem", "index_select")):
        return  # (the common case: batch-major rows, nothing to follow)
    n = s.input.shape[0]
    if known is None and (source.ndim == 0 or source.shape[0] != n):
        return  # a layout not followed
    rows = known[1] if known is not None else torch.arange(n, device=source.device)
    for t in tensors_in(out):
        mapped = _rows(name, args, kwargs, source, rows, t)
        if mapped is not None and (known is not None or mapped.numel() != n):
            s.rows[id(t)] = (t, mapped)


def _rows(name: str, args: tuple, kwargs: dict, source: torch.Tensor, rows: torch.Tensor,
          out: torch.Tensor) -> torch.Tensor | None:
    if out.ndim == 0:
        return None
    if name in RESHAPES:
        if out.shape[0] == source.shape[0]:
            return rows
        merged = [prod(source.shape[:j]) for j in range(2, source.ndim + 1)]
        if out.shape[0] in merged:  # the batch merged with the dimensions after it, in order
            return rows.repeat_interleave(out.shape[0] // source.shape[0])
        return None
    if name in ("getitem", "index_select"):
        index = _row_index(name, args, kwargs)
        if index is None:
            return rows if out.shape[0] == source.shape[0] else None
        selected = rows[index.to(rows.device)]
        return selected if selected.numel() == out.shape[0] else None
    return rows if name in KEEP and out.shape[0] == source.shape[0] else None


def _row_index(name: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The integer or boolean tensor that selects rows of dimension 0 (``None``: rows not selected by one)."""
    if name == "index_select":
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        index = args[2] if len(args) > 2 else kwargs.get("index")
        return index if dim == 0 else None
    key = args[1] if len(args) > 1 else None
    first = key[0] if isinstance(key, tuple) and key else key
    if isinstance(first, torch.Tensor) and not first.is_floating_point():
        return first
    return None


def per_sample(amount: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """A per-row amount summed per sample by the row map ``rows``."""
    return torch.zeros(n, dtype=amount.dtype, device=amount.device).index_add_(
        0, rows.to(amount.device), amount.reshape(rows.numel(), -1).sum(1))
