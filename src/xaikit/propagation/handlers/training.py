"""Training mode of the engine: an explanation that is itself differentiable, for losses on explanations.

Inside :func:`~xaikit.propagation.state.differentiable_pass` (``method(x, create_graph=True)``) a
:class:`~xaikit.propagation.session.Session` uses the handlers of :data:`..table.TRAINING_HANDLERS`: those of the
explaining sessions, whose rules become two-faced operations (:mod:`..explained`) when the session is
differentiable, with the layers of this module. The explained backward pass then runs with
``create_graph=True`` and every quantity a rule uses stays on the autograd graph, so a loss on the explanation
has exact gradients with respect to the parameters and the input ("double backward").

How it stays exact. Every rule is one :class:`~..explained.Explained` operation (or a two-faced
:func:`~..explained.stop` / :func:`~..explained.scale` of a tensor) whose backward has two faces: while the
session explains, the rule's modified gradient computed with differentiable operations from the saved
forward values; afterwards (the training loss's ``backward()``) the operation's true vector–Jacobian product.
So the second backward pass differentiates the rules' computations and reaches earlier operations through
their true Jacobians, never through another rule.

A layer call's rule is the generic rule ``g_x = Σ_terms mask ⊙ coef · ρ(W)ᵀ [R / (n + ε·sign n)]``
(Montavon et al. 2019), :func:`~..kernels.rule_relevance`, from the saved input, weight and bias: every rule,
first-layer direct rules included (flat, w², z^B write their relevance through the session as usual; their box
bounds are constants). It costs one extra forward of every rule layer and is meant for small models inside
a training step. BatchNorm is not folded: in training mode it uses batch statistics; in eval mode it is an
affine map through which relevance passes by LRP-0.

Supported: every rule the explaining sessions apply — layers, the identity rule (GELU, SiLU, tanh, ...,
parameter-free element-wise modules), products under the uniform and "signal takes all" rules, the softmax
(Taylor or detached), LayerNorm/GroupNorm/RMSNorm and normalisation statistics written out (σ held constant),
attention (``F.scaled_dot_product_attention`` on the reference kernel, ``nn.MultiheadAttention``), recurrent
cells, sums by index, selections, data-dependent weights. Refused with a ``ValueError`` naming the
operation: Guided Backprop's and DeconvNet's ReLU rules (tensor hooks that clamp the gradient, not a
differentiable function of the forward values) and ``torch._grouped_mm``
(the grouped experts of a mixture-of-experts layer; their eager form is supported).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..classify import LAYER_OPS
from ..explained import explained
from ..kernels import rule_relevance
from ..layers import LayerCall
from ..state import LayerState
from .layers import _unpack_layer, layer_rule
from .plain import classify_plain
from .products import product

if TYPE_CHECKING:
    from ..session import Session


def _layer_rule(s: Session, state: LayerState):
    """The explaining face of a layer call (:class:`~..explained.Explained`): the rule's differentiable
    relevance (:func:`~..kernels.rule_relevance`) as the gradient at the input, or written at the model input
    for first-layer direct rules; what the input does not receive is absorbed."""

    def modified(inputs, grad):
        x, weight, bias = inputs
        rule = state.rule
        z = state.layer.native(x, weight, bias)
        relevance = z * grad
        constants = s.bounds(rule, state.replay) if rule.direct else None
        result = rule_relevance(rule, state.layer, x, weight, bias, relevance, z, constants)
        total = relevance.detach().flatten(1).sum(1)
        if rule.direct:
            s.absorb(total - result.detach().flatten(1).sum(1), f"{state.kind}:{rule.name}")
            s.write_direct(result, state.replay)
            return None, None, None
        s.absorb(total - (x.detach() * result.detach()).flatten(1).sum(1), f"{state.kind}:{rule.name}")
        return result, None, None

    return modified


def layer(s: Session, func, name, args, kwargs, acts):
    """Linear and convolution layers in training mode: one :class:`~..explained.Explained` operation whose
    explaining face is the rule's differentiable form; input-dependent weights are a product."""
    x, weight, bias, rest_args, rest_kwargs = _unpack_layer(args, kwargs)
    if not s.is_activation(x) or s.is_activation(weight):
        return product(s, func, name, args, kwargs, acts)
    _, rule = layer_rule(s, name, x, weight)
    call = LayerCall(func, name, rest_args, rest_kwargs, tuple(weight.shape[2:]))
    state = LayerState(rule, name, call)
    if rule.direct:
        state.replay = s.chain[id(x)][1]
    return explained(s, call.native, _layer_rule(s, state), x, weight, bias)


def _unsupported(s: Session, func, name, args, kwargs, acts):
    raise ValueError(
        f"LRP in training mode (create_graph=True) does not support the operation {name!r} under this "
        "composite's rules (Guided Backprop's and DeconvNet's ReLU rules clamp the gradient by tensor hooks, "
        "which a differentiable explanation cannot have); explain without create_graph=True, or use a "
        "composite whose relu rule is 'gradient' (xaikit.propagation.with_rules)"
    )


def _grouped_experts(s: Session, func, name, args, kwargs, acts):
    raise ValueError(
        "LRP in training mode (create_graph=True) does not support torch._grouped_mm (the grouped experts of a "
        "mixture-of-experts layer): its rule has no differentiable form yet; explain without create_graph=True, "
        "or build the model with eager experts (transformers: experts_implementation='eager'), whose linear "
        "layers are supported"
    )


def _relu_rule(handler: Callable) -> Callable:
    """``handler`` where the composite's ReLU rule is ``"gradient"``; refused otherwise (Guided Backprop,
    DeconvNet), also for ReLU6 and hardtanh, which those rules treat as ReLUs."""

    def checked(s: Session, func, name, args, kwargs, acts):
        if s.composite.op_rule("relu") != "gradient":
            return _unsupported(s, func, f"{name}:{s.composite.op_rule('relu')}", args, kwargs, acts)
        return handler(s, func, name, args, kwargs, acts)

    return checked


def handlers(explaining: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The handler table of a session in training mode, for the table ``explaining`` of the explaining
    sessions: the same handlers (their rules are two-faced in a differentiable session), with the layers of
    this module (BatchNorm then finds no layer to fold into), and Guided Backprop's and DeconvNet's ReLU
    rules and the grouped experts' matmul refused."""
    table: dict[str, Callable] = dict(explaining)
    table.update({name: layer for name in LAYER_OPS})
    for name in ("relu", "hardtanh", "relu6"):
        table[name] = _relu_rule(explaining.get(name, classify_plain))
    table["_grouped_mm"] = _grouped_experts
    return table
