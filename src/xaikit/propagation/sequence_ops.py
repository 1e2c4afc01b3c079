"""Operation handlers for transformers and recurrent networks.

Fused operations are decomposed into the operations they compute, and every part is sent back through the
engine's :meth:`~xaikit.propagation.engine.Session.dispatch`, so the composite's rules apply to the parts
exactly as if the model had written them out (no per-architecture code):

- ``F.scaled_dot_product_attention``: ``softmax(Q·Kᵀ·c + M)·V``. AttnLRP (Achtibat et al. 2024, sec. 3):
  uniform rule on both products, Taylor rule (gradient × input) on the softmax; CP-LRP (Ali et al. 2022):
  softmax detached, so the attention weights get no relevance and ``A·V`` is linear in ``V``. These rules
  only scale the backward pass by constants, so the fused kernel runs with that scaled backward
  (:func:`fused_attention`), equal to the written-out rules (:func:`attention`). Dropout is not applied.
- ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``):
  projections, heads, masks and output projection through the engine; the attention as above.
- ``torch.addmm``/``baddbmm`` (e.g. GPT-2's ``Conv1D``) with a parameter matrix are a linear layer
  ``x·W + b`` and get the composite's dense rule.
- ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (the fused ``_VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu``) are unrolled
  into per-step linear maps, sigmoid gates, ``tanh`` and the gate products. With the default
  ``gate="signal_takes_all"`` the gates get no relevance (Arras et al. 2017, sec. 2.3; Arras et al. 2019).
- A module without parameters that maps one tensor element-wise to a tensor of the same shape through
  several operations (e.g. ``NewGELUActivation``: ``0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))``) is one
  non-linearity and gets the composite's ``nonlinear`` rule as a whole (identity rule in AttnLRP),
  not rules for its internal products.
- Bookkeeping for the conservation report: the softmax Taylor rule's bias term, constants added to or
  concatenated with activations (position embeddings, a CLS token) are reported as absorbed.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .engine import SETUP, Session
from .ops import HANDLERS, LINEAR, NONLINEAR, _IdentityRule, classify_plain


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Σ a ⊙ b`` per row (first dimension) without a temporary of their size."""
    return torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


def call(s: Session, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run one part of a decomposed operation through the engine, as if the model had called it."""
    return s.dispatch(func, args, kwargs)


@contextlib.contextmanager
def _owned_like(s: Session, derived: torch.Tensor, param: torch.Tensor | None) -> Iterator[None]:
    """Let a tensor derived from a parameter (a slice, a transpose) count as that parameter's module's, so
    name- and type-based composite rules still find the layer."""
    owner = s.owners.get(id(param)) if param is not None else None
    if owner is None or id(derived) in s.owners:
        yield
        return
    s.owners[id(derived)] = owner
    try:
        yield
    finally:
        del s.owners[id(derived)]


def linear(s: Session, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           param: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through the engine; ``param`` is the parameter ``weight`` comes from
    (a slice or transpose of it is detached, so that the engine sees a constant weight, not an activation)."""
    if param is not None and weight is not param:
        weight = weight.detach()
    if bias is not None and bias.grad_fn is not None:
        bias = bias.detach()
    with _owned_like(s, weight, param):
        return call(s, F.linear, x, weight, bias)


# -- attention ---------------------------------------------------------------------------------------------
def attention_factors(s: Session) -> tuple[float, float]:
    """What the composite's rules do to attention ``softmax(Q·Kᵀ·c + M)·V``, as gradient factors for
    (Q and K, V).

    Every rule involved multiplies the backward pass by a constant: the uniform rule halves the gradient at
    a product's output (both operands then receive ``x ⊙ g/2``), the Taylor rule on the softmax is its
    plain gradient, and a detached softmax (CP-LRP) or a gate rule "signal takes all" stops the gradient to
    the attention weights. Hence AttnLRP's attention backward is the plain one with ``g_V/2`` and
    ``g_Q/4``, ``g_K/4`` (uniform rule on ``A·V``, then on ``Q·Kᵀ``), and CP-LRP's is ``g_V`` alone.
    """
    if s.composite.op_rule("softmax") == "detach" or s.composite.op_rule("gate") == "signal_takes_all":
        return 0.0, 1.0
    share = 0.5 if s.composite.op_rule("product") == "uniform" else 1.0
    return share * share, share


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward ``factor · g``, with the relevance ``x ⊙ factor·g`` that reaches the
    input subtracted from the session's absorbed relevance (the attention output adds what it received)."""

    @staticmethod
    def forward(ctx, x, factor, session):
        ctx.factor, ctx.session = factor, session
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g * ctx.factor
        ctx.session.absorb(-_row_dot(x, g))
        return g, None, None


def fused_attention(s: Session, func: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    **options: Any) -> torch.Tensor:
    """``func(q, k, v, **options)`` (the fused ``F.scaled_dot_product_attention``) with the backward of the
    composite's rules (:func:`attention_factors`), exactly what the written-out attention gives, at the
    cost of the fused kernel. What the attention output receives and does not pass to Q, K, V (the softmax
    Taylor rule's bias term, relevance of additive masks) is reported as absorbed."""
    qk, vf = attention_factors(s)
    rule = f"{s.composite.op_rule('softmax')}+{s.composite.op_rule('product')}" if qk else "value_only"
    s.coverage.add("handled", f"scaled_dot_product_attention:{rule}")

    def scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
        if not s.is_activation(t):
            return t
        return _ScaleGrad.apply(t, factor, s) if factor else t.detach()

    out = func(scaled(q, qk), scaled(k, qk), scaled(v, vf), **options)
    if out.requires_grad:
        held = s.hold(out)
        out.register_hook(lambda g: s.absorb(_row_dot(held.get().detach(), g)))
    return out


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
    length, n, dim = query.shape
    keys = key.shape[0]
    head_dim = dim // heads
    w_in, b_in = p.get("in_proj_weight"), p.get("in_proj_bias")
    if p.get("use_separate_proj_weight"):
        weights = [(p["q_proj_weight"], p["q_proj_weight"]), (p["k_proj_weight"], p["k_proj_weight"]),
                   (p["v_proj_weight"], p["v_proj_weight"])]
    else:
        weights = [(w_in[i * dim:(i + 1) * dim], w_in) for i in range(3)]
    biases = [None] * 3 if b_in is None else [b_in[i * dim:(i + 1) * dim] for i in range(3)]
    q, k, v = (linear(s, t, w, b, param) for t, (w, param), b in zip((query, key, value), weights, biases))

    def split(t: torch.Tensor, steps: int) -> torch.Tensor:  # (steps, N, E) -> (N, heads, steps, head_dim)
        t = call(s, torch.reshape, t, (steps, n, heads, head_dim))
        return call(s, torch.permute, t, (1, 2, 0, 3))

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
    out = call(s, torch.permute, out, (2, 0, 1, 3))  # (L, N, heads, head_dim)
    out = call(s, torch.reshape, out, (length, n, dim))
    out = linear(s, out, p["out_proj_weight"], p.get("out_proj_bias"))
    if not batched:
        out = call(s, torch.squeeze, out, 1)
    if not need_weights:
        return out, None
    if p.get("average_attn_weights", True):
        weights = call(s, torch.mean, weights, 1)
    if not batched:
        weights = call(s, torch.squeeze, weights, 0)
    return out, weights


# -- linear layers written as matrix products ----------------------------------------------------------------
def addmm(s: Session, func, name, args, kwargs, acts):
    """``addmm(b, x, W)`` / ``baddbmm(b, x, W)`` with a constant ``W``: the linear layer ``x·W + b``; otherwise
    the product and the sum through the engine."""
    names = ("input", "mat1", "mat2") if name == "addmm" else ("input", "batch1", "batch2")
    p = {**dict(zip(names + ("beta", "alpha"), args)), **kwargs}
    bias, x, w = p[names[0]], p[names[1]], p[names[2]]
    beta, alpha = p.get("beta", 1), p.get("alpha", 1)
    if name == "addmm" and beta == 1 and alpha == 1 and s.is_activation(x) and not s.is_activation(w) \
            and not s.is_activation(bias) and bias.ndim <= 1:
        return linear(s, x, w.t(), bias, param=w)
    out = call(s, torch.matmul, x, w)
    if alpha != 1:
        out = call(s, torch.mul, out, alpha)
    b = bias if beta == 1 else call(s, torch.mul, bias, beta)
    return call(s, torch.add, out, b) if beta != 0 else out


# -- recurrent networks --------------------------------------------------------------------------------------
_RNN = ("input", "hx", "params", "has_biases", "num_layers", "dropout", "train", "bidirectional", "batch_first")


def _gated(s: Session, gate: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """``gate ⊙ signal`` through the product rule. A signal that does not depend on the input (an initial
    state, a bias) keeps its relevance as absorbed under "signal takes all" instead of passing it to the gate."""
    if not s.is_activation(signal) and s.composite.op_rule("gate") == "signal_takes_all":
        if s.is_activation(gate):
            s.coverage.add("handled", "mul:signal_takes_all")
        return call(s, torch.mul, gate.detach(), signal)  # a constant: a sum with it absorbs its share
    return call(s, torch.mul, gate, signal)


def _sigmoid_gate(s: Session, z: torch.Tensor) -> torch.Tensor:
    out = call(s, torch.sigmoid, z)
    s.tag_gate(out)
    return out


def _lstm_cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
    z = call(s, torch.add, x_part, linear(s, h, w_hh, b_hh, param_hh))
    i, f, g, o = call(s, torch.chunk, z, 4, -1)
    i, f, o = _sigmoid_gate(s, i), _sigmoid_gate(s, f), _sigmoid_gate(s, o)
    g = call(s, torch.tanh, g)
    c = call(s, torch.add, _gated(s, f, c), _gated(s, i, g))
    h = _gated(s, o, call(s, torch.tanh, c))
    if w_hr is not None:
        h = linear(s, h, w_hr, None, param_hr)
    return h, c


def _gru_cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
    xr, xz, xn = call(s, torch.chunk, x_part, 3, -1)
    hr, hz, hn = call(s, torch.chunk, linear(s, h, w_hh, b_hh, param_hh), 3, -1)
    r = _sigmoid_gate(s, call(s, torch.add, xr, hr))
    a = call(s, torch.add, xz, hz)
    z = _sigmoid_gate(s, a)
    keep = _sigmoid_gate(s, call(s, torch.neg, a))  # 1 − σ(a) = σ(−a): a gate, homogeneous path to a
    n = call(s, torch.tanh, call(s, torch.add, xn, _gated(s, r, hn)))
    return call(s, torch.add, _gated(s, keep, n), _gated(s, z, h)), None


def _simple_cell(activation: Callable) -> Callable:
    def cell(s, x_part, h, c, w_hh, b_hh, w_hr, param_hh, param_hr):
        return call(s, activation, call(s, torch.add, x_part, linear(s, h, w_hh, b_hh, param_hh))), None

    return cell


_CELLS = {"lstm": _lstm_cell, "gru": _gru_cell, "rnn_tanh": _simple_cell(torch.tanh),
          "rnn_relu": _simple_cell(torch.relu)}


def recurrent(s: Session, func, name, args, kwargs, acts):
    """``_VF.lstm``/``gru``/``rnn_tanh``/``rnn_relu`` on a padded batch, unrolled step by step.

    The input projection of all time steps is one linear call per layer and direction; the recurrent
    projection is one call per step. Inter-layer dropout is not applied. Packed sequences are run as they
    are and reported as unknown.
    """
    packed = isinstance(args[1], torch.Tensor) and not args[1].is_floating_point()
    if packed or len(args) < len(_RNN):
        return classify_plain(s, func, f"{name}(packed)", args, kwargs, acts)
    p = dict(zip(_RNN, args))
    s.coverage.add("handled", f"{name}:unrolled")
    x, hx, params = p["input"], p["hx"], list(p["params"])
    layers, dirs = p["num_layers"], 2 if p["bidirectional"] else 1
    if not p["batch_first"]:  # (N, T, F): batch-major, so that what the layers absorb is counted per sample
        x = call(s, torch.transpose, x, 0, 1)
    h0, c0 = (hx if name == "lstm" else (hx, None))
    per = len(params) // (layers * dirs)
    cell = _CELLS[name]
    finals_h, finals_c = [], []
    for layer_index in range(layers):
        outputs = []
        for direction in range(dirs):
            k = layer_index * dirs + direction
            w = params[k * per:(k + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if p["has_biases"] else (None, None)
            w_hr = w[-1] if per in (3, 5) else None  # LSTM with proj_size
            x_all = linear(s, x, w_ih, b_ih)
            steps = call(s, torch.unbind, x_all, 1)
            order = range(len(steps) - 1, -1, -1) if direction else range(len(steps))
            h, c = h0[k], (c0[k] if c0 is not None else None)
            hs = [None] * len(steps)
            for t in order:
                h, c = cell(s, steps[t], h, c, w_hh, b_hh, w_hr, w_hh, w_hr)
                hs[t] = h
            outputs.append(call(s, torch.stack, hs, 1))
            finals_h.append(h)
            finals_c.append(c)
        x = outputs[0] if dirs == 1 else call(s, torch.cat, outputs, -1)
    out = x if p["batch_first"] else call(s, torch.transpose, x, 0, 1)
    h_n = call(s, torch.stack, finals_h, 0)
    if name == "lstm":
        return out, h_n, call(s, torch.stack, finals_c, 0)
    return out, h_n


# -- element-wise functions written as several operations ------------------------------------------------------
#: operations that act element by element (an element-wise function of one tensor may use only these)
POINTWISE = NONLINEAR | {
    "add", "sub", "rsub", "mul", "div", "div_by_activation", "neg", "pow", "sqrt", "rsqrt", "exp", "exp2",
    "expm1", "log", "log1p", "erf", "erfc", "abs", "clamp", "clip", "relu", "leaky_relu", "where", "maximum",
    "minimum", "square", "reciprocal", "sign", "sin", "cos", "to", "float", "double", "half", "bfloat16",
    "type", "type_as", "contiguous", "clone",
}


class _ElementwiseModules:
    """Forward hooks, for one call, on the model's parameter-free leaf modules: a module whose single
    activation input is mapped element-wise (only :data:`POINTWISE` operations, same shape) by more than one
    operation gets the ``nonlinear`` rule as a whole."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.stack: list[tuple[torch.Tensor, int] | None] = []  #: (input, coverage log mark) per open module
        self.handles = []

    def __enter__(self) -> "_ElementwiseModules":
        for module in self.s.model.modules():
            if next(module.children(), None) is None and next(module.parameters(), None) is None:
                self.handles.append(module.register_forward_pre_hook(self.pre))
                self.handles.append(module.register_forward_hook(self.post))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

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
        self.s.coverage.add("handled", f"{type(module).__name__}:identity")
        value = out.detach()
        with torch.no_grad():  # f(0), without the module's hooks
            zero = float(module.forward(torch.zeros_like(x[:1])).reshape(-1)[0])
        return _IdentityRule.apply(x, lambda _: value, self.s, zero)


SETUP.append(_ElementwiseModules)


# -- softmax: what the Taylor rule does not pass on is absorbed ----------------------------------------------------
_softmax_rule = HANDLERS["softmax"]


def softmax(s: Session, func, name, args, kwargs, acts):
    """The engine's softmax rule, plus bookkeeping for the Taylor rule (AttnLRP, Proposition 3.1): the
    relevance ``R_i = x_i (R̂_i − s_i Σ_j R̂_j)`` passed to the input is not the relevance ``R̂`` received; the
    difference is the share of the expansion's bias term and is reported as absorbed, like a layer's bias."""
    out = _softmax_rule(s, func, name, args, kwargs, acts)
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    x = args[0] if args else kwargs.get("input")
    if s.composite.op_rule("softmax") != "taylor" or not isinstance(dim, int) or not s.is_activation(out):
        return out
    y = out.detach()  # softmax(x, dtype=torch.float32) (Hugging Face's eager attention): products in the wider type
    # per softmax row: received A = Σ y g, passed Σ x y (g − A) = B − A·C with B = Σ (x y) g, C = Σ x y;
    # x·y is 0 where y = 0 (also for masked scores x = −inf)
    xy = (x.detach() * y).nan_to_num_(0.0, 0.0, 0.0)
    c = xy.sum(dim, keepdim=True)

    def hook(g: torch.Tensor) -> None:
        received = _row_dot(y, g)
        rows = (xy * g).sum(dim, keepdim=True) - (y * g).sum(dim, keepdim=True) * c
        s.absorb(received - rows.reshape(rows.shape[0], -1).sum(1))

    out.register_hook(hook)
    return out

# -- constants added to activations absorb relevance -------------------------------------------------------------
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
    if isinstance(constant, torch.Tensor):
        value = constant.detach() * coef
        if not bool(torch.isfinite(value).all()):  # masks with −inf: the gradient there is 0
            value = value.nan_to_num(0.0, 0.0, 0.0)
        out.register_hook(lambda g: None if g is None else s.absorb((g * value).reshape(g.shape[0], -1).sum(1)))
    elif constant != 0:  # (no gradient: a first-layer rule wrote its relevance at the input directly)
        out.register_hook(lambda g: None if g is None else s.absorb(g.reshape(g.shape[0], -1).sum(1) * (constant * coef)))
    return out


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
        s.absorb(total)

    out.register_hook(hook)
    return out


#: the handlers of this module, registered into the engine's table
SEQUENCE_HANDLERS: dict[str, Callable] = {
    "scaled_dot_product_attention": sdpa,
    "multi_head_attention_forward": multi_head_attention,
    "addmm": addmm,
    "baddbmm": addmm,
    **{n: recurrent for n in _CELLS},
    "softmax": softmax,
    **{n: constant_sum for n in ("add", "sub", "rsub")},
    **{n: constant_parts for n in ("cat", "concat", "concatenate", "stack")},
}
HANDLERS.update(SEQUENCE_HANDLERS)
