"""Baselines: the "absent" value of an input, shared by IG, Occlusion, RISE, LIME, Shapley and perturbation.

A baseline spec is one of

- a number: every element set to it;
- ``"zero"``: zeros;
- ``"mean"``: each sample's mean over everything but the channel dimension (dim 1) for inputs of rank ≥ 3
  (per-channel mean colour of an image), over all features for rank-2 (tabular) inputs;
- ``"blur"`` or ``"blur:σ"``: each sample blurred with a Gaussian of standard deviation σ elements
  (default 10) over its spatial dimensions (all dimensions after the channel dimension), as used by
  Fong & Vedaldi (2017) and by Sturmfels et al. (2020) for Integrated Gradients;
- a tensor broadcastable to ``x`` (e.g. shaped like ``x``, like one sample, or ``(1, C, 1, 1)``).

Nothing here depends on the batch mates of a sample.
"""
from __future__ import annotations

import math
from typing import Any, Union

import torch
import torch.nn.functional as F

BaselineSpec = Union[float, int, str, torch.Tensor]

#: default standard deviation (in elements) of the "blur" baseline: Fong & Vedaldi's σ0 = 10 at 224×224
BLUR_SIGMA = 10.0


def resolve_baseline(baseline: BaselineSpec, x: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """The baseline for ``x`` as a tensor of ``x``'s shape, dtype and device (possibly a broadcast view)."""
    if isinstance(baseline, bool):
        raise TypeError(f"{name} must be a number, a tensor, 'zero', 'mean' or 'blur', got bool")
    if isinstance(baseline, (int, float)):
        if not math.isfinite(baseline):
            raise ValueError(f"{name} must be finite, got {baseline!r}")
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, str):
        kind, _, arg = baseline.partition(":")
        if kind == "zero" and not arg:
            return torch.zeros_like(x)
        if kind == "mean" and not arg:
            dims = tuple(range(2, x.ndim)) if x.ndim >= 3 else tuple(range(1, x.ndim))
            return x.mean(dims, keepdim=True).expand_as(x) if dims else x.clone()
        if kind == "blur":
            try:
                sigma = float(arg) if arg else BLUR_SIGMA
            except ValueError:
                sigma = -1.0
            if not (sigma > 0 and math.isfinite(sigma)):
                raise ValueError(f"{name} {baseline!r}: the blur width must be a positive number, e.g. 'blur:10'")
            if x.ndim < 3:
                raise ValueError(
                    f"{name} 'blur' needs inputs with spatial dimensions (N, C, ...), got shape {tuple(x.shape)}; "
                    "use 'zero', 'mean', a number or a tensor for tabular data"
                )
            return gaussian_blur(x, sigma)
        raise ValueError(f"unknown {name} {baseline!r}; valid: a number, a tensor, 'zero', 'mean', 'blur', 'blur:<sigma>'")
    if isinstance(baseline, torch.Tensor):
        return _tensor_baseline(baseline, x, name)
    raise TypeError(
        f"{name} must be a number, a tensor, 'zero', 'mean' or 'blur', got {type(baseline).__name__}"
    )


def describe_baseline(baseline: BaselineSpec) -> str | float:
    """A short description of a baseline spec for ``Explanation.info``."""
    return baseline if isinstance(baseline, (str, int, float)) else f"tensor{tuple(baseline.shape)}"


def _check_reference(value: torch.Tensor, x: torch.Tensor, name: str) -> None:
    """A reference tensor (baseline, background) of ``x``: floating point, on ``x``'s device, finite."""
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.device != x.device:
        raise ValueError(f"{name} is on device {value.device} but x is on {x.device}; move it with .to('{x.device}')")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _tensor_baseline(baseline: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    _check_reference(baseline, x, name)
    try:
        shape = torch.broadcast_shapes(baseline.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"{name} of shape {tuple(baseline.shape)} does not fit x of shape {tuple(x.shape)}: give a tensor "
            f"shaped like x, like one sample {tuple(x.shape[1:])}, or broadcastable to x"
        )
    return baseline.to(x.dtype).expand_as(x)


def resolve_background(background: Any, x: torch.Tensor, name: str = "background") -> torch.Tensor:
    """A background data set ``(B, *x.shape[1:])`` as ``(1, B, *x.shape[1:])`` (shared by all samples)."""
    if not isinstance(background, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of reference samples (B, ...), got {type(background).__name__}")
    if background.ndim != x.ndim or background.shape[1:] != x.shape[1:] or background.shape[0] == 0:
        raise ValueError(
            f"{name} must hold B ≥ 1 reference samples shaped like the samples of x, i.e. (B, "
            f"{', '.join(map(str, x.shape[1:]))}), got {tuple(background.shape)}"
        )
    _check_reference(background, x, name)
    return background.to(x.dtype)[None]


def gaussian_kernel(sigma: float, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma``, truncated at 3σ and at ``size`` taps per side."""
    radius = max(1, min(int(math.ceil(3 * sigma)), size))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` (N, C, *spatial) over every spatial dimension: xaikit's one blur.

    Used by the ``"blur"`` baselines of the methods and of the metrics and by the SSIM window of the
    randomisation metrics. The kernel (σ in elements) is truncated at 3σ and at the dimension's size and
    renormalised, so a constant input stays constant; the edges are padded by replicating the border element
    (VLFeat's "continuity" padding, as in Fong & Vedaldi 2017).
    """
    out = x
    for dim in range(2, x.ndim):
        size = x.shape[dim]
        kernel = gaussian_kernel(sigma, size, x.dtype, x.device)
        radius = kernel.numel() // 2
        moved = out.movedim(dim, -1)
        lead = moved.shape[:-1]
        flat = moved.reshape(-1, 1, size)
        flat = F.conv1d(F.pad(flat, (radius, radius), mode="replicate"), kernel.view(1, 1, -1))
        out = flat.reshape(*lead, size).movedim(-1, dim)
    return out.contiguous()
