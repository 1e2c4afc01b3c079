"""Operation handlers of the propagation engine: one small function per kind of operation.

Each handler receives ``(session, func, name, args, kwargs, activations)``, returns the operation's value
and records what it did in the coverage report. Operations that are linear or positively homogeneous of
degree 1 in their activation inputs need no handler: plain gradient × input already redistributes their
relevance (the ``LINEAR`` set).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .layers import LayerCall, channel_dot
from .engine import FoldGate, LayerState, Redistribute, Session, _rectifies, is_inplace, tensors_in
from .rules import Rule, scale_factor, stabiliser

#: safe under input × gradient (linear, or positively homogeneous of degree 1, or selecting/moving values)
INDEX_OPS = {
    "reshape", "view", "view_as", "flatten", "unflatten", "permute", "transpose", "swapaxes", "movedim", "t", "T",
    "mT", "contiguous", "squeeze", "unsqueeze", "getitem", "narrow", "select", "clone", "to", "type", "type_as",
    "float", "double", "half", "bfloat16", "pad", "constant_pad_nd", "expand", "expand_as",
}
LINEAR = INDEX_OPS | {
    "add", "sub", "rsub", "neg", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack",
    "repeat", "tile", "split", "split_with_sizes", "chunk", "unbind", "index_select", "gather",
    "take_along_dim", "setitem", "masked_fill", "where", "roll", "flip", "sum", "mean", "relu", "leaky_relu",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold",
    "max", "amax", "min", "amin", "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "batch_norm", "mul", "div", "matmul", "mm", "bmm", "einsum",
    "embedding", "identity",
}
LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
NONLINEAR = {
    "gelu", "silu", "tanh", "sigmoid", "elu", "selu", "celu", "softplus", "mish", "hardswish", "hardsigmoid",
    "hardtanh", "relu6", "logsigmoid", "softsign", "tanhshrink",
}
GATES = {"sigmoid", "hardsigmoid", "softmax"}
PRODUCTS = {"mul", "matmul", "mm", "bmm", "einsum"}


def classify_plain(s: Session, func: Callable, name: str, args: tuple, kwargs: dict, acts: list) -> Any:
    """Run an operation without a handler and record whether it is safe (linear) or unknown."""
    out = func(*args, **kwargs)
    if any(t.requires_grad for t in tensors_in(out)):
        s.coverage.add("linear" if name in LINEAR else "unknown", name)
        if name in INDEX_OPS and isinstance(out, torch.Tensor) and len(acts) == 1 and id(acts[0]) in s.chain:
            _extend_chain(s, func, args, kwargs, acts[0], out)
    return out


def _extend_chain(s: Session, func, args, kwargs, source: torch.Tensor, out: torch.Tensor) -> None:
    """Remember how ``out`` is computed from the model input by index operations (for first-layer rules)."""
    parent = s.chain[id(source)][1]

    def replay(base: torch.Tensor) -> torch.Tensor:
        value = parent(base)
        swap = lambda a: value if a is source else a  # noqa: E731
        return func(*[swap(a) for a in args], **{k: swap(v) for k, v in kwargs.items()})

    s.chain[id(out)] = (out, replay)


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
    channel = 1 if kind == "conv" else -1
    if rule.plain:
        return _plain_layer(s, func(*args, **kwargs), rule, bias, channel, name)
    call = LayerCall(func, name, rest_args, rest_kwargs, tuple(weight.shape[2:]))
    state = LayerState(rule, name, call, weight, bias,
                       extra={"channel": channel, "nonnegative": id(x) in s.nonnegative})
    if rule.direct:
        state.replay = s.chain[id(x)][1]
    result = Redistribute.apply(x, state, s)
    state.z = s.hold(result)
    s.remember(result, state)
    return result


def _channel_view(b: torch.Tensor, ndim: int, channel: int) -> torch.Tensor:
    return b if channel == -1 or ndim <= 2 else b.view(-1, *([1] * (ndim - 2)))


def _plain_layer(s: Session, out: torch.Tensor, rule, bias, channel: int, name: str) -> torch.Tensor:
    """LRP-0 and ε: the contributions are those of the plain layer; only the output gradient is rescaled."""
    b = None if bias is None else _channel_view(bias.detach(), out.ndim, channel)
    if rule.epsilon == 0:
        if b is not None:
            out.register_hook(lambda g: s.absorb(channel_dot(g, b)))
        return out
    held, eps = s.hold(out), rule.epsilon
    state = LayerState(rule, name)
    state.bias, state.extra["channel"], state.extra["epsilon"] = bias, channel, eps

    def hook(g: torch.Tensor) -> torch.Tensor:
        if state.folded:  # the BatchNorm output absorbs for the folded layer
            return g * state.scale_fold
        # ε rescaling z / (z + ε·sign z) = |z| / (|z| + ε), computed here so the forward pass costs nothing;
        # absorbed: ε·sign(z)·g·scale = ε·z·q with q = g / (|z| + ε), and the bias b·g·scale
        z = held.get().detach()
        q = torch.abs(z, out=s.buffer("epsilon", z)).add_(eps)
        q = torch.div(g, q, out=q) if q.shape == g.shape else g / q
        scaled = g.add(q, alpha=-eps)  # g − ε·g/(|z| + ε)
        absorbed = eps * s.sample_dot(q, z)
        s.absorb(absorbed if b is None else absorbed + channel_dot(scaled, b))
        return scaled

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
        out = func(*args, **kwargs)
        out.register_hook(lambda g: s.absorb(channel_dot(g, shift)))
        return out
    s.coverage.add("handled", f"{name}:folded")
    state.fold = (affine[0], affine[1] if state.bias is None else affine[0] * state.bias.detach() + affine[1])
    if "epsilon" in state.extra:  # ε: rescale by the folded output, absorb at the BatchNorm output
        out = func(*args, **kwargs)
        z, eps = out.detach(), state.rule.epsilon
        state.scale_fold = scale_factor(z, eps)
        absorb = state.scale_fold * (stabiliser(z, eps) + _channel_view(state.fold[1], out.ndim, 1))
        out.register_hook(lambda g: s.absorb(
            s.sample_dot(g, absorb) if state.folded else channel_dot(g, shift)))
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


def _out_of_place(func, name: str, args: tuple, kwargs: dict):
    """The same call without ``inplace=True`` (relevance rules need the input value after the op)."""
    if getattr(func, "__name__", "").endswith("_") and hasattr(torch.Tensor, name):
        func = getattr(torch.Tensor, name)
    args = tuple(False if (i > 0 and a is True) else a for i, a in enumerate(args))
    if kwargs.get("inplace"):
        kwargs = {**kwargs, "inplace": False}
    return func, args, kwargs


class _IdentityRule(torch.autograd.Function):
    """``y = f(x)``; backward passes ``g · f(x)/x`` so that ``R_x = R_y`` (0 where x = 0)."""

    @staticmethod
    def forward(ctx, x, fn, session: Session):
        out = fn(x)
        ctx.x, ctx.out = session.hold(x), session.hold(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _identity_gradient(grad, ctx.out.get(), ctx.x.get()), None, None


def _identity_gradient(grad: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``g · y/x`` (0 where x = 0): the gradient that passes ``R_x = R_y`` for ``y = f(x)``."""
    return (grad * y).div_(x).nan_to_num_(0.0, 0.0, 0.0)


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
            return (_identity_gradient(grad, y, ctx.x.get()), *none)
        return (torch.ops.aten.threshold_backward(grad, y, 0), *none)


def _rectify(s: Session, func, name: str, args: tuple, kwargs: dict, identity: bool) -> torch.Tensor | None:
    """A rectifier on a rule's layer output as a :class:`_Rectifier` (None for any other input)."""
    x = args[0] if args else kwargs.get("input")
    state, key = s.fold_outputs.get(id(x)), "fold"
    if state is None:
        state, key = s.layers.get(id(x)), "layer"
    if state is None or state.layer is None or key in state.overwritten or not _rectifies(name, args, kwargs):
        return None  # (an output changed in place, e.g. by a residual `+=`, is no longer the layer's)
    inplace = not identity and is_inplace(func, args, kwargs)
    if not inplace:
        func, args, kwargs = _out_of_place(func, name, args, kwargs)
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
    func, args, kwargs = _out_of_place(func, name, args, kwargs)
    x = args[0]
    if rule == "identity" and s.is_activation(x):
        out = _IdentityRule.apply(x, lambda t: func(t, *args[1:], **kwargs), s)
    else:
        out = func(*args, **kwargs)
    s.coverage.add("handled", f"{name}:{rule}")
    if name in GATES:
        s.tag_gate(out)
    return out


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
    func, args, kwargs = _out_of_place(func, name, args, kwargs)
    out = func(*args, **kwargs)
    if rule == "deconvnet":  # backward ignores the forward mask
        x = args[0]
        out = out.detach() + (x - x.detach())
    out.register_hook(lambda g: g.clamp(min=0))
    return out


def product(s: Session, func, name, args, kwargs, acts):
    """Products of activations: uniform split, or "signal takes all" when one factor is a gate."""
    if len(acts) < 2:  # scaling by a parameter or constant: linear
        return classify_plain(s, func, name, args, kwargs, acts)
    gates = {id(t) for t in acts if id(t) in s.gates}
    if gates and len(gates) < len(acts) and s.composite.op_rule("gate") == "signal_takes_all":
        def detach(a):
            if isinstance(a, (list, tuple)):
                return type(a)(detach(i) for i in a)
            return a.detach() if isinstance(a, torch.Tensor) and id(a) in gates else a

        s.coverage.add("handled", f"{name}:signal_takes_all")
        return func(*[detach(a) for a in args], **kwargs)
    rule = s.composite.op_rule("product")
    s.coverage.add("handled", f"{name}:{rule}")
    out = func(*args, **kwargs)
    if rule == "uniform":
        share = 1.0 / len(acts)
        out.register_hook(lambda g: g * share)
    return out


def div(s: Session, func, name, args, kwargs, acts):
    """Division by a constant is linear; division by an activation is not (reported as unknown)."""
    divisor = args[1] if len(args) > 1 else kwargs.get("other")
    label = "div_by_activation" if s.is_activation(divisor) else name
    return classify_plain(s, func, label, args, kwargs, acts)


def softmax(s: Session, func, name, args, kwargs, acts):
    """Softmax: Taylor rule (gradient × input) or detached (CP-LRP: no relevance through the weights)."""
    rule = s.composite.op_rule("softmax")
    out = func(*args, **kwargs)
    s.coverage.add("handled", f"{name}:{rule}")
    if rule == "detach":
        return out.detach()
    s.tag_gate(out)
    return out


class _FrozenScale(torch.autograd.Function):
    """A normalisation ``y = (x − μ)·r·w + b`` whose backward holds ``r = 1/σ`` constant (identity rule on
    the scaling): ``g_x = centre(g ⊙ w ⊙ r)``, without centring for RMSNorm. One native forward and two to
    four element-wise operations backward; the bias ``b`` absorbs ``Σ g ⊙ b``."""

    @staticmethod
    def forward(ctx, x, compute, weight, bias, groups, centre, session):
        out, r = compute(x)
        ctx.save_for_backward(r)
        ctx.weight, ctx.bias, ctx.groups, ctx.centre, ctx.session = weight, bias, groups, centre, session
        return out

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        weight, bias, groups = ctx.weight, ctx.bias, ctx.groups
        if bias is not None:
            ctx.session.absorb(channel_dot(g, bias))
        c = g if weight is None else g * weight
        if groups is None:  # LayerNorm / RMSNorm over the trailing dimensions where r has size 1
            c = c * r
            if ctx.centre:
                dims = tuple(i for i in range(r.ndim) if r.shape[i] == 1 and c.shape[i] != 1)
                c = c - c.mean(dims, keepdim=True)
            return c, None, None, None, None, None, None
        shape = c.shape  # GroupNorm: r is (N, groups)
        c = c.reshape(shape[0], groups, -1) * r[..., None]
        return (c - c.mean(2, keepdim=True)).reshape(shape), None, None, None, None, None, None


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
                             name != "rms_norm", s)
    if adaptive:
        from .sequence_ops import call

        if weight is not None:
            out = call(s, torch.mul, out, weight if channel == -1 else _channel_view(weight, x.ndim, 1))
        if bias is not None:
            out = call(s, torch.add, out, bias if channel == -1 else _channel_view(bias, x.ndim, 1))
    return out


HANDLERS: dict[str, Callable] = {
    **{n: layer for n in LAYER_OPS},
    "batch_norm": batch_norm,
    "relu": relu,
    **{n: nonlinear for n in NONLINEAR},
    **{n: product for n in PRODUCTS},
    "div": div,
    "softmax": softmax,
    **{n: norm for n in ("layer_norm", "group_norm", "rms_norm")},
}
