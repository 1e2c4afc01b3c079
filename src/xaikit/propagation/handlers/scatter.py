"""Sums by index: ``index_add``, ``scatter_add`` and ``scatter_reduce`` (message passing in graph networks, the
combine step of eager mixture-of-experts layers), and ``embedding_bag``.

``index_add(self, dim, index, source, alpha)``, ``scatter_add(self, dim, index, src)`` and ``scatter_reduce``
with ``"sum"``/``"mean"`` are linear in their floating-point operands jointly (the index is an integer tensor,
and a mean's counts depend on it only): ``f(a + c) = f(a, 0) + f(0, c)`` when the activation operands ``a``
and the constant ones ``c`` are split. Input × gradient is exact for a linear map without a constant term
(Ancona et al. 2018, "Towards better understanding of gradient-based attribution methods", Prop. 1); the
constant operands' term ``f(0, c)`` keeps its share ``f(0, c) ⊙ g`` of the output relevance, reported as
absorbed like a bias or an added constant (:func:`.constants.book_share`). ``"amax"``/``"amin"`` select one
value per output element, like max-pooling: exact where every constant operand is zero (a selected zero
carries no relevance), unknown otherwise; ``"prod"`` is not linear and stays unknown.

``embedding_bag`` (sum, mean or max of rows of ``weight``, optionally weighted by ``per_sample_weights``) is
linear in whichever of the two is an activation; when both are, it is a product (:func:`.products.product`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..classify import out_of_place, tensors_in
from .constants import book_share
from .plain import classify_plain
from .products import product

if TYPE_CHECKING:
    from ..session import Session

#: the operations of this module served by :func:`accumulate`
ACCUMULATE = ("index_add", "scatter_add", "scatter_reduce")
#: reductions of ``scatter_reduce`` that are linear in all its operands jointly
_LINEAR_REDUCTIONS = {"sum", "mean"}
#: reductions of ``scatter_reduce`` that select a value (exact when no non-zero constant can be selected)
_SELECTIONS = {"amax", "amin"}


def _reduction(name: str, args: tuple, kwargs: dict) -> str | None:
    """``scatter_reduce``'s ``reduce`` argument (``torch.scatter_reduce(input, dim, index, src, reduce)``; the
    method form has ``self`` at the same position), ``None`` for the other operations."""
    if name != "scatter_reduce":
        return None
    return kwargs.get("reduce", args[4] if len(args) > 4 else None)


def _is_constant(s: Session, t: Any, acts: list) -> bool:
    """A floating-point operand that is one of the model's constants: not an activation (``acts``, found
    before a constant updated in place with an activation became one), not another model input."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and not s.is_external(t) \
        and not any(t is a for a in acts)


def _nonzero_constants(s: Session, args: tuple, kwargs: dict, acts: list) -> bool:
    return any(bool(t.any()) for t in tensors_in((args, kwargs)) if _is_constant(s, t, acts))


def _label(s: Session, name: str, args: tuple, kwargs: dict, acts: list) -> str:
    """``name`` where the call is linear (or a selection that is exact), ``name:reduce`` (unknown) otherwise."""
    reduce = _reduction(name, args, kwargs)
    if reduce is None or reduce in _LINEAR_REDUCTIONS:
        return name
    if reduce in _SELECTIONS and not _nonzero_constants(s, args, kwargs, acts):
        return name
    return f"{name}:{reduce}"


def _constant_term(s: Session, func, name: str, args: tuple, kwargs: dict, acts: list) -> torch.Tensor | None:
    """``f(0, c)``: the call, out of place, with every activation operand (and every other model input) set to
    zero; ``None`` where no constant operand is non-zero."""
    if not _nonzero_constants(s, args, kwargs, acts):
        return None
    plain, args, kwargs = out_of_place(func, name, args, kwargs)

    def constant_only(a: Any) -> Any:
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            return a
        return a.detach() if _is_constant(s, a, acts) else torch.zeros_like(a)

    with torch.no_grad():
        return plain(*[constant_only(a) for a in args], **{k: constant_only(v) for k, v in kwargs.items()})


def accumulate(s: Session, func, name: str, args: tuple, kwargs: dict, acts: list) -> Any:
    """``index_add``, ``scatter_add``, ``scatter_reduce``: linear (see the module docstring); the constant
    operands' share of the output relevance is reported as absorbed under ``"<op>:constant"``."""
    label = _label(s, name, args, kwargs, acts)
    term = _constant_term(s, func, name, args, kwargs, acts) if label == name else None  # before an in-place call
    out = classify_plain(s, func, label, args, kwargs, acts)
    if term is not None and isinstance(out, torch.Tensor) and out.requires_grad:
        book_share(s, out, term, f"{name}:constant")
    return out


def embedding_bag(s: Session, func, name: str, args: tuple, kwargs: dict, acts: list) -> Any:
    """``F.embedding_bag``: linear in the activation among ``weight`` and ``per_sample_weights``; with both
    activations a product of the two (the composite's product rule). ``torch.embedding_bag`` called directly
    (it returns the output with three index tensors) with two activations is reported unknown."""
    if len(acts) > 1 and func is not F.embedding_bag:
        return classify_plain(s, func, f"{name}:product", args, kwargs, acts)
    return product(s, func, name, args, kwargs, acts)
