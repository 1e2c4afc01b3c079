"""One call of a linear or convolutional layer as a linear map of its input, for the rules of :mod:`.rules`.

A rule needs the layer with other weights in both directions: ``layer(x, W)`` (the forward of modified
contributions) and the transposed map ``Wᵀ s`` (the input gradient of ``x ↦ layer(x, W)`` for an output signal
``s``). :class:`LayerCall` gives both without building an autograd graph. Pointwise (1×1) convolutions run as
batched matrix products: on CPU up to 3.5× faster than torch's convolution kernels in the default memory
layout on ResNet's bottleneck shapes, about as fast elsewhere (``benchmarks/results/lrp.md``). The model's
own forward pass is left as it is.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

#: positional parameters after (input, weight, bias) of F.convNd and F.conv_transposeNd
_CONV_PARAMS = ("stride", "padding", "dilation", "groups")
_TRANSPOSE_PARAMS = ("stride", "padding", "output_padding", "groups", "dilation")
_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0}


class LayerCall:
    """``func(x, weight, bias, *args, **kwargs)`` for one of F.linear, F.convNd, F.conv_transposeNd.

    Parameters
    ----------
    func, name : the torch function and its op name (``"linear"``, ``"conv2d"``, ...)
    args, kwargs : the call's arguments after input, weight and bias (stride, padding, ...)
    """

    def __init__(self, func: Callable, name: str, args: tuple = (), kwargs: dict | None = None,
                 kernel: tuple[int, ...] = ()) -> None:
        self.func, self.name, self.args, self.kwargs = func, name, tuple(args), dict(kwargs or {})
        self.transposed = name.startswith("conv_transpose")
        self.conv = _conv_params(name, self.args, self.kwargs) if name.startswith("conv") else None
        #: strides of a 1×1 convolution without padding or groups (run as a matrix product), else None
        self.pointwise: list[int] | None = None
        if self.conv is not None and not self.transposed and all(k == 1 for k in kernel):
            stride, padding, _, _, groups = self.conv
            self.pointwise = stride if groups == 1 and not any(padding) else None

    def native(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The call as the model makes it."""
        return self.func(x, weight, bias, *self.args, **self.kwargs)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The layer with other weights (a fresh tensor)."""
        if self.pointwise:
            out = self._matmul(weight, self._strided(x))
            return out if bias is None else out.add_(self.channel_view(bias, out.ndim))
        return self.native(x, weight, bias)

    def transpose(self, signal: torch.Tensor, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Wᵀ signal``: the gradient at ``x`` (only its shape is used) of ``⟨signal, layer(x, W)⟩``."""
        if self._outputs_alike(weight):  # every output has the same weights (flat rule): Wᵀs = w₁ᵀ Σ_j s_j
            signal, weight = signal.sum(-1 if self.name == "linear" else 1, keepdim=True), weight[:1]
        if self.name == "linear":
            return signal @ weight
        if self.pointwise:
            grad = self._matmul(weight.flatten(1).t(), signal)
            if all(s == 1 for s in self.pointwise):
                return grad
            full = grad.new_zeros(x.shape)
            full[self._strides()] = grad
            return full
        if self.conv is None:  # parameters the native backward cannot take ("same" padding)
            leaf = torch.zeros_like(x).requires_grad_(True)
            with torch.enable_grad():
                return torch.autograd.grad(self(leaf, weight), leaf, signal)[0]
        stride, padding, dilation, output_padding, groups = self.conv
        return torch.ops.aten.convolution_backward(
            signal, x, weight, None, stride, padding, dilation, self.transposed, output_padding, groups,
            (True, False, False))[0]

    def _outputs_alike(self, weight: torch.Tensor) -> bool:
        """All output channels share one weight slice (dense, or convolution without groups)."""
        if weight.shape[0] < 2 or not self.stackable or not torch.equal(weight[0], weight[-1]):
            return False
        return bool((weight == weight[:1]).all())

    @property
    def stackable(self) -> bool:
        """Several weights can run as one call, stacked along the channels (dense, or convolution without
        groups): cheaper than separate calls where the channels are few (the products are memory-bound)."""
        return self.name == "linear" or (self.conv is not None and not self.transposed and self.conv[-1] == 1)

    def forward_sum(self, inputs: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
        """``Σ_k layer(inputs[k], weights[k])`` without bias (a fresh tensor), as one call when stackable."""
        if len(inputs) > 1 and self.stackable:
            dim = -1 if self.name == "linear" else 1
            return self(torch.cat(inputs, dim), torch.cat(weights, 1))
        total = self(inputs[0], weights[0])
        for x, w in zip(inputs[1:], weights[1:]):
            total.add_(self(x, w))
        return total

    def transpose_each(self, signal: torch.Tensor, weights: list[torch.Tensor], x: torch.Tensor) -> list:
        """``[W_kᵀ s for each k]`` (stacked along the input channels when stackable)."""
        if len(weights) > 1 and self.stackable:
            dim = -1 if self.name == "linear" else 1
            shape = list(x.shape)
            shape[dim] *= len(weights)
            return list(self.transpose(signal, torch.cat(weights, 1), x.new_empty(shape)).chunk(len(weights), dim))
        return [self.transpose(signal, w, x) for w in weights]

    def channels(self, out: torch.Tensor) -> int:
        """The number of output channels of an output ``out``."""
        return out.shape[1] if self.name.startswith("conv") else out.shape[-1]

    def channel_view(self, v: torch.Tensor, ndim: int) -> torch.Tensor:
        """A per-output-channel vector shaped to broadcast against the layer output."""
        return v.view(-1, *([1] * (ndim - 2))) if self.name.startswith("conv") else v

    def _strides(self) -> tuple:
        return (..., *(slice(None, None, s) for s in self.pointwise))

    def _strided(self, x: torch.Tensor) -> torch.Tensor:
        return x if all(s == 1 for s in self.pointwise) else x[self._strides()]

    @staticmethod
    def _matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``weight (C_out, C_in, 1, ...) · x (N, C_in, *spatial)`` over the channels at every position."""
        rows = x.flatten(2)  # (N, C_in, positions); bmm with the weight broadcast (matmul would copy it)
        out = torch.bmm(weight.flatten(1).expand(rows.shape[0], -1, -1), rows)
        return out.view(x.shape[0], -1, *x.shape[2:])


def _conv_params(name: str, args: tuple, kwargs: dict) -> tuple | None:
    """(stride, padding, dilation, output_padding, groups) as the native convolution backward takes them, or
    None for string padding "same" (which needs the kernel size; the autograd fallback handles it)."""
    order = _TRANSPOSE_PARAMS if name.startswith("conv_transpose") else _CONV_PARAMS
    params = {**_DEFAULTS, **dict(zip(order, args)), **{k: v for k, v in kwargs.items() if k in order}}
    dims = int(name[-2])

    def expand(value: Any) -> list[int]:
        return [int(value)] * dims if isinstance(value, int) else [int(v) for v in value]

    padding = params["padding"]
    if padding == "same":
        return None
    padding = 0 if padding == "valid" else padding
    stride, dilation, output_padding = (expand(params[k]) for k in ("stride", "dilation", "output_padding"))
    return stride, expand(padding), dilation, output_padding, int(params["groups"])


def channel_dot(g: torch.Tensor, per_channel: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ g ⊙ v`` for a per-channel ``v`` (broadcast view), without an element-wise product: a
    view ``(C, 1, ..., 1)`` has its channels at dimension 1 (convolutions), a vector ``(C,)`` at the last
    dimension (dense layers on ``(N, ..., C)``, LayerNorm)."""
    v = per_channel.reshape(-1)
    if g.ndim <= 2 or per_channel.numel() == 1:
        return (g * per_channel).flatten(1).sum(1)
    if per_channel.ndim == 1:
        return (g.reshape(g.shape[0], -1, v.numel()) @ v).sum(1)
    return g.flatten(2).sum(2) @ v
