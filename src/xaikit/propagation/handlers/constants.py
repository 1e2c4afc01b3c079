"""Constants added to or concatenated with activations (position embeddings, additive masks, a CLS token):
linear in the activation; the constant's share of the relevance is reported as absorbed, like a bias."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..explained import watch
from .plain import classify_plain

if TYPE_CHECKING:
    from ..session import Session


def constant_sum(s: Session, func, name, args, kwargs, acts):
    """``x ± c`` with ``c`` independent of the input (a position embedding, an additive mask, a bias added
    by hand): linear in ``x``; the share ``c ⊙ g`` of the output relevance stays with the constant and is
    reported as absorbed, like a layer's bias, so the conservation report accounts for it. A term computed
    from another floating-point model input keeps its share in the residual."""
    out = classify_plain(s, func, name, args, kwargs, acts)
    if len(acts) != 1 or not isinstance(out, torch.Tensor) or not out.requires_grad or len(args) < 1:
        return out
    other = args[1] if len(args) > 1 else kwargs.get("other")
    alpha = args[2] if len(args) > 2 else kwargs.get("alpha", 1)
    first = args[0] is acts[0]
    constant = other if first else args[0]
    if isinstance(constant, bool) or not isinstance(constant, (torch.Tensor, int, float)) or \
            (isinstance(constant, torch.Tensor) and (constant.dtype == torch.bool or s.is_external(constant))):
        return out  # the relevance of another model input stays in the residual
    reflected = getattr(func, "__name__", "") in ("__rsub__", "rsub")
    if name == "add":
        coef = alpha if first else 1
    elif reflected:  # __rsub__(x, c) = c − x; torch.rsub(a, b, alpha) = b − alpha·a
        coef = 1 if first else -alpha
    else:  # sub(a, b, alpha) = a − alpha·b
        coef = -alpha if first else 1
    label = f"{name}:constant"
    if isinstance(constant, torch.Tensor):
        value = constant.detach() * coef
        if not bool(torch.isfinite(value).all()):  # masks with −inf: the gradient there is 0
            value = value.nan_to_num(0.0, 0.0, 0.0)
        book_share(s, out, value, label)
    elif constant != 0:  # (no gradient: a first-layer rule wrote its relevance at the input directly)
        book_share(s, out, constant * coef, label)
    return out


def book_share(s: Session, out: torch.Tensor, share: torch.Tensor | float, op: str) -> None:
    """Report the share ``share ⊙ g`` of ``out``'s relevance (``share``: the term of ``out`` that a constant
    contributes, broadcasting to ``out``'s shape) as absorbed by the operation ``op``, per sample, once the
    gradient ``g`` of ``out`` is known."""
    watch(s, out, lambda g: s.absorb((g * share).reshape(g.shape[0], -1).sum(1), op))


def constant_parts(s: Session, func, name, args, kwargs, acts):
    """``cat``/``stack`` of activations with constant pieces (e.g. ViT's CLS token): the relevance that lands
    on a constant piece is reported as absorbed."""
    out = classify_plain(s, func, name, args, kwargs, acts)
    pieces = args[0] if args else kwargs.get("tensors")
    if not isinstance(out, torch.Tensor) or not out.requires_grad or not isinstance(pieces, (list, tuple)):
        return out
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    constants = [(i, p.detach()) for i, p in enumerate(pieces) if isinstance(p, torch.Tensor) and p.numel()
                 and not s.is_activation(p) and p.is_floating_point() and not s.is_external(p)]
    if not constants:
        return out
    if name == "stack":
        def part(g, i):
            return g.select(dim, i)
    else:
        sizes = [p.shape[dim] if p.numel() else 0 for p in pieces]  # legacy empty pieces are skipped by cat
        starts = [sum(sizes[:i]) for i in range(len(sizes))]

        def part(g, i):
            return g.narrow(dim, starts[i], sizes[i])

    def hook(g: torch.Tensor) -> None:
        total = sum((part(g, i) * value).reshape(g.shape[0], -1).sum(1) for i, value in constants)
        s.absorb(total, f"{name}:constant")

    return watch(s, out, hook)
