"""Two-faced operations: what every rule becomes in training mode (``create_graph=True``).

A rule changes the backward pass of an operation. In training mode the explanation is itself differentiated
(a loss on the explanation, "double backward"), so the rule must be

- while the session explains (:attr:`Session.explaining <xaikit.propagation.session.Session.explaining>`):
  its modified backward, computed with differentiable operations from the forward values, so that the
  explanation has exact gradients with respect to the parameters and the input;
- afterwards (the training loss's ``backward()``, which differentiates the explained backward pass and reaches
  the forward values through it): the operation's true vector–Jacobian product.

:class:`Explained` is that operation, for any function and any modified backward. A detached operand (the gate
of "signal takes all", CP-LRP's softmax, a normalisation statistic held constant) cannot be a plain
``.detach()`` in training mode: the training loss's backward would miss the true Jacobian there, and the
explanation's dependence on the detached value (it multiplies the gradient of the other operand) would be
lost. :func:`stop` and :func:`scale` are the two-faced detach and gradient scaling; :func:`watch` observes the
explained gradient (the relevance bookkeeping) and leaves both faces unchanged.

Outside training mode :func:`stop`, :func:`scale` and :func:`watch` are the fast forms the explaining
sessions use: ``detach()`` and tensor hooks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:
    from .session import Session

#: ``modified(inputs, grad) -> gradients``: the explained backward of an :class:`Explained` operation, one
#: gradient (or ``None``) per input, written with differentiable operations of ``inputs`` and ``grad``
Modified = Callable[[tuple, torch.Tensor], Sequence[Any]]


class Explained(torch.autograd.Function):
    """``y = fn(*inputs)`` with two backward faces (see the module docstring): ``modified(inputs, g)`` while
    the session explains, the true vector–Jacobian product of ``fn`` afterwards. Both are differentiable
    (the true one recomputes ``fn`` from the saved inputs and differentiates it with ``create_graph`` when
    the caller's backward pass builds a graph)."""

    @staticmethod
    def forward(ctx, fn: Callable | None, modified: Modified, session: "Session", *inputs):
        ctx.fn, ctx.modified, ctx.session = fn, modified, session
        if fn is None:  # a copy of the one input whose rule only scales its gradient: nothing to keep
            return inputs[0].clone()
        ctx.save_for_backward(*inputs)
        return fn(*inputs)

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        if ctx.session.explaining:
            grads = ctx.modified(inputs, grad)
        elif ctx.fn is None:
            grads = (grad,)
        else:
            grads = vjp(ctx.fn, inputs, grad, ctx.needs_input_grad[3:])[1]
        return (None, None, None, *grads)


def explained(s: "Session", fn: Callable, modified: Modified, *inputs: Any) -> torch.Tensor:
    """``fn(*inputs)`` as an :class:`Explained` operation of the session ``s`` (``fn=None``: a copy of the one
    input, for rules that scale its gradient; they keep no value for the backward pass)."""
    return Explained.apply(fn, modified, s, *inputs)


def vjp(fn: Callable, inputs: Sequence[Any], grad: torch.Tensor,
        needs: Sequence[bool]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """``fn(*inputs)`` recomputed and its vector–Jacobian product with ``grad`` for the inputs where
    ``needs`` (``None`` elsewhere), kept on the graph when the caller's backward pass builds one (otherwise
    computed from detached copies: the pass that calls it may have freed the graph behind the inputs)."""
    graph = torch.is_grad_enabled()
    if not graph:
        inputs = [t.detach().requires_grad_(need) if isinstance(t, torch.Tensor) else t
                  for t, need in zip(inputs, needs)]
    wanted = [t for t, need in zip(inputs, needs) if need]
    with torch.enable_grad():
        out = fn(*inputs)
    if not wanted:
        return out, [None] * len(inputs)
    grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=graph, allow_unused=True))
    return out, [next(grads) if need else None for need in needs]


def _no_gradient(inputs: tuple, grad: torch.Tensor) -> tuple[None]:
    return (None,)


def stop(s: "Session", t: torch.Tensor) -> torch.Tensor:
    """``t`` with no gradient in the explained backward pass (a detached operand), and from then on a constant
    for the session (not an activation: the handlers after it see what they see after a ``detach()``).

    In training mode the true Jacobian passes afterwards, so the training loss's backward and the
    explanation's dependence on ``t``'s value are exact."""
    if not s.differentiable:
        return t.detach()
    out = explained(s, None, _no_gradient, t)
    s.constants[id(out)] = out
    return out


def scale(s: "Session", t: torch.Tensor, factor: float) -> torch.Tensor:
    """``t``, whose gradient the explained backward pass multiplies by ``factor`` (the uniform product rule:
    ``1/n`` at the output of a product of ``n`` activations). Outside training mode a tensor hook on ``t``
    itself; in training mode a copy of ``t`` (an :class:`Explained` operation)."""
    if not s.differentiable:
        t.register_hook(lambda g: g * factor)
        return t
    return explained(s, None, lambda inputs, g: (g * factor,), t)


def watch(s: "Session", t: torch.Tensor, observe: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """Call ``observe(g)`` with the (detached) gradient that reaches ``t`` in the explained backward pass — the
    relevance bookkeeping of a rule — changing nothing; never in the training loss's backward."""
    def hook(g: torch.Tensor | None) -> None:
        if g is not None and s.explaining:
            observe(g.detach())

    t.register_hook(hook)
    return t
