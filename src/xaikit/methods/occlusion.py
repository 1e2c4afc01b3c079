"""Occlusion (Zeiler & Fergus 2014): slide a baseline patch over the input and record the drop of the score."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import check_positive
from .base import register
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from .machinery.features import LazyInputs, perturb
from .machinery.scoring import _ForwardMethod


@register
class Occlusion(_ForwardMethod):
    """Occlusion sensitivity (Zeiler & Fergus 2014, Sec. 4.2).

    Every window position replaces a patch of the input by the baseline; the attribution of an element is
    the mean, over the windows that cover it, of ``f(x) - f(x with the window occluded)``.

    Parameters
    ----------
    model : nn.Module
    window : int or tuple, optional
        Patch size. An int applies to every spatial dimension (all dimensions after the channel dimension, or
        the feature dimension of tabular inputs) and the patch spans all channels; a tuple gives one size per
        spatial dimension, or one per sample dimension including channels. Default: 16 on inputs with spatial
        dimensions (clipped to their size), 1 on tabular inputs.
    stride : int or tuple, optional
        Step between windows (same forms as ``window``; default: the window, i.e. non-overlapping). The last
        window of each dimension is aligned with its end so every element is covered.
    baseline : number, tensor, "zero", "mean" or "blur"
        What an occluded patch shows (default ``"zero"``: a grey patch for inputs centred at 0).
    batch_size : int or "auto"
        Perturbed inputs per forward pass; ``"auto"`` times chunk sizes and keeps the fastest.
    progress : bool
        Show a progress bar.

    Notes
    -----
    Cost: ``N * (1 + windows)`` forward passes, no backward pass; ``expl.info["windows"]`` is the number of
    windows per sample. All windows of a batch form one lazily built batch of perturbed inputs evaluated in
    chunks, so several targets cost no more than one (:meth:`explain_targets`).
    """

    def __init__(self, model: nn.Module, window: int | Sequence[int] | None = None,
                 stride: int | Sequence[int] | None = None, baseline: BaselineSpec = "zero",
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model, batch_size, progress)
        self.window, self.stride, self.baseline = window, stride, baseline
        for name, value in (("window", window), ("stride", stride)):
            values = value if isinstance(value, (tuple, list)) else [] if value is None else [value]
            for v in values:
                check_positive(v, name, integer=True)

    def _sizes(self, value, x: torch.Tensor, name: str, default: int) -> list[int | None]:
        """Per sample dimension: a size, or ``None`` for a channel dimension spanned whole."""
        spatial = list(range(2, x.ndim)) if x.ndim >= 3 else [1]
        sample_dims = list(range(1, x.ndim))
        if value is None or isinstance(value, int):
            size = default if value is None else value
            return [min(size, x.shape[d]) if d in spatial else None for d in sample_dims]
        value = list(value)
        if len(value) == len(sample_dims):
            return [min(v, x.shape[d]) for v, d in zip(value, sample_dims)]
        if len(value) == len(spatial):
            sizes = dict(zip(spatial, value))
            return [min(sizes[d], x.shape[d]) if d in sizes else None for d in sample_dims]
        raise ValueError(
            f"{name} {tuple(value)} has {len(value)} entries; give an int, {len(spatial)} (one per spatial "
            f"dimension) or {len(sample_dims)} (one per sample dimension of x {tuple(x.shape)})"
        )

    def boxes(self, x: torch.Tensor) -> torch.Tensor:
        """``(W, *r)`` bool: the elements each window covers (``r`` broadcasts to a sample)."""
        window = self._sizes(self.window, x, "window", 16 if x.ndim >= 3 else 1)
        stride = self._sizes(self.stride, x, "stride", 0)
        box = torch.ones((1,), dtype=torch.bool, device=x.device)
        for i, (w, s) in enumerate(zip(window, stride)):
            size = x.shape[i + 1]
            if w is None:  # channels spanned whole
                box = box[..., None]
                continue
            s = s or w
            starts = list(range(0, size - w + 1, s))
            if starts[-1] + w < size:
                starts.append(size - w)
            start = torch.tensor(starts, device=x.device)[:, None]
            positions = torch.arange(size, device=x.device)[None]
            indicator = (positions >= start) & (positions < start + w)  # (count, size)
            previous = box.shape[1:]
            indicator = indicator.view(1, len(starts), *([1] * len(previous)), size)
            box = (box.view(box.shape[0], 1, *previous, 1) & indicator).flatten(0, 1)
        return box

    def attribute(self, x, targets, output, args, kwargs):
        n = x.shape[0]
        baseline = resolve_baseline(self.baseline, x)[:, None]
        box = self.boxes(x)
        windows = box.shape[0]

        def build(start: int, stop: int) -> torch.Tensor:
            rows = torch.arange(start, stop, device=x.device)
            return perturb(x, baseline, ~box[rows % windows], rows // windows)

        owner = torch.arange(n).repeat_interleave(windows)
        scores = self.scores(LazyInputs(build, n * windows, x), owner, targets, n, args, kwargs)
        reference = torch.stack([t.score(output) for t in targets], 1)  # (N, K)
        drop = reference[:, None, :] - scores.view(n, windows, -1)  # (N, W, K)
        flat = box.reshape(windows, -1).to(drop.dtype)
        attribution = (drop.transpose(1, 2) @ flat) / flat.sum(0).clamp_min(1)  # (N, K, P)
        attribution = attribution.view(n, -1, *box.shape[1:]).expand(n, -1, *x.shape[1:])
        info = {"windows": windows, "baseline": describe_baseline(self.baseline)}
        return [(attribution[:, k].contiguous(), dict(info)) for k in range(len(targets))]
