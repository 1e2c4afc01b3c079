"""What the engine knows about torch operations, by name: which ones modify their input in place, which are
safe under input × gradient, which keep a tensor non-negative, and the operation families the handlers serve.

Everything here is a table or reads one; nothing depends on a session. In-place detection reads
:data:`INPLACE_FLAG` (the position of each functional's ``inplace`` parameter) and PyTorch's naming of
in-place methods (``add_``, ``__iadd__``, ``__setitem__``); a positional ``True`` elsewhere (``x.sum(1, True)``'s
keepdim, ``F.dropout(x, p, True)``'s training flag) is an ordinary argument.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

def op_name(func: Callable) -> str:
    """Normalised op name: ``__iadd__``/``add_``/``__radd__`` -> ``add``; ``Tensor.T.__get__`` -> ``T``."""
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return getattr(owner, "__name__", "get")
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name[:1] in ("i", "r") and name[1:] in _DUNDER:
            name = name[1:]
        return {"truediv": "div", "floordiv": "floor_divide"}.get(name, name)
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


_DUNDER = {"add", "sub", "mul", "truediv", "matmul", "floordiv", "pow", "and", "or", "xor", "mod"}


def tensors_in(obj: Any):
    """All tensors in nested args (lists/tuples/dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


#: functionals with an ``inplace`` parameter -> its position (tested against their signatures)
INPLACE_FLAG: dict[Callable, int] = {
    F.relu: 1, F.relu6: 1, F.selu: 1, F.silu: 1, F.mish: 1, F.hardswish: 1, F.hardsigmoid: 1,
    F.elu: 2, F.celu: 2, F.leaky_relu: 2,
    F.hardtanh: 3, F.threshold: 3, F.dropout: 3, F.dropout1d: 3, F.dropout2d: 3, F.dropout3d: 3,
    F.alpha_dropout: 3, F.feature_alpha_dropout: 3,
    F.rrelu: 4,
}


def _inplace_method(func: Callable) -> bool:
    """PyTorch's in-place methods: ``add_``, ``relu_``, ``__iadd__``, ``__setitem__``."""
    name = getattr(func, "__name__", "")
    if (name.startswith("__i") and name.endswith("__")) or name == "__setitem__":
        return True
    return name.endswith("_") and not name.endswith("__")


def is_inplace(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether a call modifies its first argument in place: an in-place method, or a functional of
    :data:`INPLACE_FLAG` called with ``inplace=True`` (by keyword or at its position)."""
    if _inplace_method(func):
        return True
    position = INPLACE_FLAG.get(func)
    if position is None:
        return False
    return kwargs.get("inplace") is True or (len(args) > position and args[position] is True)


def out_of_place(func, name: str, args: tuple, kwargs: dict):
    """The same call without ``inplace=True`` (relevance rules need the input value after the op);
    ``x.add_(y)`` and ``x += y`` become ``x.add(y)``."""
    position = INPLACE_FLAG.get(func)
    if _inplace_method(func) and hasattr(torch.Tensor, name):
        func = getattr(torch.Tensor, name)
    elif position is not None and len(args) > position and args[position] is True:
        args = (*args[:position], False, *args[position + 1:])
    if kwargs.get("inplace"):
        kwargs = {**kwargs, "inplace": False}
    return func, args, kwargs



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
    "embedding", "identity", "cumsum", "copy",
    # selections, and linear maps that move or sum values by index; the handlers of scatter_reduce,
    # embedding_bag and _grouped_mm report their non-linear forms otherwise (handlers.scatter, handlers.layers)
    "topk", "sort", "msort", "tensor_split", "repeat_interleave", "view_as_real", "view_as_complex",
    "index_add", "scatter_add", "scatter_reduce", "embedding_bag", "_grouped_mm",
    # sparse-dense products (a graph's normalised adjacency times node features: torch.sparse.mm, spmm)
    "_sparse_mm", "spmm",
}
LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
NONLINEAR = {
    "gelu", "silu", "tanh", "sigmoid", "elu", "selu", "celu", "softplus", "mish", "hardswish", "hardsigmoid",
    "hardtanh", "relu6", "logsigmoid", "softsign", "tanhshrink", "exp",
}
#: outputs that are data-dependent weights, not the signal: the gate rule applies where they multiply one
#: (``exp``/``softplus``: the decays and steps of selective scans, see :mod:`.handlers.scan`)
GATES = {"sigmoid", "hardsigmoid", "softmax", "exp", "softplus"}
#: operations that only select, move or copy values: a gate seen through them is still a gate
GATE_VIEWS = INDEX_OPS | {
    "repeat", "repeat_interleave", "tile", "chunk", "split", "split_with_sizes", "unbind", "cat", "concat", "stack",
    "flip", "roll", "index_select", "gather", "topk", "sort", "msort", "tensor_split",
}
#: element-wise operations through which a gate stays a gate when its other operands are constants, other gates
#: or statistics of gates: masking (``masked_fill``, ``where``, a product with a mask), scaling by a constant,
#: renormalising by its own sum, clamping (sorting and top-k selection are in :data:`GATE_VIEWS`)
GATE_KEEPING = {"mul", "div", "masked_fill", "where", "clamp", "clamp_min", "clamp_max", "clip", "nan_to_num",
                "kthvalue"}
#: arithmetic through which gates stay gates when all its activation operands are gates (RWKV's denominator
#: ``e₁·d + e₂``, Mamba-2's ``cumsum(Δ·A)``; see :mod:`.handlers.scan`)
GATE_ARITHMETIC = {"add", "mul", "div", "sum", "nansum", "cumsum", "cumprod", "clamp", "clip", "clamp_min",
                   "clamp_max", "maximum", "minimum", "fmax", "fmin"}
PRODUCTS = {"mul", "matmul", "mm", "bmm", "einsum", "_sparse_mm", "spmm"}
#: element-wise affine maps of an activation by constants (``(x - mean) / std`` in a model's forward)
AFFINE = {"add", "sub", "rsub", "mul", "div", "neg"}



#: operations that act element by element (an element-wise function of one tensor may use only these)
POINTWISE = NONLINEAR | {
    "add", "sub", "rsub", "mul", "div", "div_by_activation", "neg", "pow", "sqrt", "rsqrt", "exp", "exp2",
    "expm1", "log", "log1p", "erf", "erfc", "abs", "clamp", "clip", "relu", "leaky_relu", "where", "maximum",
    "minimum", "square", "reciprocal", "sign", "sin", "cos", "to", "float", "double", "half", "bfloat16",
    "type", "type_as", "contiguous", "clone",
}


#: operations whose output is ≥ 0 whenever all their activation inputs are
KEEPS_NONNEGATIVE = {
    "reshape", "view", "view_as", "flatten", "unflatten", "permute", "transpose", "contiguous", "squeeze",
    "unsqueeze", "getitem", "narrow", "select", "clone", "to", "float", "expand", "expand_as", "cat", "concat",
    "stack", "add", "mul", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "dropout", "dropout2d",
    "interpolate", "relu", "pad", "constant_pad_nd",
}
_NONNEGATIVE_SOURCES = {"relu", "relu6", "sigmoid", "softmax", "hardsigmoid", "softplus"}


def constants_nonnegative(name: str, args: tuple, kwargs: dict, activations: list) -> bool:
    """The other operands of a sum, product or concatenation (constants, numbers) are ≥ 0 too."""
    if name in ("pad", "constant_pad_nd"):  # the fill value of constant padding
        value = kwargs.get("value", args[3] if name == "pad" and len(args) > 3 else
                           args[2] if name == "constant_pad_nd" and len(args) > 2 else 0)
        return value is None or value >= 0
    if name not in ("add", "mul", "cat", "concat", "stack"):
        return True
    acts = {id(t) for t in activations}
    for value in (*args, *kwargs.values(), *(args[0] if args and isinstance(args[0], (list, tuple)) else ())):
        if isinstance(value, torch.Tensor) and id(value) not in acts and value.is_floating_point():
            if not bool((value >= 0).all()):
                return False
        elif name in ("add", "mul") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value < 0:  # (for cat/stack, numbers are dimensions)
            return False
    return True


def makes_nonnegative(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _NONNEGATIVE_SOURCES:
        return True
    if name == "hardtanh":  # ReLU6 is hardtanh(x, 0, 6)
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return isinstance(low, (int, float)) and low >= 0
    return False


def rectifies(name: str, args: tuple, kwargs: dict) -> bool:
    """ReLU and ReLU6 (hardtanh from 0): their gradient, as every rule passes it, is zero for negative inputs."""
    return name == "relu" or (name in ("relu6", "hardtanh") and makes_nonnegative(name, args, kwargs))
