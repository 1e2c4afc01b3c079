"""Per-pixel perturbation machinery shared by the metrics: baselines, masks and their batched evaluation.

Conventions (one place, so every metric counts the same way; pixels, pixel relevance and the order of ties
are defined in :mod:`xaikit.metrics.pixels`):

- **Pixels.** Perturbations always replace all channels of a pixel together, so removing "k pixels" is k
  pixels on RGB images, not k channel values.
- **Randomness.** Random draws (subsets, noise) are made once per call and shared by all samples of the batch
  from a generator seeded with ``seed`` (:func:`xaikit.methods.machinery.seeding.make_generator`), so a sample's score
  never depends on its batch mates or its position.
- **Batched evaluation.** A perturbation is a boolean pixel mask; all masks of a batch form one ``(N, S, P)``
  tensor, the perturbed inputs are built from it in blocks under the memory budget and evaluated with
  :func:`xaikit.batching.batched_forward`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..batching import memory_budget
from ..methods.machinery.baselines import gaussian_blur
from .pixels import Layout, ranks

if TYPE_CHECKING:  # pragma: no cover
    from .base import Case

#: baseline names understood by :func:`make_baseline`
BASELINES = ("zero", "mean", "blur", "noise", "uniform")


def check_baseline(baseline: Any) -> None:
    """Accept a baseline name, a number or a tensor."""
    if isinstance(baseline, torch.Tensor) or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool)):
        return
    if baseline not in BASELINES:
        raise ValueError(
            f"unknown baseline {baseline!r}; valid: {', '.join(repr(b) for b in BASELINES)}, a number or a tensor"
        )


def _sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Dimensions reduced for per-sample, per-channel statistics."""
    return tuple(range(2, x.ndim)) if x.ndim >= 3 else tuple(range(1, x.ndim))


def make_baseline(x: torch.Tensor, baseline: Any, generator: torch.Generator, blur_sigma: float | None = None) -> torch.Tensor:
    """The values that replace removed pixels, shaped like ``x``.

    - ``"zero"``: zeros; a number: that constant;
    - ``"mean"``: each sample's per-channel mean;
    - ``"blur"``: a Gaussian-blurred copy of the sample (σ = ``blur_sigma``, default 1/20 of the smaller side);
    - ``"noise"``: Gaussian noise with each sample's per-channel mean and standard deviation;
    - ``"uniform"``: uniform noise in each sample's value range ``[min, max]`` (Samek et al. 2017);
    - a tensor broadcastable to ``x`` (e.g. one image ``(C, H, W)`` or one per sample).

    The random draws are shared by all samples (scaled per sample), see the module docstring.
    """
    check_baseline(baseline)
    if isinstance(baseline, torch.Tensor):
        value = baseline.to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(value, x.shape).clone()
        except RuntimeError:
            raise ValueError(
                f"baseline of shape {tuple(value.shape)} does not broadcast to the input {tuple(x.shape)}"
            ) from None
    if not isinstance(baseline, str):
        return torch.full_like(x, float(baseline))
    dims = _sample_dims(x)
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dims, keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        if x.ndim != 4:
            raise ValueError(f"baseline 'blur' needs image inputs (N, C, H, W), got shape {tuple(x.shape)}")
        return gaussian_blur(x, blur_sigma or max(1.0, min(x.shape[2:]) / 20))
    draw = (torch.randn if baseline == "noise" else torch.rand)(x.shape[1:], generator=generator, dtype=x.dtype)
    draw = draw.to(x.device)[None]
    if baseline == "noise":
        mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True) if x[0].numel() > 1 else 0.0
        return mean + std * draw
    low, high = x.amin(tuple(range(1, x.ndim)), keepdim=True), x.amax(tuple(range(1, x.ndim)), keepdim=True)
    return low + (high - low) * draw


def patch_segments(layout: Layout, patch_size: int | tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """Segment ids ``(P,)`` of a grid of non-overlapping patches (the last row/column may be smaller)."""
    spatial = layout.spatial
    size = (patch_size,) * len(spatial) if isinstance(patch_size, int) else tuple(patch_size)
    if len(size) != len(spatial):
        raise ValueError(f"patch_size {patch_size!r} does not match the spatial shape {spatial}")
    coords = torch.meshgrid(*[torch.arange(s) // p for s, p in zip(spatial, size)], indexing="ij")
    counts = [math.ceil(s / p) for s, p in zip(spatial, size)]
    ids = torch.zeros(spatial, dtype=torch.long)
    for coord, count in zip(coords, counts):
        ids = ids * count + coord
    return ids.reshape(-1), math.prod(counts)


def segment_sums(pixel_values: torch.Tensor, segments: torch.Tensor, count: int, mean: bool = False) -> torch.Tensor:
    """Sum (or mean) of pixel values ``(N, P)`` per segment; ``segments`` is ``(P,)`` or ``(N, P)``."""
    n = pixel_values.shape[0]
    seg = segments.expand(n, -1) if segments.ndim == 1 else segments
    seg = seg.to(pixel_values.device)
    sums = torch.zeros(n, count, dtype=pixel_values.dtype, device=pixel_values.device).scatter_add_(1, seg, pixel_values)
    if not mean:
        return sums
    sizes = torch.zeros_like(sums).scatter_add_(1, seg, torch.ones_like(pixel_values))
    return sums / sizes.clamp_min(1)


def removal_masks(order: torch.Tensor, segments: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor:
    """Cumulative removal masks ``(N, S, P)``: step ``s`` removes the first ``counts[s]`` segments of ``order``.

    ``order`` is ``(N, K)`` segment indices in removal order; ``segments`` maps pixels to segments (``(P,)`` or
    ``(N, P)``; ``None`` when the segments are the pixels themselves).
    """
    rank = ranks(order)
    if segments is not None:
        seg = segments.to(order.device)
        rank = rank.gather(1, seg.expand(order.shape[0], -1) if seg.ndim == 1 else seg)
    return rank[:, None, :] < counts.to(order.device)[None, :, None]


def random_subsets(samples: int, pixels: int, size: int, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """``samples`` random subsets of ``size`` of ``pixels`` pixels as a boolean mask ``(samples, P)``."""
    if not 0 < size <= pixels:
        raise ValueError(f"subset_size must be between 1 and the number of pixels ({pixels}), got {size}")
    keys = torch.rand(samples, pixels, generator=generator)
    chosen = keys.topk(size, dim=1, largest=False).indices
    mask = torch.zeros(samples, pixels, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    return mask.to(device)


def apply_masks(x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Inputs with the masked pixels replaced: ``x``/``baseline`` ``(M, ...)``, ``masks`` ``(M, P)``."""
    return torch.where(layout.expand(masks), baseline, x)


#: ``fill(owner, step, masks, x_rows) -> inputs``: rows' sample and step indices, pixel masks and clean inputs
Fill = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


#: most perturbed inputs built at once (keeps the block in memory modest; chunks are far smaller)
BLOCK_ROWS = 256


def _block_rows(case: "Case") -> int:
    item_bytes = case.x[0].numel() * case.x.element_size()
    return max(1, min(BLOCK_ROWS, memory_budget(case.x.device) // (4 * item_bytes)))


def evaluate_masks(case: "Case", masks: torch.Tensor, baseline: torch.Tensor | None = None,
                   fill: Fill | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Target scores ``(N, S)`` of the inputs perturbed by ``masks`` ``(N, S, P)`` (or ``(S, P)`` for all samples).

    The perturbed inputs are ``baseline`` where masked, else ``x`` (or ``fill(owner, step, masks_rows,
    x_rows)``), built in blocks of rows and evaluated with ``batched_forward``. Steps where ``valid``
    ``(N, S)`` is false are not evaluated and score NaN.
    """
    if fill is None and valid is None:
        return _evaluate_broadcast(case, masks, baseline)
    n = case.n
    if masks.ndim == 2:
        masks = masks[None].expand(n, -1, -1)
    steps = masks.shape[1]
    flat = masks.reshape(n * steps, -1)
    owner = torch.arange(n, device=case.x.device).repeat_interleave(steps)
    step = torch.arange(steps, device=case.x.device).repeat(n)
    keep = None if valid is None else valid.reshape(-1).to(case.x.device).nonzero().flatten()
    if keep is not None:
        flat = flat.index_select(0, keep.to(flat.device))
        owner, step = owner.index_select(0, keep), step.index_select(0, keep)
    if fill is None:
        def fill(rows, _step, m, x_rows):
            return apply_masks(x_rows, baseline.index_select(0, rows), m, case.layout)
    block = _block_rows(case)
    scores = []
    for start in range(0, owner.shape[0], block):
        rows = owner[start: start + block]
        inputs = fill(rows, step[start: start + block], flat[start: start + block], case.x.index_select(0, rows))
        scores.append(case.scores(inputs, rows))
    values = torch.cat(scores) if scores else case.x.new_zeros(0)
    if keep is None:
        return values.reshape(n, steps)
    result = torch.full((n * steps,), float("nan"), dtype=values.dtype, device=values.device)
    result[keep.to(values.device)] = values
    return result.reshape(n, steps)


def _evaluate_broadcast(case: "Case", masks: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """:func:`evaluate_masks` with a baseline: blocks of steps for all samples, built by broadcasting
    (no gathered copies of ``x``) into one reused buffer."""
    n, x, layout = case.n, case.x, case.layout
    if masks.ndim == 2:
        masks = masks[None]
    steps = masks.shape[1]
    per_block = max(1, _block_rows(case) // n)
    buffer = None
    scores = []
    for start in range(0, steps, per_block):
        part = masks[:, start: start + per_block]
        count = part.shape[1]
        condition = part.reshape(part.shape[0], count, *((1,) if layout.has_channels else ()), *layout.spatial)
        if buffer is None or buffer.shape[1] != count:
            buffer = x.new_empty(n, count, *x.shape[1:])
        torch.where(condition, baseline[:, None], x[:, None], out=buffer)
        owner = torch.arange(n, device=x.device).repeat_interleave(count)
        scores.append(case.scores(buffer.reshape(n * count, *x.shape[1:]), owner).reshape(n, count))
    return torch.cat(scores, 1)
