"""Normalisation layers (LayerNorm, GroupNorm, RMSNorm): the identity rule on the 1/σ scaling."""
from __future__ import annotations

from dataclasses import dataclass
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
    def forward(ctx, x, compute, weight, bias, groups, centre, session, label):
        out, r = compute(x)
        ctx.save_for_backward(r)
        ctx.weight, ctx.bias, ctx.groups, ctx.centre, ctx.session = weight, bias, groups, centre, session
        ctx.label = label
        return out

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return (frozen_gradient(ctx.session, g, r, ctx.weight, ctx.bias, ctx.groups, ctx.centre, ctx.label),
                None, None, None, None, None, None, None)


def frozen_gradient(s: Session, g: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None,
                    bias: torch.Tensor | None, groups: int | None, centre: bool, label: str) -> torch.Tensor:
    """The gradient of ``y = (x − μ)·r·w + b`` with ``r = 1/σ`` held constant (identity rule on the scaling;
    CP-LRP, Ali et al. 2022, sec. 3.2; AttnLRP, Achtibat et al. 2024, sec. 3.3): ``g_x = centre(g ⊙ w ⊙ r)``,
    without centring for RMSNorm; the bias ``b`` absorbs ``Σ g ⊙ b`` (booked under ``label``). ``r`` is
    ``(N, groups)`` for GroupNorm (``weight``, ``bias`` shaped per channel), else has size 1 in the normalised
    dimensions. Differentiable in ``g``, ``r`` and ``weight`` (training mode)."""
    if bias is not None:
        s.absorb(channel_dot(g.detach(), bias.detach()), label)
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


@dataclass(frozen=True)
class _Norm:
    """One normalisation call: which, over what (``shape`` of LayerNorm/RMSNorm, or ``groups``), its ε."""

    name: str
    eps: float
    shape: tuple[int, ...] = ()
    groups: int | None = None

    @property
    def centre(self) -> bool:
        return self.name != "rms_norm"

    def shaped(self, v: torch.Tensor | None, ndim: int, flat: bool = False) -> torch.Tensor | None:
        """A weight (or with ``flat``, a bias) shaped as :func:`frozen_gradient` takes it: per channel for
        GroupNorm, else as it is (a bias flattened)."""
        if v is None:
            return None
        if self.groups is not None:
            return v.reshape((-1,) + (1,) * (ndim - 2))
        return v.reshape(-1) if flat else v

    def rstd(self, t: torch.Tensor) -> torch.Tensor:
        """``r = 1/σ`` as differentiable operations, shaped as :func:`frozen_gradient` takes it:
        ``rsqrt(var + ε)`` (``rsqrt(mean(x²) + ε)`` for RMSNorm) over the normalised dimensions, or per group."""
        keep = self.groups is None
        dims = tuple(range(t.ndim - len(self.shape), t.ndim)) if keep else (2,)
        if not keep:
            t = t.reshape(t.shape[0], self.groups, -1)
        spread = t.var(dims, unbiased=False, keepdim=keep) if self.centre else t.pow(2).mean(dims, keepdim=keep)
        return torch.rsqrt(spread + self.eps)

    def native(self, t: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        """The normalisation as the model computes it."""
        if self.groups is not None:
            return F.group_norm(t, self.groups, weight, bias, self.eps)
        if self.centre:
            return F.layer_norm(t, self.shape, weight, bias, self.eps)
        return F.rms_norm(t, self.shape, weight, self.eps)

    def with_rstd(self, func, w, b):
        """``compute(t) -> (output, r)`` in one native call where PyTorch gives ``r`` (the explaining form)."""
        if self.groups is not None:
            return lambda t: (lambda o: (o[0], o[2]))(torch.native_group_norm(
                t, w, b, t.shape[0], t.shape[1], t[0, 0].numel(), self.groups, self.eps))
        if self.centre:
            return lambda t: (lambda o: (o[0], o[2]))(torch.native_layer_norm(t, self.shape, w, b, self.eps))
        return lambda t: (func(t, self.shape, w, self.eps), self.rstd(t))


_NORM_KEYS = {
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "rms_norm": ("input", "normalized_shape", "weight", "eps"),
    "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
}


def _frozen(s: Session, func, spec: _Norm, x, w, b) -> torch.Tensor:
    """The normalisation with ``r`` held constant: :class:`_FrozenScale` (explaining), or in training mode an
    :class:`~..explained.Explained` operation whose explaining face is :func:`frozen_gradient` with ``r``
    recomputed on the graph."""
    if not s.differentiable:
        detached = lambda v, flat=False: None if v is None else spec.shaped(v.detach(), x.ndim, flat)  # noqa: E731
        return _FrozenScale.apply(x, spec.with_rstd(func, w, b), detached(w), detached(b, True), spec.groups,
                                  spec.centre, s, f"{spec.name}:bias")

    def modified(inputs, g):
        t, wt, bt = inputs
        return (frozen_gradient(s, g, spec.rstd(t), spec.shaped(wt, t.ndim), spec.shaped(bt, t.ndim, True),
                                spec.groups, spec.centre, f"{spec.name}:bias"), None, None)

    return explained(s, spec.native, modified, x, w, b)


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
    eps = p.get("eps")
    eps = (torch.finfo(x.dtype).eps if name == "rms_norm" else 1e-5) if eps is None else eps
    if name == "group_norm":
        spec = _Norm(name, eps, groups=p["num_groups"])
    else:
        spec = _Norm(name, eps, shape=tuple(p["normalized_shape"]))
    out = _frozen(s, func, spec, x, *((None, None) if adaptive else (weight, bias)))
    channel = 1 if name == "group_norm" else -1
    if adaptive:
        if weight is not None:
            out = call(s, torch.mul, out, weight if channel == -1 else _channel_view(weight, x.ndim, 1))
        if bias is not None:
            out = call(s, torch.add, out, bias if channel == -1 else _channel_view(bias, x.ndim, 1))
    return out
