"""Pixels and their order: where the pixels of a sample are, per-pixel values, stable orderings and ranks.

- **Pixels.** For an input of shape ``(N, C, *spatial)`` (``ndim >= 3``) a *pixel* is one position of the
  spatial grid with all its ``C`` channels; for ``(N, D)`` inputs every feature is a pixel.
- **Pixel relevance** is the sum of the relevance of the pixel's channels (the LRP convention). Attribution
  maps without channels (``(N, 1, *spatial)`` or ``(N, *spatial)``, e.g. Grad-CAM) are accepted as they are.
- **Ties.** Orderings are stable sorts: pixels (or segments) with equal relevance keep their index order
  (row-major, lower index first) in both the most-relevant-first and least-relevant-first order.

The foot of the metrics room: :mod:`xaikit.metrics.base` (the evaluation call) and
:mod:`xaikit.metrics.perturb` (perturbations) stand on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    """Where the pixels of one sample are: ``channels`` (1 for ``(N, D)`` inputs) and the ``spatial`` grid."""

    shape: tuple[int, ...]  #: per-sample input shape

    @property
    def has_channels(self) -> bool:
        return len(self.shape) >= 2

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[1:] if self.has_channels else self.shape

    @property
    def pixels(self) -> int:
        return math.prod(self.spatial)

    def expand(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """``(M, P)`` pixel values -> ``(M, 1, *spatial)`` (or ``(M, D)``), broadcastable against inputs."""
        if self.has_channels:
            return pixel_mask.reshape(pixel_mask.shape[0], 1, *self.spatial)
        return pixel_mask.reshape(pixel_mask.shape[0], *self.spatial)


def to_pixels(values: torch.Tensor, layout: Layout, name: str = "attribution") -> torch.Tensor:
    """Reduce a per-element map to per-pixel values ``(N, P)`` (sum over channels).

    Accepts the input's shape ``(N, *shape)``, or for inputs with channels ``(N, 1, *spatial)`` and
    ``(N, *spatial)``.
    """
    n = values.shape[0]
    shape = tuple(values.shape[1:])
    if shape == layout.shape:
        summed = values.sum(1) if layout.has_channels else values
    elif layout.has_channels and shape in ((1, *layout.spatial), layout.spatial):
        summed = values.reshape(n, *layout.spatial)
    else:
        accepted = [layout.shape] + ([(1, *layout.spatial), layout.spatial] if layout.has_channels else [])
        raise ValueError(
            f"{name} has shape {tuple(values.shape)} but the input has shape {(n, *layout.shape)}; expected "
            + " or ".join(str((n, *s)) for s in accepted)
        )
    return summed.reshape(n, -1)


#: relevance values of one sample closer than this fraction of its largest |value| are ties (ordered by index):
#: floating-point rounding differs with the batch a sample is computed in (another kernel for another batch
#: size: ~1e-7 relative), which must not reorder values that are equal in exact arithmetic (the pixels of an
#: upsampled Grad-CAM cell, an occlusion window), or a score would depend on the sample's batch mates
TIE_TOLERANCE = 1e-5


def stable_order(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Indices that sort ``scores`` (N, K) per row; ties keep index order. Neighbours in the sorted order closer
    than :data:`TIE_TOLERANCE` × the row's largest ``|score|`` belong to one tie group (chained)."""
    values, order = torch.sort(scores, dim=1, descending=descending, stable=True)
    finite = values.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    scale = finite.abs().amax(1, keepdim=True)
    gaps = (values[:, 1:] - values[:, :-1]).abs()
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = ~(gaps <= TIE_TOLERANCE * scale)  # NaN/inf gaps start a new group
    group = torch.cumsum(new_group.long(), 1)
    by_index = torch.empty_like(group).scatter_(1, order, group)  # each entry's group, in index order
    return torch.sort(by_index, dim=1, stable=True).indices


def ranks(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation of ``order`` (N, K): ``rank[i, order[i, r]] = r``."""
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    return rank


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (0-based, float) per row with ties given their average rank (for Spearman and ROC AUC)."""
    n, k = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = torch.cumsum(new_group.long(), 1) - 1  # group id per sorted position
    flat = group + torch.arange(n, device=values.device)[:, None] * k
    positions = torch.arange(k, device=values.device, dtype=values.dtype).expand(n, k)
    total = torch.zeros(n * k, dtype=values.dtype, device=values.device).index_add_(0, flat.reshape(-1), positions.reshape(-1))
    count = torch.zeros(n * k, dtype=values.dtype, device=values.device).index_add_(
        0, flat.reshape(-1), torch.ones_like(positions).reshape(-1))
    mean_rank = (total / count.clamp_min(1)).gather(0, flat.reshape(-1)).reshape(n, k)
    result = torch.empty_like(mean_rank)
    result.scatter_(1, order, mean_rank)
    return result
