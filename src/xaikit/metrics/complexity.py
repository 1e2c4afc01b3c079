"""Complexity: how concentrated is the attribution? Computed on |pixel relevance| of each sample alone."""
from __future__ import annotations

import torch

from ..errors import check_positive
from .base import Case, Metric, MetricResult, register

__all__ = ["Sparseness", "Complexity", "EffectiveComplexity"]


class _Complexity(Metric):
    family = "complexity"
    reads_input_values = False

    def __init__(self) -> None:
        self._common()


@register
class Sparseness(_Complexity):
    """Sparseness (Chalasani et al. 2020): the Gini index of |relevance| over pixels,
    G = Σ_i (2i − P − 1) a_(i) / (P Σ_i a_i) with a_(i) sorted ascending (i = 1..P). 0: uniform, → 1: one pixel.
    Higher is better."""

    higher_is_better = True

    def compute(self, case: Case) -> MetricResult:
        values = torch.sort(case.pixels.abs(), dim=1).values
        p = values.shape[1]
        weights = 2 * torch.arange(1, p + 1, dtype=values.dtype, device=values.device) - p - 1
        return MetricResult((values * weights).sum(1) / (p * values.sum(1)))


@register
class Complexity(_Complexity):
    """Complexity (Bhatt et al. 2020): the entropy −Σ_i p_i log p_i of the fractional contributions
    p_i = |R_i| / Σ_j |R_j| (natural log). Lower is better."""

    higher_is_better = False

    def compute(self, case: Case) -> MetricResult:
        share = case.pixels.abs()
        share = share / share.sum(1, keepdim=True)
        return MetricResult(-torch.special.xlogy(share, share).sum(1))


@register
class EffectiveComplexity(_Complexity):
    """Effective complexity (Nguyen & Martínez 2020): the number of pixels whose |relevance| exceeds ``eps``
    times the sample's largest |relevance| (a per-sample threshold). Lower is better."""

    higher_is_better = False

    def __init__(self, eps: float = 1e-5) -> None:
        check_positive(eps, "eps", allow_zero=True)
        self._common()
        self.eps = eps

    def compute(self, case: Case) -> MetricResult:
        magnitude = case.pixels.abs()
        threshold = self.eps * magnitude.amax(1, keepdim=True)
        return MetricResult((magnitude > threshold).sum(1).to(magnitude.dtype))
