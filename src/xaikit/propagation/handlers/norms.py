"""Normalisation layers (LayerNorm, GroupNorm, RMSNorm): the identity rule on the 1/σ scaling."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..layers import channel_dot
from .layers import _channel_view
from .plain import call

if TYPE_CHECKING:
    from ..session import Session


class _FrozenScale(torch.autograd.Function):
    """A normalisation ``y = (x − μ)·r·w + b`` whose backward holds ``r = 1/σ`` constant (identity rule on
    the scaling): ``g_x = centre(g ⊙ w ⊙ r)``, without centring for RMSNorm. One native forward and two to
    four element-wise operations backward; the bias ``b`` absorbs ``Σ g ⊙ b``."""

    @staticmethod
    def forward(ctx, x, compute, weight, bias, groups, centre, session, label):
        out, r = compute(x)
        ctx.save_for_backward(r)
        ctx.weight, ctx.bias, ctx.groups, ctx.centre, ctx.session = weight, bias, groups, centre, session
        ctx.label = label
        return out

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        weight, bias, groups = ctx.weight, ctx.bias, ctx.groups
        if bias is not None:
            ctx.session.absorb(channel_dot(g, bias), ctx.label)
        c = g if weight is None else g * weight
        if groups is None:  # LayerNorm / RMSNorm over the trailing dimensions where r has size 1
            c = c * r
            if ctx.centre:
                dims = tuple(i for i in range(r.ndim) if r.shape[i] == 1 and c.shape[i] != 1)
                c = c - c.mean(dims, keepdim=True)
            return c, None, None, None, None, None, None, None
        shape = c.shape  # GroupNorm: r is (N, groups)
        c = c.reshape(shape[0], groups, -1) * r[..., None]
        return (c - c.mean(2, keepdim=True)).reshape(shape), None, None, None, None, None, None, None


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
    eps = p.get("eps")
    channel, groups = -1, None
    if name == "group_norm":
        groups, channel = p["num_groups"], 1
        n, c = x.shape[:2]
        compute = lambda t: (lambda o: (o[0], o[2]))(  # noqa: E731
            torch.native_group_norm(t, w, b, n, c, t[0, 0].numel(), groups, 1e-5 if eps is None else eps))
    elif name == "layer_norm":
        shape = tuple(p["normalized_shape"])
        compute = lambda t: (lambda o: (o[0], o[2]))(  # noqa: E731
            torch.native_layer_norm(t, shape, w, b, 1e-5 if eps is None else eps))
    else:
        shape = tuple(p["normalized_shape"])
        dims = tuple(range(x.ndim - len(shape), x.ndim))
        eps = torch.finfo(x.dtype).eps if eps is None else eps
        compute = lambda t: (lambda r: (func(t, shape, w, eps), r))(  # noqa: E731
            torch.rsqrt(t.pow(2).mean(dims, keepdim=True) + eps))
    view = lambda v, shape: None if v is None else v.detach().reshape(  # noqa: E731
        (-1,) + (1,) * (x.ndim - 2) if channel == 1 else shape)
    out = _FrozenScale.apply(x, compute, view(w, w.shape if w is not None else None), view(b, (-1,)), groups,
                             name != "rms_norm", s, f"{name}:bias")
    if adaptive:
        if weight is not None:
            out = call(s, torch.mul, out, weight if channel == -1 else _channel_view(weight, x.ndim, 1))
        if bias is not None:
            out = call(s, torch.add, out, bias if channel == -1 else _channel_view(bias, x.ndim, 1))
    return out
