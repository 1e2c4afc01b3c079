"""Localisation: does the attribution point at the ground-truth object?

Every metric takes ``mask=`` (boolean per pixel: ``(N, H, W)``, ``(N, 1, H, W)`` or shaped like ``x``) and
works on pixel relevance (sum over channels). A weighted mask is rejected rather than silently binarised; a
sample with an empty mask scores NaN with a warning (never a "hit").
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from ..errors import check_positive
from .base import Case, Metric, MetricResult, register
from .pixels import average_ranks, stable_order

__all__ = [
    "PointingGame", "AttributionLocalisation", "TopKIntersection", "RelevanceRankAccuracy",
    "RelevanceMassAccuracy", "AUC", "Focus", "make_mosaic",
]


class _Localisation(Metric):
    family = "localisation"
    reads_input_values = False
    needs_mask = True
    higher_is_better = True

    def _positive_share(self, case: Case) -> torch.Tensor:
        """Σ positive relevance inside the mask / Σ positive relevance (NaN with a warning if none is positive)."""
        positive = case.pixels.clamp_min(0)
        total = positive.sum(1)
        inside = (positive * case.mask).sum(1)
        none = total <= 0
        if none.any():
            warnings.warn(
                f"{self.name}: the attribution of sample(s) {none.nonzero().flatten().tolist()} has no positive "
                "relevance, so the share inside the mask is undefined; their score is NaN", UserWarning, stacklevel=4)
        return torch.where(none, torch.full_like(total, float("nan")), inside / total.clamp_min(1e-30))


@register
class PointingGame(_Localisation):
    """Pointing game (Zhang et al. 2018): a hit (1) if the pixel of maximal relevance lies in the mask, else 0.

    Ties for the maximum go to the first pixel in row-major order. ``tolerance`` (pixels) counts a hit within
    that Euclidean distance of the mask (the paper uses 15 pixels on its images; default 0: strictly inside).
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        check_positive(tolerance, "tolerance", allow_zero=True)
        self._common()
        self.tolerance = tolerance

    def compute(self, case: Case) -> MetricResult:
        mask = case.mask
        if self.tolerance > 0:
            mask = _dilate(mask, case.layout.spatial, self.tolerance)
        peak = stable_order(case.pixels, descending=True)[:, :1]
        return MetricResult(mask.gather(1, peak)[:, 0].to(case.pixels.dtype))


def _dilate(mask: torch.Tensor, spatial: tuple[int, ...], radius: float) -> torch.Tensor:
    """Pixels within Euclidean ``radius`` of the mask (2-D grids; 1-D feature vectors are dilated along D)."""
    r = int(math.floor(radius))
    t = torch.arange(-r, r + 1, device=mask.device, dtype=torch.float32)
    if len(spatial) > 2:
        raise ValueError(f"tolerance works on 1-D and 2-D inputs, got spatial shape {spatial}; use tolerance=0")
    if len(spatial) == 2:
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).float()[None, None]
        grown = F.conv2d(mask.float().reshape(-1, 1, *spatial), disk, padding=r)
    else:
        grown = F.conv1d(mask.float().reshape(-1, 1, mask.shape[1]), (t.abs() <= radius).float()[None, None], padding=r)
    return grown.reshape(mask.shape) > 0


@register
class AttributionLocalisation(_Localisation):
    """Attribution localisation (Kohlbrenner et al. 2020): the share of positive relevance inside the mask,
    μ = R⁺_in / R⁺_total; ``weighted=True`` multiplies by |image| / |mask| (μ_w) so that small objects are not
    penalised."""

    def __init__(self, weighted: bool = False) -> None:
        self._common()
        self.weighted = bool(weighted)

    def compute(self, case: Case) -> MetricResult:
        share = self._positive_share(case)
        if self.weighted:
            share = share * case.mask.shape[1] / case.mask.sum(1).clamp_min(1)
        return MetricResult(share)


@register
class RelevanceMassAccuracy(_Localisation):
    """Relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): R_within / R_total over positive relevance."""

    def __init__(self) -> None:
        self._common()

    def compute(self, case: Case) -> MetricResult:
        return MetricResult(self._positive_share(case))


@register
class RelevanceRankAccuracy(_Localisation):
    """Relevance rank accuracy (Arras et al. 2022): with K = |mask|, the fraction of the K most relevant pixels
    that lie inside the mask (ties by pixel index)."""

    def __init__(self) -> None:
        self._common()

    def compute(self, case: Case) -> MetricResult:
        order = stable_order(case.pixels, descending=True)
        size = case.mask.sum(1, keepdim=True)
        top = torch.arange(order.shape[1], device=order.device)[None] < size
        hits = (case.mask.gather(1, order) & top).sum(1)
        return MetricResult(hits / size[:, 0].clamp_min(1))


@register
class TopKIntersection(_Localisation):
    """Top-k intersection (Theiner et al. 2021): the fraction of the ``k`` most relevant pixels (ties by index)
    that lie inside the mask; ``absolute=True`` ranks by |relevance|."""

    def __init__(self, k: int = 1000, absolute: bool = False) -> None:
        check_positive(k, "k", integer=True)
        self._common()
        self.k, self.absolute = k, bool(absolute)

    def compute(self, case: Case) -> MetricResult:
        scores = case.pixels.abs() if self.absolute else case.pixels
        k = min(self.k, scores.shape[1])
        order = stable_order(scores, descending=True)[:, :k]
        return MetricResult(case.mask.gather(1, order).sum(1) / k)


@register
class AUC(_Localisation):
    """Area under the ROC curve (Fawcett 2006) of pixel relevance as a detector of mask pixels.

    Computed from ranks (Mann–Whitney U; ties count one half). A mask covering every pixel scores NaN with a
    warning.
    """

    def __init__(self) -> None:
        self._common()

    def compute(self, case: Case) -> MetricResult:
        rank = average_ranks(case.pixels) + 1
        positives = case.mask.sum(1).to(rank.dtype)
        negatives = case.mask.shape[1] - positives
        u = (rank * case.mask).sum(1) - positives * (positives + 1) / 2
        full = negatives == 0
        if full.any():
            warnings.warn(f"AUC: the mask of sample(s) {full.nonzero().flatten().tolist()} covers every pixel, so "
                          "there is nothing to separate; their score is NaN", UserWarning, stacklevel=4)
        return MetricResult(torch.where(full, torch.full_like(u, float("nan")), u / (positives * negatives).clamp_min(1)))


@register
class Focus(_Localisation):
    """Focus (Arias-Duart et al. 2022): on a mosaic of images, the share of positive relevance that falls on the
    tiles of the target class. Build mosaics and their masks with :func:`make_mosaic`."""

    def __init__(self) -> None:
        self._common()

    def compute(self, case: Case) -> MetricResult:
        return MetricResult(self._positive_share(case))


def make_mosaic(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int = 0,
                grid: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mosaics for :class:`Focus`: ``grid × grid`` tiles, half of them from one class (the target), the rest from
    other classes, in random positions.

    Returns ``(mosaics (count, C, grid·H, grid·W), targets (count,), masks (count, grid·H, grid·W))``; the masks
    mark the target-class tiles. Needs at least two classes with ``grid²/2`` images each.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(labels).cpu()
    tiles = grid * grid
    half = tiles // 2
    classes = [c for c in labels.unique().tolist() if int((labels == c).sum()) >= half]
    if len(classes) < 2 or len(labels) < tiles:
        raise ValueError(f"make_mosaic needs two classes with at least {half} images each and {tiles} images")
    n, c, h, w = images.shape
    mosaics, targets, masks = [], [], []
    for _ in range(count):
        target = classes[int(torch.randint(len(classes), (1,), generator=generator))]
        same = (labels == target).nonzero().flatten()
        other = (labels != target).nonzero().flatten()
        chosen = torch.cat([same[torch.randperm(len(same), generator=generator)[:half]],
                            other[torch.randperm(len(other), generator=generator)[: tiles - half]]])
        position = torch.randperm(tiles, generator=generator)
        placed = chosen[position.argsort()]
        is_target = (labels[placed] == target)
        rows = images[placed].reshape(grid, grid, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, grid * h, grid * w)
        mask = is_target.reshape(grid, 1, grid, 1).expand(grid, h, grid, w).reshape(grid * h, grid * w)
        mosaics.append(rows)
        targets.append(target)
        masks.append(mask)
    return torch.stack(mosaics), torch.tensor(targets), torch.stack(masks)
