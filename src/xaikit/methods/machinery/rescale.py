"""DeepLIFT's Rescale rule as a modified gradient over paired forward passes (Shrikumar et al. 2017).

DeepLIFT explains ``f(x) − f(x̄)`` by the differences ``Δx = x − x̄`` from a reference ``x̄``. Its multipliers
``m = Δy/Δx`` obey the chain rule (Sec. 3.3 of the paper), and through a layer that is affine in its input
(linear, convolution, pooling by averages, BatchNorm on running statistics, sums, reshapes) the multiplier is
the layer's Jacobian, the plain gradient. DeepLIFT-Rescale is therefore the gradient of the network in which
every element-wise non-linearity ``y = σ(z)`` passes back ``g · Δy/Δz`` instead of ``g · σ'(z)`` (Sec. 3.5.1;
Ancona et al., ICLR 2018, Sec. 3.2), and the attribution is ``Δx ⊙ m`` (Eq. 1: ``Σ_i Δx_i m_i = Δt``,
summation-to-delta).

Why not a rule of the propagation engine: an engine rule sees one forward pass and redistributes relevance
with values of that pass; the Rescale multiplier needs every activation *paired with the reference's*
activation. Here the pairing is by rows: input rows and their references run as one batch ``[x; x̄]``
(``2M`` rows) under a :class:`torch.overrides.TorchFunctionMode` that replaces each element-wise
non-linearity by :class:`_Rescale`, whose backward reads the row ``i`` and the row ``M + i`` of its input and
output. The engine's operation tables (:mod:`xaikit.propagation.classify`) say which operations are
element-wise non-linearities and which are affine, so both places agree on what an operation is.

What is neither (max pooling, products of two activations, softmax, layer norms) is passed back with its
plain gradient, as the paper does for max pooling (Sec. 3.5.3 lists only the element-wise rules), and named
in a warning and in ``info["not_rescaled"]``: summation-to-delta then need not hold, and
``info["convergence_delta"]`` says by how much.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from ...batching import select_batch
from ...propagation.classify import INDEX_OPS, LINEAR, NONLINEAR, is_inplace, op_name, out_of_place, tensors_in
from ...targets import ResolvedTarget
from ...tokens import model_scores
from ..gradient import check_rows

#: element-wise non-linearities of one activation: the Rescale rule applies (``Δy/Δz``)
RESCALED = NONLINEAR | {"relu", "leaky_relu", "threshold", "rrelu", "prelu", "sqrt", "log", "log1p", "abs",
                        "erf", "square", "pow", "expm1", "exp2", "sin", "cos", "reciprocal", "clamp", "clip",
                        "clamp_min", "clamp_max"}
#: affine in one activation (or moving values), so the multiplier is the plain gradient
_AFFINE_ALWAYS = (LINEAR | INDEX_OPS) - {
    "mul", "div", "matmul", "mm", "bmm", "einsum", "max", "amax", "min", "amin", "topk", "sort", "msort",
    "relu", "leaky_relu", "scatter_reduce", "embedding_bag", "_grouped_mm",
} - {n for n in LINEAR if "max_pool" in n}
#: affine when only one operand is an activation (a product with a constant)
_AFFINE_ONE = {"mul", "div", "matmul", "mm", "bmm", "einsum", "linear", "conv1d", "conv2d", "conv3d"}
#: operations that do not change the values' meaning for the bookkeeping (no warning)
_QUIET = {"size", "dim", "shape", "numel", "__get__", "get", "ndim", "device", "dtype", "is_floating_point",
          "requires_grad_", "detach", "item", "tolist", "__len__", "len", "__bool__", "bool", "eq", "ne", "lt",
          "le", "gt", "ge", "argmax", "argmin", "isfinite", "isnan", "any", "all", "ones_like", "zeros_like",
          "empty_like", "full_like", "new_zeros", "new_ones", "new_full", "new_empty", "stride", "data_ptr",
          "storage_offset", "is_contiguous", "element_size", "__format__", "__repr__", "__hash__", "dropout"}


class _Rescale(torch.autograd.Function):
    """``y = σ(z)`` over ``[z; z̄]``; backward: rows ``:M`` get ``g · Δy/Δz`` (``g · σ'(z)`` where ``|Δz| ≤ eps``),
    the reference rows ``M:`` get nothing (the reference is a constant of the explanation). The values are held
    as detached copies, so that an in-place call may then write ``y`` into ``z``."""

    @staticmethod
    def forward(ctx, z, fn, pairs, eps):
        out = fn(z)
        ctx.z, ctx.out = z.detach().clone(), out.detach().clone()
        ctx.fn, ctx.pairs, ctx.eps = fn, pairs, eps
        return out

    @staticmethod
    def backward(ctx, grad):
        z, out = ctx.z, ctx.out
        m = ctx.pairs
        dz, dy = z[:m] - z[m:], out[:m] - out[m:]
        with torch.enable_grad():
            leaf = z[:m].detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(ctx.fn(leaf).sum(), leaf)
        far = dz.abs() > ctx.eps
        multiplier = torch.where(far, dy / torch.where(far, dz, torch.ones_like(dz)), slope)
        return torch.cat([grad[:m] * multiplier, torch.zeros_like(grad[m:])]), None, None, None


@dataclass
class _Pairing(TorchFunctionMode):
    """The Rescale rule on every element-wise non-linearity of the activations of ``2M`` paired rows."""

    pairs: int
    eps: float
    not_rescaled: set[str] = field(default_factory=set)
    activations: set[int] = field(default_factory=set)
    #: the tracked tensors themselves, held for the pass so that no id is reused by another tensor
    kept: list = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def track(self, value: Any) -> None:
        for t in tensors_in(value):
            self.activations.add(id(t))
            self.kept.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        inputs = [t for t in tensors_in((args, kwargs)) if id(t) in self.activations]
        if not inputs:
            return func(*args, **kwargs)
        first = args[0] if args else None
        own = isinstance(first, torch.Tensor) and id(first) in self.activations
        # ``c / z`` and ``c ** z`` (``__rdiv__``, ``__rpow__``: z is the first argument) are non-linear in z
        reflected = getattr(func, "__name__", "") in ("__rtruediv__", "__rdiv__", "__rpow__")
        if (name in RESCALED or reflected) and own and len(inputs) == 1:
            z = args[0]
            if z.ndim == 0 or z.shape[0] != 2 * self.pairs:
                raise ValueError(
                    f"DeepLIFT pairs each activation with its reference by rows, but {name} received an activation "
                    f"of shape {tuple(z.shape)} whose first dimension is not the batch ({2 * self.pairs} rows of "
                    "inputs and references); explain a model whose activations keep the batch first"
                )
            inplace = is_inplace(func, args, kwargs)
            if inplace:
                func, args, kwargs = out_of_place(func, name, args, kwargs)
            rest = args[1:]
            out = _Rescale.apply(z, functools.partial(_call_rest, func, rest, kwargs), self.pairs, self.eps)
            if inplace:  # ``h.relu_()`` whose result is not used: h itself must hold σ(h), rescaled backwards
                z.copy_(out)
                out = z
        else:
            affine_one = name in _AFFINE_ONE and len(inputs) == 1 and (name != "div" or own)  # not c / z
            if not (name in _AFFINE_ALWAYS or affine_one or name in _QUIET):
                self.not_rescaled.add(name)
            out = func(*args, **kwargs)
        if name not in _QUIET:
            self.track(out)
        return out


def _call_rest(func: Callable, rest: tuple, kwargs: dict, z: torch.Tensor) -> torch.Tensor:
    return func(z, *rest, **kwargs)


@dataclass
class Multipliers:
    """What one paired pass returns: the multipliers at the input rows and the explained scores."""

    grad: torch.Tensor  #: (M, ...) DeepLIFT multipliers ∂^Rescale f_t/∂x at the input rows
    score: torch.Tensor  #: (M,) f_t(x)
    base: torch.Tensor  #: (M,) f_t(x̄)
    output: torch.Tensor  #: (M, ...) f(x), detached
    not_rescaled: set[str]


def multipliers(model: Callable, x: torch.Tensor, reference: torch.Tensor, target: ResolvedTarget,
                forward_args: tuple, forward_kwargs: dict, eps: float) -> Multipliers:
    """The Rescale multipliers of ``M`` rows of ``x`` against the matched rows of ``reference`` (one forward pass
    of ``[x; reference]``, one backward pass); ``target`` is resolved for the ``M`` rows."""
    m = x.shape[0]
    x_leaf = x.detach().requires_grad_(True)
    both = torch.cat([x_leaf, reference.detach().to(x.dtype)])
    twice = torch.cat([torch.arange(m), torch.arange(m)])
    args, kwargs = select_batch(forward_args, twice, m), select_batch(forward_kwargs, twice, m)
    mode = _Pairing(m, eps)
    with torch.enable_grad():
        mode.track(both)
        with mode:
            output = model_scores(model(both, *args, **kwargs))
        mode.kept.clear()
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the model returned {type(output).__name__}; wrap it so that it returns a tensor of "
                            "scores")
        check_rows(output, both)
        score, base = target.score(output[:m]), target.score(output[m:])
        if not score.requires_grad:
            raise ValueError("the model output does not depend differentiably on x; DeepLIFT needs a differentiable "
                             "model")
        (grad,) = torch.autograd.grad(score.sum(), x_leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x)
    return Multipliers(grad, score.detach(), base.detach(), output[:m].detach(), mode.not_rescaled)


def warn_not_rescaled(names: set[str], method: str) -> None:
    """Warn that operations without a Rescale rule were passed back with their gradient."""
    if names:
        warnings.warn(
            f"{method}: operations without a Rescale rule were passed back with their gradient "
            f"({', '.join(sorted(names))}); the attributions need not sum to f(x) - f(reference): see "
            "expl.info['convergence_delta']", stacklevel=5)
