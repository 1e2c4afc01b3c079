"""Axiomatic properties: completeness, non-sensitivity, input invariance."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..errors import check_positive
from ..methods.machinery.seeding import make_generator
from ..modes import FollowsModel
from .base import Case, Metric, MetricResult, register
from .perturb import check_baseline, evaluate_masks, make_baseline, segment_sums

__all__ = ["Completeness", "NonSensitivity", "InputInvariance"]


@register
class Completeness(Metric):
    """Completeness (Sundararajan et al. 2017, Prop. 1; Bach et al. 2015 conservation): Σ_i R_i = f(x) − f(x̄).

    The score is 1 where |Σ R − (f(x) − f(x̄))| ≤ ``atol`` + ``rtol`` · |f(x) − f(x̄)|, else 0 (never exact float
    equality); ``info["gap"]`` holds the signed gap. ``baseline`` x̄ as for the perturbation metrics (the IG
    default is ``"zero"``). An all-zero attribution is a valid answer here (it passes when f(x) = f(x̄)).
    Higher is better.
    """

    family = "axiomatic"
    higher_is_better = True
    zero_attribution_undefined = False

    def __init__(self, baseline: Any = "zero", rtol: float = 0.05, atol: float = 1e-4, softmax: bool = False,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_baseline(baseline)
        check_positive(rtol, "rtol", allow_zero=True)
        check_positive(atol, "atol", allow_zero=True)
        self._common(batch_size, softmax, seed)
        self.baseline, self.rtol, self.atol = baseline, rtol, atol

    def compute(self, case: Case) -> MetricResult:
        base = make_baseline(case.x, self.baseline, make_generator(self.seed))
        rows = torch.arange(case.n, device=case.x.device)
        difference = case.base_scores() - case.scores(base, rows)
        gap = case.attribution.flatten(1).sum(1) - difference
        passed = gap.abs() <= self.atol + self.rtol * difference.abs()
        return MetricResult(passed.to(gap.dtype), info={"gap": gap, "difference": difference})


@register
class NonSensitivity(Metric):
    """Non-sensitivity (Nguyen & Martínez 2020, Sec. 3.3): features the model does not react to should get zero
    attribution, and vice versa.

    The pixels are grouped in raster order into groups of ``pixels_per_step`` (default: 100 groups); each group
    is replaced by the baseline on its own. A group is *insensitive* if the output changes by at most ``eps``,
    *unattributed* if all its |relevance| is at most ``eps`` times the sample's largest |relevance|. The score is
    the number of groups where the two disagree (symmetric difference). Lower is better.
    """

    family = "axiomatic"
    higher_is_better = False

    def __init__(self, pixels_per_step: int | None = None, baseline: Any = "zero", eps: float = 1e-5,
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if pixels_per_step is not None:
            check_positive(pixels_per_step, "pixels_per_step", integer=True)
        check_baseline(baseline)
        check_positive(eps, "eps", allow_zero=True)
        self._common(batch_size, softmax, seed)
        self.pixels_per_step, self.baseline, self.eps = pixels_per_step, baseline, eps

    def compute(self, case: Case) -> MetricResult:
        pixels = case.layout.pixels
        per_step = self.pixels_per_step or max(1, math.ceil(pixels / 100))
        group = torch.arange(pixels, device=case.x.device) // per_step
        groups = int(group[-1]) + 1
        masks = group[None, :] == torch.arange(groups, device=group.device)[:, None]  # (G, P), same for all
        base = make_baseline(case.x, self.baseline, make_generator(self.seed))
        change = (case.base_scores()[:, None] - evaluate_masks(case, masks, base)).abs()
        magnitude = case.pixels.abs()
        threshold = self.eps * magnitude.amax(1, keepdim=True)
        attributed = segment_sums((magnitude > threshold).to(magnitude.dtype), group, groups) > 0
        sensitive = change > self.eps
        return MetricResult((attributed != sensitive).sum(1).to(magnitude.dtype))


class _Shifted(FollowsModel, nn.Module):
    """``model(z − shift)``: the model for inputs shifted by a constant (Kindermans et al.'s f₂); its training
    flag is the model's."""

    wrapped = "inner"

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = model
        self.shift = shift

    def forward(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.inner(z - self.shift, *args, **kwargs)


@register
class InputInvariance(Metric):
    """Input invariance (Kindermans et al. 2017): shift the input by a constant and give the model a first layer
    that compensates the shift, f₂(x + c) = f(x); an input-invariant explanation is unchanged.

    The score is the fraction of attribution values that agree within ``atol`` + ``rtol`` · |R| (1: invariant).
    Gradients are invariant; gradient × input and integrated gradients with a zero baseline are not. The
    compensated model is a wrapper around the user's model (nothing of it changes). Higher is better.
    """

    family = "axiomatic"
    needs_method = True
    higher_is_better = True

    def __init__(self, shift: float = 1.0, rtol: float = 1e-3, atol: float = 1e-6,
                 batch_size: int | str = "auto") -> None:
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or shift == 0:
            raise ValueError(f"shift must be a non-zero number, got {shift!r}")
        check_positive(rtol, "rtol", allow_zero=True)
        check_positive(atol, "atol", allow_zero=True)
        self._common(batch_size, False, None)
        self.shift, self.rtol, self.atol = float(shift), rtol, atol

    def compute(self, case: Case) -> MetricResult:
        method = copy.copy(case.method)
        method.model = _Shifted(case.method.model, self.shift)
        rows = torch.arange(case.n, device=case.x.device)
        shifted = case.explain(case.x + self.shift, rows, method)
        close = (shifted - case.attribution).abs() <= self.atol + self.rtol * case.attribution.abs()
        return MetricResult(close.flatten(1).float().mean(1))
