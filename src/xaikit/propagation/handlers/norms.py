"""Normalisation layers (LayerNorm, GroupNorm, RMSNorm): the identity rule on the 1/σ scaling."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..explained import explained
from ..layers import channel_dot
from .layers import _channel_view
from .plain import call

if TYPE_CHECKING:
    from ..session import Session


class _FrozenScale(torch.autograd.Function):
    """A normalisation ``y = (x − μ)·r·w + b`` whose backward holds ``r = 1/σ`` constant
    (:func:`frozen_gradient`): one native forward and two to four element-wise operations backward (the
    explaining form; training mode uses :func:`frozen_gradient` in an :class:`~..explained.Explained`
    operation)."""

    @staticmethod
    def forward(ctx, x, compute, weight, bias, groups, centre, session):
        out, r = compute(x)
        ctx.save_for_backward(r)
        ctx.weight, ctx.bias, ctx.groups, ctx.centre, ctx.session = weight, bias, groups, centre, session
        return out

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return (frozen_gradient(ctx.session, g, r, ctx.weight, ctx.bias, ctx.groups, ctx.centre),
                None, None, None, None, None, None)


def frozen_gradient(s: Session, g: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None,
                    bias: torch.Tensor | None, groups: int | None, centre: bool) -> torch.Tensor:
    """The gradient of ``y = (x − μ)·r·w + b`` with ``r = 1/σ`` held constant (identity rule on the scaling;
    CP-LRP, Ali et al. 2022, sec. 3.2; AttnLRP, Achtibat et al. 2024, sec. 3.3): ``g_x = centre(g ⊙ w ⊙ r)``,
    without centring for RMSNorm; the bias ``b`` absorbs ``Σ g ⊙ b``. ``r`` is ``(N, groups)`` for GroupNorm
    (``weight``, ``bias`` shaped per channel), else has size 1 in the normalised dimensions. Differentiable
    in ``g``, ``r`` and ``weight`` (training mode)."""
    if bias is not None:
        s.absorb(channel_dot(g.detach(), bias.detach()), "norm:bias")
    c = g if weight is None else g * weight
    if groups is None:  # LayerNorm / RMSNorm over the trailing dimensions where r has size 1
        c = c * r
        if centre:
            dims = tuple(i for i in range(r.ndim) if r.shape[i] == 1 and c.shape[i] != 1)
            c = c - c.mean(dims, keepdim=True)
        return c
    shape = c.shape  # GroupNorm: r is (N, groups)
    c = c.reshape(shape[0], groups, -1) * r[..., None]
    return (c - c.mean(2, keepdim=True)).reshape(shape)


def _rstd(t: torch.Tensor, dims: tuple[int, ...], groups: int | None, eps: float, centre: bool) -> torch.Tensor:
    """``r = 1/σ`` of a normalisation as differentiable operations, shaped as :func:`frozen_gradient` takes it:
    ``rsqrt(var + ε)`` (``rsqrt(mean(x²) + ε)`` for RMSNorm, ``centre=False``) over ``dims``, or per group."""
    if groups is not None:
        t, dims = t.reshape(t.shape[0], groups, -1), (2,)
    spread = t.var(dims, unbiased=False, keepdim=groups is None) if centre else \
        t.pow(2).mean(dims, keepdim=groups is None)
    return torch.rsqrt(spread + eps)


_NORM_KEYS = {
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "rms_norm": ("input", "normalized_shape", "weight", "eps"),
    "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
}


def norm(s: Session, func, name, args, kwargs, acts):
    """LayerNorm/GroupNorm/RMSNorm: identity rule on the 1/σ scaling (σ treated as a constant; CP-LRP,
    Ali et al. 2022; AttnLRP, Achtibat et al. 2024). An affine weight or bias that depends on the input
    (adaptive normalisation) is applied through the product and sum rules."""
    rule = s.composite.op_rule("norm")
    x = args[0] if args else kwargs["input"]
    s.coverage.add("handled", f"{name}:{rule}")
    if rule == "gradient" or not s.is_activation(x):
        return func(*args, **kwargs)
    p = {**dict(zip(_NORM_KEYS[name], args)), **kwargs}
    weight, bias = p.get("weight"), p.get("bias")
    adaptive = s.is_activation(weight) or s.is_activation(bias)
    w, b = (None, None) if adaptive else (weight, bias)
    centre = name != "rms_norm"
    eps = p.get("eps")
    eps = (1e-5 if centre else torch.finfo(x.dtype).eps) if eps is None else eps
    channel, groups = -1, None
    if name == "group_norm":
        groups, channel, dims = p["num_groups"], 1, ()
        shaped = lambda v, shape: None if v is None else v.reshape((-1,) + (1,) * (x.ndim - 2))  # noqa: E731
    else:
        shape = tuple(p["normalized_shape"])
        dims = tuple(range(x.ndim - len(shape), x.ndim))
        shaped = lambda v, shape: None if v is None else v.reshape(shape)  # noqa: E731
    w_shape = None if w is None else w.shape
    if s.differentiable:
        def native(t, wt, bt):
            if name == "group_norm":
                return F.group_norm(t, groups, wt, bt, eps)
            if name == "layer_norm":
                return F.layer_norm(t, shape, wt, bt, eps)
            return F.rms_norm(t, shape, wt, eps)

        def modified(inputs, g):
            t, wt, bt = inputs
            return (frozen_gradient(s, g, _rstd(t, dims, groups, eps, centre), shaped(wt, w_shape),
                                    shaped(bt, (-1,)), groups, centre), None, None)

        out = explained(s, native, modified, x, w, b)
    else:
        if name == "group_norm":
            n, c = x.shape[:2]
            compute = lambda t: (lambda o: (o[0], o[2]))(  # noqa: E731
                torch.native_group_norm(t, w, b, n, c, t[0, 0].numel(), groups, eps))
        elif name == "layer_norm":
            compute = lambda t: (lambda o: (o[0], o[2]))(torch.native_layer_norm(t, shape, w, b, eps))  # noqa: E731
        else:
            compute = lambda t: (func(t, shape, w, eps), _rstd(t, dims, None, eps, False))  # noqa: E731
        detached = lambda v, shape: None if v is None else shaped(v.detach(), shape)  # noqa: E731
        out = _FrozenScale.apply(x, compute, detached(w, w_shape), detached(b, (-1,)), groups, centre, s)
    if adaptive:
        if weight is not None:
            out = call(s, torch.mul, out, weight if channel == -1 else _channel_view(weight, x.ndim, 1))
        if bias is not None:
            out = call(s, torch.add, out, bias if channel == -1 else _channel_view(bias, x.ndim, 1))
    return out
