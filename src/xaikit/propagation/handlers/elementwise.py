"""Element-wise operations: ReLU (exact under LRP; Guided Backprop, DeconvNet), the identity rule on the
non-linearities that are not homogeneous (GELU, SiLU, tanh, sigmoid, ...), also when a parameter-free module
computes one from several operations, and division."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...layers import Hooks
from ..classify import GATES, LINEAR, POINTWISE, is_inplace, out_of_place, rectifies
from ..explained import explained
from ..state import LayerState
from .plain import classify_plain

if TYPE_CHECKING:
    from ..session import Session


class _IdentityRule(torch.autograd.Function):
    """``y = f(x)``; backward passes ``g · (f(x) − f(0))/x`` (:func:`identity_gradient`), from the values held
    by the session (the explaining form of :func:`identity_rule`)."""

    @staticmethod
    def forward(ctx, x, fn, session: Session, label: str, zero: float):
        out = fn(x)
        ctx.x, ctx.out, ctx.session, ctx.label, ctx.zero = session.hold(x), session.hold(out), session, label, zero
        return out

    @staticmethod
    def backward(ctx, grad):
        gradient = identity_gradient(ctx.session, grad, ctx.x.get(), ctx.out.get(), ctx.zero, ctx.label)
        return gradient, None, None, None, None


def identity_gradient(s: Session, grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, zero: float,
                      label: str) -> torch.Tensor:
    """The identity rule's gradient for ``y = f(x)``: ``g · (f(x) − f(0))/x`` (0 where x = 0), so that
    ``R_x = R_y`` for ``f(0) = 0`` (GELU, SiLU, tanh) and, where ``f(0) ≠ 0`` (sigmoid, softplus, exp), the
    constant ``f(0)`` keeps its share ``f(0) · g`` like a bias does (reported as absorbed under ``label``;
    AttnLRP, Achtibat et al. 2024, sec. 3.3). Dividing ``f(x)`` itself by ``x`` would diverge as ``x → 0``;
    ``(f(x) − f(0))/x`` stays within the range of ``f'``. Nothing passes to an infinite input (a score masked
    with ``−inf`` before ``exp`` or ``sigmoid``): its whole share ``f(x) · g`` is absorbed. Differentiable
    when the backward pass builds a graph (training mode)."""
    if zero:
        kept = grad.detach() * torch.where(torch.isfinite(x), zero, y.detach())
        s.absorb(kept.reshape(grad.shape[0], -1).sum(1), label)
        y = y - zero
    return _identity_ratio(grad, y, x)


def _identity_ratio(grad: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``g · y/x`` (0 where x = 0): the gradient that passes ``R_x = R_y`` for ``y = f(x)``; in place when no
    graph is built, as differentiable operations (no NaN on any path) when one is."""
    if not torch.is_grad_enabled():
        return (grad * y).div_(x).nan_to_num_(0.0, 0.0, 0.0)
    zero = x == 0
    return torch.where(zero, 0.0, grad * y / torch.where(zero, 1.0, x))


def identity_rule(s: Session, x: torch.Tensor, fn, label: str, zero: float | None = None,
                  value: torch.Tensor | None = None) -> torch.Tensor:
    """``fn(x)`` under the identity rule (:func:`identity_gradient`), its absorbed share booked under ``label``.
    ``zero``: ``f(0)`` (``None``: ``fn`` of a
    zero); ``value``: ``fn(x)`` when the caller computed it already (explaining sessions). In training mode an
    :class:`~..explained.Explained` operation: the rule's gradient from ``fn(x)`` recomputed on the graph, the
    true gradient of ``fn`` afterwards."""
    if zero is None:
        with torch.no_grad():
            zero = float(fn(x.new_zeros((1,) * x.ndim)).reshape(-1)[0])
    if s.differentiable:
        return explained(s, fn, lambda inputs, g: (identity_gradient(s, g, inputs[0], fn(inputs[0]), zero, label),),
                         x)
    return _IdentityRule.apply(x, fn if value is None else (lambda _: value), s, label, zero)


class _Rectifier(torch.autograd.Function):
    """A ReLU or ReLU6 on the output of a rule's layer (or of its folded BatchNorm), passing relevance
    unchanged: ``R_x = R_y`` (exact for ReLU, the identity rule for ReLU6).

    When it turns out to be that output's only consumer (known once the forward pass has ended), the layer's
    rule reads ``R = y ⊙ g_y`` at the rectifier's output and the backward here passes ``g_y`` on as it is: no
    element-wise pass of its own. Otherwise the backward is the ReLU's gradient or ReLU6's identity rule.
    """

    @staticmethod
    def forward(ctx, x, fn, state: LayerState, key: str, session: Session, identity: bool, inplace: bool):
        out = fn(x)
        if inplace:
            ctx.mark_dirty(x)
        ctx.state, ctx.identity = state, identity
        ctx.y, ctx.x = session.hold(out), session.hold(x) if identity else None
        state.extra.setdefault("rectifier_outputs", {}).setdefault(key, []).append(ctx.y)
        return out

    @staticmethod
    def backward(ctx, grad):
        none = (None,) * 6
        if ctx.state.fused_rectifier() is ctx.y:
            return (grad, *none)
        y = ctx.y.get()
        if ctx.identity:
            return (_identity_ratio(grad, y, ctx.x.get()), *none)
        return (torch.ops.aten.threshold_backward(grad, y, 0), *none)


def _rectify(s: Session, func, name: str, args: tuple, kwargs: dict, identity: bool) -> torch.Tensor | None:
    """A rectifier on a rule's layer output as a :class:`_Rectifier` (None for any other input)."""
    x = args[0] if args else kwargs.get("input")
    state, key = s.fold_outputs.get(id(x)), "fold"
    if state is None:
        state, key = s.layers.get(id(x)), "layer"
    if state is None or state.layer is None or key in state.overwritten or not rectifies(name, args, kwargs):
        return None  # (an output changed in place, e.g. by a residual `+=`, is no longer the layer's)
    inplace = not identity and is_inplace(func, args, kwargs)
    if not inplace:
        func, args, kwargs = out_of_place(func, name, args, kwargs)
    return _Rectifier.apply(x, lambda t: func(t, *args[1:], **kwargs), state, key, s, identity, inplace)


def nonlinear(s: Session, func, name, args, kwargs, acts):
    """Element-wise non-linearities that are not homogeneous: identity rule (or plain gradient)."""
    if name in ("hardtanh", "relu6") and s.composite.op_rule("relu") != "gradient":
        return relu(s, func, name, args, kwargs, acts)  # ReLU6 is a ReLU for Guided Backprop / DeconvNet
    rule = s.composite.op_rule("nonlinear")
    out = _rectify(s, func, name, args, kwargs, identity=True) if rule == "identity" else None
    if out is not None:
        s.coverage.add("handled", f"{name}:{rule}")
        return out
    func, args, kwargs = out_of_place(func, name, args, kwargs)
    x = args[0]
    if rule == "identity" and s.is_activation(x):
        out = identity_rule(s, x, lambda t: func(t, *args[1:], **kwargs), f"{name}:identity",
                            _at_zero(func, args, kwargs, x))
    else:
        out = func(*args, **kwargs)
    s.coverage.add("handled", f"{name}:{rule}")
    if name in GATES:
        s.tag_gate(out)
    return out


_ZEROS: dict[Any, float] = {}  #: f(0) of element-wise functions, by (function, settings, dtype)


def _at_zero(func, args: tuple, kwargs: dict, x: torch.Tensor) -> float | None:
    """``func(0, *args[1:], **kwargs)``, remembered (``None`` where the settings are tensors or not hashable)."""
    if any(isinstance(a, torch.Tensor) for a in (*args[1:], *kwargs.values())):
        return None
    try:
        key = (func, args[1:], tuple(sorted(kwargs.items())), x.dtype)
        hash(key)
    except TypeError:
        return None
    if key not in _ZEROS:
        _ZEROS[key] = float(func(torch.zeros((), dtype=x.dtype), *args[1:], **kwargs))
    return _ZEROS[key]


def relu(s: Session, func, name, args, kwargs, acts):
    """ReLU: exact under LRP; Guided Backprop and DeconvNet keep only positive gradients."""
    rule = s.composite.op_rule("relu")
    if rule == "gradient":
        out = _rectify(s, func, name, args, kwargs, identity=False)
        if out is None:
            return classify_plain(s, func, name, args, kwargs, acts)
        s.coverage.add("linear", name)
        return out
    s.coverage.add("handled", f"{name}:{rule}")
    func, args, kwargs = out_of_place(func, name, args, kwargs)
    out = func(*args, **kwargs)
    if rule == "deconvnet":  # backward ignores the forward mask
        x = args[0]
        out = out.detach() + (x - x.detach())
    out.register_hook(lambda g: g.clamp(min=0))
    return out


def div(s: Session, func, name, args, kwargs, acts):
    """Division by a constant is linear; division by an activation is not (reported as unknown)."""
    divisor = args[1] if len(args) > 1 else kwargs.get("other")
    if getattr(func, "__name__", "") == "__rtruediv__":  # number / activation
        return classify_plain(s, func, "reciprocal", args, kwargs, acts)
    label = "div_by_activation" if s.is_activation(divisor) else name
    return classify_plain(s, func, label, args, kwargs, acts)


class ElementwiseModules:
    """Forward hooks, for one call, on the model's parameter-free leaf modules: a module whose single
    activation input is mapped element-wise (only :data:`POINTWISE` operations, same shape) by more than one
    operation gets the ``nonlinear`` rule as a whole."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.stack: list[tuple[torch.Tensor, int] | None] = []  #: (input, coverage log mark) per open module
        self.hooks = Hooks()

    def __enter__(self) -> "ElementwiseModules":
        for module in self.s.model.modules():
            if next(module.children(), None) is None and next(module.parameters(), None) is None:
                self.hooks.pre(module, self.pre)
                self.hooks.forward(module, self.post)
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.close()

    def pre(self, module, inputs) -> None:
        x = inputs[0] if len(inputs) == 1 else None
        if self.s.is_activation(x):
            self.stack.append((x, len(self.s.coverage.log)))
        else:
            self.stack.append(None)

    def post(self, module, inputs, out):
        entry = self.stack.pop()
        if entry is None or not isinstance(out, torch.Tensor) or out.shape != entry[0].shape:
            return None
        x, mark = entry
        seen = self.s.coverage.since(mark)
        names = {op.split(":")[0] for _, op in seen}
        nonlinear = names - LINEAR
        if len(seen) < 2 or not nonlinear or not names <= POINTWISE:
            return None
        rule = self.s.composite.op_rule("nonlinear")
        if rule != "identity":
            return None
        self.s.coverage.undo(mark)
        label = f"{type(module).__name__}:identity"
        self.s.coverage.add("handled", label)
        with torch.no_grad():  # f(0), without the module's hooks
            zero = float(module.forward(torch.zeros_like(x[:1])).reshape(-1)[0])
        return identity_rule(self.s, x, module.forward, label, zero, value=out.detach())
