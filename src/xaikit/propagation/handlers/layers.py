"""Linear and convolution layers (the composite's rule), BatchNorm folded into the layer before it, linear
layers written as matrix products (``addmm``) or as one grouped product of a mixture of experts
(``torch._grouped_mm``), and the warning when a first-layer rule found no layer."""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn.functional as F

from ..explained import watch
from ..kernels import redistribute, scale_factor, stabiliser
from ..layers import LayerCall, channel_dot
from ..rules import Rule
from ..state import LayerState
from .plain import call, classify_plain, sample_dot
from .products import product

#: floating-point types whose rules compute ε-stabilised ratios in float32
LOW_PRECISION = (torch.float16, torch.bfloat16)

if TYPE_CHECKING:
    from ..session import Session


def _unpack_layer(args: tuple, kwargs: dict):
    """(input, weight, bias, call(x, w, b)) for F.linear / F.convNd / F.conv_transposeNd."""
    names = ("input", "weight", "bias")
    values = list(args[:3]) + [kwargs.get(n) for n in names[len(args[:3]):]]
    rest_args, rest_kwargs = args[3:], {k: v for k, v in kwargs.items() if k not in names}
    return values[0], values[1], values[2], rest_args, rest_kwargs


def layer_rule(s: Session, name: str, x: torch.Tensor, weight: torch.Tensor) -> tuple[str, Rule]:
    """The kind (``"conv"``/``"dense"``) and the composite's rule of a layer call, recorded as handled."""
    module_name, module = s.owners.get(id(weight), (None, None))
    kind = "conv" if name.startswith("conv") else "dense"
    first = id(x) in s.chain
    s.first_seen = s.first_seen or first
    rule = s.composite.rule_for(kind, module_name, module, first)
    if rule.direct and not first:
        raise ValueError(
            f"rule {rule.name!r} writes relevance at the model input and applies only to the first layer, "
            f"but was selected for {module_name or name}"
        )
    s.coverage.add("handled", f"{name}:{rule.name}")
    return kind, rule


def layer(s: Session, func, name, args, kwargs, acts):
    """Linear and convolution layers: the composite's rule (LRP-0/ε by gradient rescaling, others modified)."""
    x, weight, bias, rest_args, rest_kwargs = _unpack_layer(args, kwargs)
    if not s.is_activation(x) or s.is_activation(weight):  # e.g. weights computed from the input
        return product(s, func, name, args, kwargs, acts)
    kind, rule = layer_rule(s, name, x, weight)
    call = LayerCall(func, name, rest_args, rest_kwargs, tuple(weight.shape[2:]))
    return _apply_rule(s, rule, call, x, weight, bias, 1 if kind == "conv" else -1)


def _apply_rule(s: Session, rule: Rule, call: LayerCall, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, channel: int) -> torch.Tensor:
    """The layer call ``call.native(x, weight, bias)`` under ``rule``: LRP-0/ε by rescaling the output gradient,
    other rules by :class:`Redistribute` (``channel``: the output's channel dimension, 1 or -1)."""
    name, rows = call.name, s.rows_of(x)  # (rows: the sample of each row where dimension 0 is not the batch)
    if rule.plain:  # detached parameters: autograd then keeps no copy of x for a weight gradient nobody asks for
        out = call.native(x, weight.detach(), None if bias is None else bias.detach())
        return _plain_layer(s, out, rule, bias, channel, name, rows)
    state = LayerState(rule, name, call, weight, bias,
                       extra={"channel": channel, "nonnegative": id(x) in s.nonnegative, "rows": rows})
    if rule.direct:
        state.replay = s.chain[id(x)][1]
    result = Redistribute.apply(x, state, s)
    state.z = s.hold(result)
    s.remember(result, state)
    return result


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   offs: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch._grouped_mm(x, weight, offs)`` as a layer function ``(x, weight, bias)`` for :class:`LayerCall`:
    rows ``offs[g-1]:offs[g]`` of ``x`` times ``weight[g]`` (one linear layer per group), plus a per-column
    ``bias`` (only the rules' modified forward passes use one)."""
    out = torch._grouped_mm(x, weight, offs=offs, out_dtype=out_dtype)
    return out if bias is None else out + bias


def grouped_mm(s: Session, func, name, args, kwargs, acts):
    """``torch._grouped_mm(x, W, offs)`` (``F.grouped_mm``: the experts of a mixture-of-experts layer, rows
    sorted by expert; ``W`` of shape (experts, in, out)): with constant weights one linear layer per group,
    which gets the composite's dense rule like ``F.linear`` (LRP-0/ε by gradient rescaling; z⁺, γ, αβ and the
    other rules through :class:`Redistribute`, whose forward and transposed passes are the grouped product with
    the modified weights). With input-dependent weights a product; other layouts (a batched 3-D input, groups
    along the inner dimension) are linear in the input and pass with their gradient (LRP-0). A grouped ``bias``
    is reported unknown."""
    x, weight = args[0], args[1]
    rest = {**dict(zip(("offs", "bias", "out_dtype"), args[2:])), **kwargs}
    if rest.get("bias") is not None:
        return classify_plain(s, func, f"{name}:bias", args, kwargs, acts)
    if not s.is_activation(x) or s.is_activation(weight) or x.ndim != 2 or weight.ndim != 3:
        return product(s, func, name, args, kwargs, acts)
    base = weight._base if weight._is_view() else weight  # the parameter, where the weight is its transpose
    with _owned_like(s, weight, base):
        _, rule = layer_rule(s, name, x, weight)
    call = LayerCall(grouped_linear, name, (), {"offs": rest.get("offs"), "out_dtype": rest.get("out_dtype")})
    return _apply_rule(s, rule, call, x, weight, None, -1)


def _channel_view(b: torch.Tensor, ndim: int, channel: int) -> torch.Tensor:
    return b if channel == -1 or ndim <= 2 else b.view(-1, *([1] * (ndim - 2)))


def _plain_layer(s: Session, out: torch.Tensor, rule, bias, channel: int, name: str,
                 rows: torch.Tensor | None = None) -> torch.Tensor:
    """LRP-0 and ε: the contributions are those of the plain layer; only the output gradient is rescaled
    (``rows``: the sample of each row of ``out``, where dimension 0 is not the batch)."""
    b = None if bias is None else _channel_view(bias.detach(), out.ndim, channel)
    if rule.epsilon == 0:
        if b is not None:
            out.register_hook(lambda g: s.absorb(channel_dot(g, b), f"{name}:{rule.name}", rows))
        return out
    held, eps = s.hold(out), rule.epsilon
    state = LayerState(rule, name)
    state.bias, state.extra["channel"], state.extra["epsilon"] = bias, channel, eps

    def hook(g: torch.Tensor) -> torch.Tensor:
        if state.folded:  # the BatchNorm output absorbs for the folded layer
            return g * state.scale_fold
        # ε rescaling z / (z + ε·sign z) = |z| / (|z| + ε), computed here so the forward pass costs nothing;
        # absorbed: ε·sign(z)·g·scale = ε·z·q with q = g / (|z| + ε), and the bias b·g·scale
        # one temporary of the output's size, which becomes the returned gradient (for a language model's
        # head, the logits: (L, vocabulary) per sample, often the largest tensor of the pass)
        z = held.get().detach()
        low = g.dtype in LOW_PRECISION  # float16/bfloat16: ε and g/(|z| + ε) in float32 (ε = 1e-6 would overflow)
        z, g_in = (z.float(), g.float()) if low else (z, g)
        q = torch.abs(z).add_(eps)
        q = torch.div(g_in, q, out=q)  # g has the output's shape
        absorbed = eps * (q * z).flatten(1).sum(1) if low else eps * sample_dot(q, z)
        scaled = q.mul_(-eps).add_(g_in)  # g − ε·g/(|z| + ε)
        if b is not None:
            absorbed = absorbed + channel_dot(scaled, b.float() if low else b)
        s.absorb(absorbed, f"{name}:{rule.name}", rows)
        return scaled.to(g.dtype) if low else scaled

    out.register_hook(hook)
    s.remember(out, state)
    return out


def batch_norm(s: Session, func, name, args, kwargs, acts):
    """Eval-mode BatchNorm whose input is a rule's layer output is folded into that layer's rule (no module
    change). The fold is used only if the BatchNorm turns out to be the layer output's only consumer."""
    x = args[0]
    params = dict(zip(("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
                      args))
    params.update(kwargs)
    affine = None if params.get("training", False) else _bn_affine(params, x.dtype)
    if affine is None:  # batch statistics: not an affine map of the sample
        s.coverage.add("linear", name)
        return func(*args, **kwargs)
    scale, shift = (_channel_view(t, x.ndim, 1) for t in affine)
    state = s.layers.get(id(x))
    foldable = (
        state is not None and state.fold is None and not state.kind.startswith("conv_transpose")
        and (x.ndim == 2 or state.extra["channel"] == 1)
    )
    if not foldable:  # an affine map: LRP-0 with the shift absorbing relevance
        s.coverage.add("linear", name)
        return watch(s, func(*args, **kwargs), lambda g: s.absorb(channel_dot(g, shift), "batch_norm:shift"))
    s.coverage.add("handled", f"{name}:folded")
    state.fold = (affine[0], affine[1] if state.bias is None else affine[0] * state.bias.detach() + affine[1])
    if "epsilon" in state.extra:  # ε: rescale by the folded output, absorb at the BatchNorm output
        out = func(*args, **kwargs)
        z, eps = out.detach(), state.rule.epsilon
        state.scale_fold = scale_factor(z, eps)
        absorb = state.scale_fold * (stabiliser(z, eps) + _channel_view(state.fold[1], out.ndim, 1))
        out.register_hook(lambda g: s.absorb(s.sample_dot(g, absorb), f"{state.kind}:{state.rule.name}")
                          if state.folded else s.absorb(channel_dot(g, shift), "batch_norm:shift"))
        return out
    result = FoldGate.apply(x, lambda t: func(t, *args[1:], **kwargs), state, s, scale, shift)
    state.z_fold = s.hold(result)
    s.fold_outputs[id(result)] = state
    return result


def _bn_affine(params: dict, dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    mean, var = params.get("running_mean"), params.get("running_var")
    if mean is None or var is None:
        return None
    scale = torch.rsqrt(var.detach() + params.get("eps", 1e-5)).to(dtype)
    weight, bias = params.get("weight"), params.get("bias")
    if weight is not None:
        scale = scale * weight.detach()
    shift = -mean.detach() * scale
    if bias is not None:
        shift = shift + bias.detach()
    return scale, shift


class Redistribute(torch.autograd.Function):
    """Forward: the layer output (computed here, no extra copy). Backward: the rule's modified gradient, or
    direct relevance for first-layer rules."""

    @staticmethod
    def forward(ctx, x, state: LayerState, session: Session):
        ctx.state, ctx.session = state, session
        ctx.save_for_backward(x)
        return state.layer.native(x, state.weight, state.bias)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        state, session = ctx.state, ctx.session
        weight, bias = state.weight, state.bias
        if state.folded:
            scale, bias = state.fold
            weight = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
            z = state.z_fold.get()
        else:
            z = state.z.get()
        rectifier = state.fused_rectifier()  # R at the rectifier's output: the same relevance, R_z = R_y
        relevance = torch.mul(z if rectifier is None else rectifier.get(), grad, out=session.buffer("relevance", z))
        direct = state.rule.direct
        constants = session.bounds(state.rule, state.replay) if direct else None
        rectified = state.rectified and session.composite.op_rule("relu") != "deconvnet"
        result, absorbed = redistribute(state.rule, state.layer, x, weight, bias, relevance, z, constants,
                                        nonnegative=state.extra.get("nonnegative", False), rectified=rectified)
        if direct:
            session.absorb(relevance.flatten(1).sum(1) - result.flatten(1).sum(1), f"{state.kind}:{state.rule.name}")
            session.write_direct(result, state.replay)
            return None, None, None
        if absorbed is None:
            absorbed = relevance.flatten(1).sum(1) - session.sample_dot(x.detach(), result)
        session.absorb(absorbed, f"{state.kind}:{state.rule.name}", state.extra.get("rows"))
        return result, None, None


class FoldGate(torch.autograd.Function):
    """Output of a BatchNorm folded into the preceding layer. Backward: the gradient passes unchanged to the
    layer (whose rule sees the folded layer) when the fold holds; otherwise the BatchNorm's own gradient
    ``scale ⊙ g`` with its shift absorbing ``shift ⊙ g``."""

    @staticmethod
    def forward(ctx, x, norm: Callable, state: LayerState, session: Session, scale, shift):
        ctx.state, ctx.session, ctx.affine = state, session, (scale, shift)
        return norm(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.state.folded:
            return grad, None, None, None, None, None
        scale, shift = ctx.affine
        ctx.session.absorb((grad * shift).flatten(1).sum(1), "batch_norm:shift")
        return grad * scale, None, None, None, None, None


class FirstRuleCheck:
    """Warns, after the forward pass, when the composite's first-layer rule found no first layer."""

    def __init__(self, s: Session) -> None:
        self.s = s
        s.first_seen = False

    def __enter__(self) -> "FirstRuleCheck":
        return self

    def __exit__(self, *exc) -> None:
        rule = self.s.composite.first
        if exc[0] is None and rule is not None and not self.s.first_seen and self.s.layers is not None:
            warnings.warn(
                f"the first-layer rule {rule.name!r} of composite {self.s.composite.name!r} was applied to no layer: "
                "no linear or convolution layer reads the model input through index operations (padding, reshapes) "
                "or element-wise affine maps ((x - mean) / std); the model transforms its input otherwise before "
                "its first layer, so the layer rules were used there",
                UserWarning, stacklevel=2,
            )


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
    (a slice or transpose of it is a constant for the engine, not an activation: detached, or in training
    mode kept on the graph, so that the training loss reaches the parameter)."""
    if param is not None and weight is not param:
        weight = _constant(s, weight)
    if bias is not None and bias.grad_fn is not None:
        bias = _constant(s, bias)
    with _owned_like(s, weight, param):
        return call(s, F.linear, x, weight, bias)


def _constant(s: Session, t: torch.Tensor) -> torch.Tensor:
    """``t``, computed from parameters only, as a constant of the session."""
    if not s.differentiable:
        return t.detach()
    s.constants[id(t)] = t
    return t


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
