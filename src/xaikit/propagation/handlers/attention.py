"""Attention: ``F.scaled_dot_product_attention`` (the fused kernel with the rules' backward) and
``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) decomposed through the engine.

AttnLRP (Achtibat et al. 2024, sec. 3): uniform rule on both products, Taylor rule (gradient × input) on the
softmax; CP-LRP (Ali et al. 2022): softmax detached, so the attention weights get no relevance and ``A·V`` is
linear in ``V``. These rules only scale the backward pass by constants, so the fused kernel runs with that
scaled backward (:func:`fused_attention`), equal to the written-out rules (:func:`attention`). Dropout is not
applied."""
from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..explained import explained, vjp
from .layers import linear
from .plain import call, classify_plain, row_dot

if TYPE_CHECKING:
    from ..session import Session


def attention_factors(s: Session) -> tuple[float, float]:
    """What the composite's rules do to attention ``softmax(Q·Kᵀ·c + M)·V``, as gradient factors for
    (Q and K, V).

    Every rule involved multiplies the backward pass by a constant: the uniform rule halves the gradient at
    a product's output (both operands then receive ``x ⊙ g/2``), the Taylor rule on the softmax is its
    plain gradient, and a detached softmax (CP-LRP) or the ``attention`` rule "signal takes all" (see
    :mod:`..composites`) stops the gradient to the attention weights. Hence AttnLRP's attention backward is
    the plain one with ``g_V/2`` and ``g_Q/4``, ``g_K/4`` (uniform rule on ``A·V``, then on ``Q·Kᵀ``), and
    CP-LRP's is ``g_V`` alone.
    """
    if s.composite.op_rule("softmax") == "detach" or s.composite.op_rule("attention") == "signal_takes_all":
        return 0.0, 1.0
    share = 0.5 if s.composite.op_rule("product") == "uniform" else 1.0
    return share * share, share


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward ``factor · g``, with the relevance ``x ⊙ factor·g`` that reaches the
    input subtracted from the session's absorbed relevance (the attention output adds what it received)."""

    @staticmethod
    def forward(ctx, x, factor, session, label):
        ctx.factor, ctx.session, ctx.label = factor, session, label
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g * ctx.factor
        ctx.session.absorb(-row_dot(x, g), ctx.label)
        return g, None, None, None


def fused_attention(s: Session, func: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    **options: Any) -> torch.Tensor:
    """``func(q, k, v, **options)`` (the fused ``F.scaled_dot_product_attention``) with the backward of the
    composite's rules (:func:`attention_factors`), exactly what the written-out attention gives, at the
    cost of the fused kernel. What the attention output receives and does not pass to Q, K, V (the softmax
    Taylor rule's bias term, relevance of additive masks) is reported as absorbed. In training mode
    :func:`_differentiable_attention`."""
    qk, vf = attention_factors(s)
    rule = f"{s.composite.op_rule('softmax')}+{s.composite.op_rule('product')}" if qk else "value_only"
    label = f"scaled_dot_product_attention:{rule}"
    s.coverage.add("handled", label)
    if s.differentiable:
        return _differentiable_attention(s, func, q, k, v, (qk, qk, vf), options)

    def scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
        if not s.is_activation(t):
            return t
        return _ScaleGrad.apply(t, factor, s, label) if factor else t.detach()

    out = func(scaled(q, qk), scaled(k, qk), scaled(v, vf), **options)
    if out.requires_grad:
        held = s.hold(out)
        out.register_hook(lambda g: s.absorb(row_dot(held.get().detach(), g), label))
    return out


def _differentiable_attention(s: Session, func: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              factors: tuple[float, float, float], options: dict) -> torch.Tensor:
    """The attention of :func:`fused_attention` in training mode: an :class:`~..explained.Explained` operation
    of ``func`` on PyTorch's reference ("math") kernel, whose backward is differentiable (the fused kernels'
    is not). Explaining, the plain vector–Jacobian product times the rules' factors for Q, K and V (only
    those that are activations and get a non-zero factor), with the same bookkeeping as the fused form:
    received ``Σ out ⊙ g`` less passed ``Σ t ⊙ g_t``. A floating-point mask (a position bias computed from
    parameters) is an input too, so that the training loss's backward reaches it."""
    mask = options.pop("attn_mask", None)
    floating = isinstance(mask, torch.Tensor) and mask.is_floating_point()

    def reference(q, k, v, m=None):
        with sdpa_kernel(SDPBackend.MATH):
            return func(q, k, v, attn_mask=m if floating else mask, **options)

    explained_inputs = [factor != 0 and s.is_activation(t) for t, factor in zip((q, k, v), factors)]

    def modified(inputs, g):
        out, grads = vjp(reference, inputs, g, [*explained_inputs, False])
        grads = [None if d is None else d * factor for d, factor in zip(grads, (*factors, 0.0))]
        passed = sum(row_dot(t.detach(), d.detach()) for t, d in zip(inputs, grads) if d is not None)
        s.absorb(row_dot(out.detach(), g.detach()) - passed, "attention:bias")
        return grads

    return explained(s, reference, modified, q, k, v, mask if floating else None)


def attention(s: Session, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False, scale: float | None = None, gqa: bool = False) -> torch.Tensor:
    """``softmax(Q·Kᵀ·scale + mask)·V`` written out (the reference definition of
    ``F.scaled_dot_product_attention``); a boolean ``mask`` marks the keys that take part. Returns the
    output and the attention weights."""
    length, keys = q.shape[-2], k.shape[-2]
    if gqa and k.shape[-3] != q.shape[-3]:
        groups = q.shape[-3] // k.shape[-3]
        k = call(s, torch.repeat_interleave, k, groups, dim=-3)
        v = call(s, torch.repeat_interleave, v, groups, dim=-3)
    q = call(s, torch.mul, q, 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)  # cheaper than scores
    scores = call(s, torch.matmul, q, call(s, torch.transpose, k, -2, -1))
    if causal:
        allowed = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril()
        scores = call(s, torch.masked_fill, scores, ~allowed, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = call(s, torch.masked_fill, scores, ~mask, float("-inf"))
        else:
            scores = call(s, torch.add, scores, mask)
    weights = call(s, torch.softmax, scores, -1)
    return call(s, torch.matmul, weights, v), weights


_SDPA = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def sdpa(s: Session, func, name, args, kwargs, acts):
    """``F.scaled_dot_product_attention``: the fused kernel with the rules' backward (:func:`fused_attention`);
    dropout is not applied."""
    p = {**dict(zip(_SDPA, args)), **kwargs}
    options = {k: p[k] for k in ("attn_mask", "is_causal", "scale", "enable_gqa") if p.get(k) is not None}
    return fused_attention(s, func, p["query"], p["key"], p["value"], **options)


_MHA = tuple(inspect.signature(F.multi_head_attention_forward).parameters)


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An ``nn.MultiheadAttention`` mask (boolean: True = ignore; or additive) as an additive float mask."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def multi_head_attention(s: Session, func, name, args, kwargs, acts):
    """``F.multi_head_attention_forward`` (``nn.MultiheadAttention``): input projections, attention per head
    (:func:`attention`), output projection, each through the engine."""
    p = {**dict(zip(_MHA, args)), **kwargs}
    if p.get("bias_k") is not None or p.get("static_k") is not None or p.get("static_v") is not None \
            or p.get("add_zero_attn"):
        return classify_plain(s, func, f"{name}(bias_kv/static_kv/add_zero_attn)", args, kwargs, acts)
    s.coverage.add("handled", f"{name}:decomposed")
    query, key, value, heads = p["query"], p["key"], p["value"], p["num_heads"]
    batched = query.ndim == 3
    if not batched:  # (L, E) -> (L, 1, E)
        query, key, value = (call(s, torch.unsqueeze, t, 1) for t in (query, key, value))
    # batch-major (N, L, E), so that what the projections absorb is booked per sample (rows of a
    # sequence-first (L, N, E) tensor mix the samples)
    query, key, value = (call(s, torch.transpose, t, 0, 1) for t in (query, key, value))
    n, length, dim = query.shape
    keys = key.shape[1]
    head_dim = dim // heads
    w_in, b_in = p.get("in_proj_weight"), p.get("in_proj_bias")
    if p.get("use_separate_proj_weight"):
        weights = [(p["q_proj_weight"], p["q_proj_weight"]), (p["k_proj_weight"], p["k_proj_weight"]),
                   (p["v_proj_weight"], p["v_proj_weight"])]
    else:
        weights = [(w_in[i * dim:(i + 1) * dim], w_in) for i in range(3)]
    biases = [None] * 3 if b_in is None else [b_in[i * dim:(i + 1) * dim] for i in range(3)]
    q, k, v = (linear(s, t, w, b, param) for t, (w, param), b in zip((query, key, value), weights, biases))

    def split(t: torch.Tensor, steps: int) -> torch.Tensor:  # (N, steps, E) -> (N, heads, steps, head_dim)
        t = call(s, torch.reshape, t, (n, steps, heads, head_dim))
        return call(s, torch.permute, t, (0, 2, 1, 3))

    q, k, v = split(q, length), split(k, keys), split(v, keys)
    mask = None
    if p.get("attn_mask") is not None:
        m = _as_additive(p["attn_mask"], q.dtype)
        mask = m.view(n, heads, length, keys) if m.ndim == 3 else m
    if p.get("key_padding_mask") is not None:
        kpm = _as_additive(p["key_padding_mask"], q.dtype).view(n, 1, 1, keys)
        mask = kpm if mask is None else mask + kpm
    causal = bool(p.get("is_causal")) and mask is None
    need_weights = p.get("need_weights", True)
    if need_weights:  # the weights are an output: written out, so they carry relevance too
        out, weights = attention(s, q, k, v, mask, causal)
    else:
        out = fused_attention(s, F.scaled_dot_product_attention, q, k, v, attn_mask=mask, is_causal=causal)
    out = call(s, torch.permute, out, (0, 2, 1, 3))  # (N, L, heads, head_dim)
    out = call(s, torch.reshape, out, (n, length, dim))
    out = call(s, torch.transpose, linear(s, out, p["out_proj_weight"], p.get("out_proj_bias")), 0, 1)
    if not batched:
        out = call(s, torch.squeeze, out, 1)
    if not need_weights:
        return out, None
    if p.get("average_attn_weights", True):
        weights = call(s, torch.mean, weights, 1)
    if not batched:
        weights = call(s, torch.squeeze, weights, 0)
    return out, weights
