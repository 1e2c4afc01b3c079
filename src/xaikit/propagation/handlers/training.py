"""Training mode of the engine: an explanation that is itself differentiable, for losses on explanations.

Inside :func:`~xaikit.propagation.state.differentiable_pass` (``method(x, create_graph=True)``) a
:class:`~xaikit.propagation.session.Session` uses the handlers of this module (:data:`..table.TRAINING_HANDLERS`). The
explained backward pass then runs with ``create_graph=True`` and every quantity a rule uses (the layer input,
weights, bias, the output ``z`` and the modified weights ``ρ(W)``) stays on the autograd graph, so a loss on
the explanation has exact gradients with respect to the parameters and the input ("double backward").

How it stays exact. A layer call becomes one :class:`_LayerRule` node whose backward has two faces:

- while the session explains (before :meth:`Session.release`), it is the rule's modified gradient
  ``g_x = Σ_terms mask ⊙ coef · ρ(W)ᵀ [R / (n + ε·sign n)]`` (Montavon et al. 2019, generic rule), computed
  with differentiable operations from the saved inputs;
- afterwards (the training loss's ``backward()``) it is the layer's true vector–Jacobian product for the input,
  weight and bias.

So the second backward pass differentiates the rule's computation and reaches earlier layers through their
true Jacobians, never through another rule. Nothing is registered on tensors (a tensor hook would also fire
in the second pass). This is the generic, unoptimised form of the rules of :mod:`.rules`: it costs one extra
forward of every rule layer and is meant for small models inside a training step.

Supported: linear and convolution layers with every rule (first-layer direct rules flat, w², z^B write their
relevance through the session as usual; their box bounds are constants), ReLU, pooling, reshapes, additions,
sums by index (``index_add``, ``scatter_add``, ``scatter_reduce``), concatenation, BatchNorm (in training mode with batch statistics, in eval mode as an affine map through
which relevance passes by LRP-0: it is *not* folded into the preceding layer), and any operation whose
composite rule is plain ``"gradient"``. Operations whose rule modifies the backward pass in another way
(the identity rule on GELU/SiLU/..., product and gate rules, LayerNorm's frozen σ, Guided Backprop, recurrent
cells, attention) raise a ``ValueError`` naming the operation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from ..classify import LAYER_OPS, NONLINEAR, PRODUCTS
from ..kernels import rule_relevance
from ..layers import LayerCall
from ..state import LayerState
from .elementwise import div
from .layers import _unpack_layer, layer_rule
from . import scatter
from .plain import classify_plain
from .scan import SELECTIONS

if TYPE_CHECKING:
    from ..session import Session


class _LayerRule(torch.autograd.Function):
    """A rule layer in training mode (see the module docstring): the rule's differentiable modified gradient
    while the session explains, the layer's true gradient afterwards."""

    @staticmethod
    def forward(ctx, x, weight, bias, state: LayerState, session: Session):
        ctx.state, ctx.session = state, session
        ctx.save_for_backward(x, weight, bias)
        return state.layer.native(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias = ctx.saved_tensors
        state, session = ctx.state, ctx.session
        if not session.explaining:  # the training loss's backward: the true vector-Jacobian product
            wanted = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3]) if need]
            with torch.enable_grad():
                out = state.layer.native(x, weight, bias)
                grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=torch.is_grad_enabled(),
                                                 allow_unused=True))
            full = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
            return (*full, None, None)
        rule = state.rule
        z = state.layer.native(x, weight, bias)
        relevance = z * grad
        constants = session.bounds(rule, state.replay) if rule.direct else None
        result = rule_relevance(rule, state.layer, x, weight, bias, relevance, z, constants)
        total = relevance.detach().flatten(1).sum(1)
        if rule.direct:
            session.absorb(total - result.detach().flatten(1).sum(1), f"{state.kind}:{rule.name}")
            session.write_direct(result, state.replay)
            return None, None, None, None, None
        session.absorb(total - (x.detach() * result.detach()).flatten(1).sum(1), f"{state.kind}:{rule.name}")
        return result, None, None, None, None


def layer(s: Session, func, name, args, kwargs, acts):
    """Linear and convolution layers in training mode: one :class:`_LayerRule` node."""
    x, weight, bias, rest_args, rest_kwargs = _unpack_layer(args, kwargs)
    if not s.is_activation(x) or s.is_activation(weight):
        return _unsupported(s, func, f"{name} with input-dependent weights", args, kwargs, acts)
    _, rule = layer_rule(s, name, x, weight)
    call = LayerCall(func, name, rest_args, rest_kwargs, tuple(weight.shape[2:]))
    state = LayerState(rule, name, call)
    if rule.direct:
        state.replay = s.chain[id(x)][1]
    return _LayerRule.apply(x, weight, bias, state, s)


def _plain(s: Session, func, name, args, kwargs, acts):
    return classify_plain(s, func, name, args, kwargs, acts)


def _unsupported(s: Session, func, name, args, kwargs, acts):
    raise ValueError(
        f"LRP in training mode (create_graph=True) does not support the operation {name!r} under this "
        "composite's rules (supported: linear/convolution layers with any rule, ReLU, pooling, additions, "
        "reshapes, BatchNorm, and operations whose rule is 'gradient'); explain without create_graph=True, or "
        "use a composite that sets that operation's rule to 'gradient' (xaikit.propagation.with_rules)"
    )


def _by_rule(kind: str, plain: str | tuple[str, ...]) -> Callable:
    """A handler that runs the operation plainly when the composite's rule for ``kind`` is ``plain``."""
    allowed = (plain,) if isinstance(plain, str) else plain

    def handler(s: Session, func, name, args, kwargs, acts):
        if s.composite.op_rule(kind) in allowed:
            return _plain(s, func, name, args, kwargs, acts)
        return _unsupported(s, func, f"{name}:{s.composite.op_rule(kind)}", args, kwargs, acts)

    return handler


def _product(s: Session, func, name, args, kwargs, acts):
    if len(acts) < 2:
        return _plain(s, func, name, args, kwargs, acts)
    return _by_rule("product", "gradient")(s, func, name, args, kwargs, acts)


def _softmax(s: Session, func, name, args, kwargs, acts):
    if s.composite.op_rule("softmax") == "detach":
        return _plain(s, func, name, args, kwargs, acts).detach()
    return _plain(s, func, name, args, kwargs, acts)


def handlers(explaining: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The handler table of a session in training mode, for the table ``explaining`` of the explaining
    sessions: every operation handled there is either supported here or refused (never passed on with a rule
    the double backward would not see)."""
    table: dict[str, Callable] = {name: _unsupported for name in explaining}
    table.update({name: layer for name in LAYER_OPS})
    table.update({name: _by_rule("nonlinear", "gradient") for name in NONLINEAR})
    table.update({name: _product for name in PRODUCTS})
    table.update({name: _by_rule("norm", "gradient") for name in ("layer_norm", "group_norm", "rms_norm")})
    table["div"] = div
    table.update({name: _plain for name in ("batch_norm", "add", "sub", "rsub", "cat", "concat",
                                               "concatenate", "stack")})
    table.update({name: scatter.unbooked for name in scatter.ACCUMULATE})
    table["embedding_bag"] = _product
    table["square"] = _by_rule("product", "gradient")
    table.update({name: _plain for name in SELECTIONS})
    table["relu"] = _by_rule("relu", "gradient")
    table["softmax"] = _softmax
    return table
