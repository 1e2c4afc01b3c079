"""Faithfulness: does removing what the attribution calls relevant change the model output accordingly?

All metrics here perturb whole pixels (all channels together), order pixels by a stable sort (ties by
index), draw random subsets shared by every sample of the batch (so a score never depends on batch mates) and
evaluate all perturbed inputs of a batch in chunks (:func:`~xaikit.metrics.perturb.evaluate_masks`).
``softmax=True`` scores class probabilities instead of the raw output (logits).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import check_choice, check_positive
from ..methods.machinery.seeding import make_generator
from .base import Case, Metric, MetricResult, check_order, pearson, register, spearman, trapezoid_mean
from .imputation import ACCURACY, noisy_linear_imputation
from .perturb import (
    check_baseline, evaluate_masks, make_baseline, patch_segments, random_subsets, removal_masks, segment_sums,
)
from .pixels import stable_order

__all__ = [
    "PixelFlipping", "Deletion", "Insertion", "RegionPerturbation", "Selectivity", "FaithfulnessCorrelation",
    "FaithfulnessEstimate", "Monotonicity", "MonotonicityCorrelation", "SensitivityN", "IROF", "ROAD",
    "Infidelity", "Sufficiency",
]


def _pixels_per_step(value: int | None, pixels: int, default_steps: int = 100) -> int:
    if value is None:
        return max(1, math.ceil(pixels / default_steps))
    return min(value, pixels)


def _counts(pixels: int, per_step: int, start: int = 1) -> torch.Tensor:
    """Cumulative pixel counts ``[start*k, (start+1)*k, ..., P]`` (the last step may be smaller)."""
    steps = math.ceil(pixels / per_step)
    return (torch.arange(start, steps + 1) * per_step).clamp_max(pixels)


class _Flipping(Metric):
    """Shared machinery: remove pixels cumulatively in relevance order and record the output curve."""

    family = "faithfulness"
    has_curve = True

    def _flip_curve(self, case: Case, order: torch.Tensor, counts: torch.Tensor, baseline: Any,
                    segments: torch.Tensor | None = None) -> torch.Tensor:
        base = make_baseline(case.x, baseline, make_generator(self.seed))
        masks = removal_masks(order, segments, counts)
        flipped = evaluate_masks(case, masks, base)
        return torch.cat([case.base_scores()[:, None], flipped], 1)


@register
class PixelFlipping(_Flipping):
    """Pixel-flipping (Bach et al. 2015; Samek et al. 2017): remove pixels in order of relevance.

    The curve holds the target output after removing 0, k, 2k, ..., P pixels (``k = pixels_per_step``, all
    channels of a pixel together); the score is its area over the fraction of removed pixels in [0, 1]
    (trapezoid rule). Most-relevant-first (``order="morf"``): a steep drop is good, lower is better;
    least-relevant-first (``"lerf"``): higher is better.

    Parameters
    ----------
    order : "morf" or "lerf"
    pixels_per_step : int, optional
        Pixels removed per step (default: P/100 rounded up, i.e. 100 steps).
    baseline : "zero", "mean", "blur", "noise", "uniform", a number or a tensor
        What removed pixels are replaced with.
    softmax : bool
        Score class probabilities instead of logits.
    batch_size : int or "auto"
        Perturbed inputs per forward pass.
    seed : int, optional
        Seed of the random baselines.
    """

    higher_is_better = False

    def __init__(self, order: str = "morf", pixels_per_step: int | None = None, baseline: Any = "zero",
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        self.morf = check_order(order)
        if pixels_per_step is not None:
            check_positive(pixels_per_step, "pixels_per_step", integer=True)
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.order, self.pixels_per_step, self.baseline = order, pixels_per_step, baseline
        self.higher_is_better = not self.morf

    def compute(self, case: Case) -> MetricResult:
        pixels = case.layout.pixels
        counts = _counts(pixels, _pixels_per_step(self.pixels_per_step, pixels))
        order = stable_order(case.pixels, descending=self.morf)
        curve = self._flip_curve(case, order, counts, self.baseline)
        fraction = torch.cat([torch.zeros(1), counts / pixels])
        return MetricResult(trapezoid_mean(curve, fraction), curve, {"fraction": fraction})


@register
class Deletion(PixelFlipping):
    """Deletion (Petsiuk et al. 2018): pixel-flipping most relevant first with class probabilities; the area
    under the probability curve, lower is better."""

    higher_is_better = False

    def __init__(self, pixels_per_step: int | None = None, baseline: Any = "zero", softmax: bool = True,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        super().__init__("morf", pixels_per_step, baseline, softmax, batch_size, seed)


@register
class Insertion(_Flipping):
    """Insertion (Petsiuk et al. 2018): start from a blurred input and insert the most relevant pixels first.

    The curve holds the target probability after inserting 0, k, ..., P pixels; the score is its area over
    [0, 1]; higher is better.
    """

    higher_is_better = True

    def __init__(self, pixels_per_step: int | None = None, baseline: Any = "blur", softmax: bool = True,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        _init_insertion(self, pixels_per_step, baseline, softmax, batch_size, seed)

    def compute(self, case: Case) -> MetricResult:
        curve, counts = _insertion_curve(self, case, most_relevant_first=True)
        fraction = torch.cat([counts / case.layout.pixels, torch.ones(1)])
        return MetricResult(trapezoid_mean(curve, fraction), curve, {"fraction": fraction})


def _init_insertion(metric: Metric, pixels_per_step, baseline, softmax, batch_size, seed) -> None:
    if pixels_per_step is not None:
        check_positive(pixels_per_step, "pixels_per_step", integer=True)
    check_baseline(baseline)
    metric._common(batch_size, softmax, seed)
    metric.pixels_per_step, metric.baseline = pixels_per_step, baseline


def _insertion_curve(metric: Metric, case: Case, most_relevant_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs after inserting 0, k, 2k, ..., P pixels into the baseline (N, steps + 1), and the counts."""
    pixels = case.layout.pixels
    counts = _counts(pixels, _pixels_per_step(metric.pixels_per_step, pixels), start=0)[:-1]
    order = stable_order(case.pixels, descending=most_relevant_first)
    base = make_baseline(case.x, metric.baseline, make_generator(metric.seed))
    inserted = removal_masks(order, None, counts)
    return torch.cat([evaluate_masks(case, ~inserted, base), case.base_scores()[:, None]], 1), counts


@register
class RegionPerturbation(_Flipping):
    """Region perturbation and AOPC (Samek et al. 2017, eq. 12).

    The input is divided into non-overlapping ``patch_size`` patches, ranked by summed relevance; the ``steps``
    most (``"morf"``) or least (``"lerf"``) relevant are replaced one after another (default: uniform noise in
    the sample's range, as in the paper). AOPC = 1/(L+1) Σ_{k=0..L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)); for MoRF higher is
    better, for LeRF lower is better.
    """

    higher_is_better = True

    def __init__(self, order: str = "morf", patch_size: int = 8, steps: int = 100, baseline: Any = "uniform",
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        self.morf = check_order(order)
        check_positive(patch_size, "patch_size", integer=True)
        check_positive(steps, "steps", integer=True)
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.order, self.patch_size, self.steps, self.baseline = order, patch_size, steps, baseline
        self.higher_is_better = self.morf

    def _regions(self, case: Case, steps: int | None):
        segments, count = patch_segments(case.layout, self.patch_size)
        relevance = segment_sums(case.pixels, segments, count)
        order = stable_order(relevance, descending=self.morf)
        counts = torch.arange(1, min(steps or count, count) + 1)
        return self._flip_curve(case, order, counts, self.baseline, segments.to(case.x.device)), count

    def compute(self, case: Case) -> MetricResult:
        curve, _ = self._regions(case, self.steps)
        aopc = (curve[:, :1] - curve).mean(1)
        return MetricResult(aopc, curve, {"regions": torch.arange(curve.shape[1])})


@register
class Selectivity(RegionPerturbation):
    """Selectivity (Montavon et al. 2018, Sec. 4.1): remove patches most relevant first and record how fast the
    output drops; the score is the area under the curve over [0, 1] (lower is better).

    ``steps=None`` removes every patch.
    """

    higher_is_better = False

    def __init__(self, patch_size: int = 8, steps: int | None = None, baseline: Any = "zero",
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if steps is not None:
            check_positive(steps, "steps", integer=True)
        super().__init__("morf", patch_size, steps or 1, baseline, softmax, batch_size, seed)
        self.steps = steps
        self.higher_is_better = False

    def compute(self, case: Case) -> MetricResult:
        curve, _ = self._regions(case, self.steps)
        return MetricResult(trapezoid_mean(curve), curve)


class _RandomSubsets(Metric):
    family = "faithfulness"

    def _subset_effects(self, case: Case, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """For ``samples`` random subsets of each size: (Σ relevance in subset, output drop), both (N, L, samples)."""
        pixels = case.layout.pixels
        generator = make_generator(self.seed)
        masks = torch.cat([random_subsets(self.samples, pixels, s, generator, case.x.device) for s in sizes])
        base = make_baseline(case.x, self.baseline, generator)
        drop = case.base_scores()[:, None] - evaluate_masks(case, masks, base)
        relevance = case.pixels @ masks.T.to(case.pixels.dtype)
        shape = (case.n, len(sizes), self.samples)
        return relevance.reshape(shape), drop.reshape(shape)


@register
class FaithfulnessCorrelation(_RandomSubsets):
    """Faithfulness correlation (Bhatt et al. 2020, eq. 2).

    For ``samples`` random subsets S of ``subset_size`` pixels (default: 10% of the pixels) the pixels are
    replaced by the baseline; the score is the Pearson correlation, per sample and across subsets, between
    Σ_{i∈S} R_i and f(x) − f(x_S). Higher is better.
    """

    higher_is_better = True

    def __init__(self, subset_size: int | None = None, samples: int = 100, baseline: Any = "zero",
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if subset_size is not None:
            check_positive(subset_size, "subset_size", integer=True)
        check_positive(samples, "samples", integer=True)
        if samples < 2:
            raise ValueError("samples must be at least 2 to compute a correlation")
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.subset_size, self.samples, self.baseline = subset_size, samples, baseline

    def compute(self, case: Case) -> MetricResult:
        size = self.subset_size or max(1, round(0.1 * case.layout.pixels))
        relevance, drop = self._subset_effects(case, [size])
        return MetricResult(pearson(relevance[:, 0], drop[:, 0]))


@register
class SensitivityN(_RandomSubsets):
    """Sensitivity-n (Ancona et al. 2018, Def. 4).

    For each subset size n in ``sizes`` (default: 10 sizes log-spaced from 1 to 80% of the pixels), ``samples``
    random subsets are removed; per sample and per n, the Pearson correlation across subsets between
    Σ_{i∈S} R_i and the output drop. The curve is the correlation per n (``info["sizes"]``); the score is its
    mean. Higher is better.
    """

    higher_is_better = True
    has_curve = True

    def __init__(self, sizes: Sequence[int] | None = None, samples: int = 100, baseline: Any = "zero",
                 softmax: bool = False, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if sizes is not None:
            sizes = [int(s) for s in sizes]
            for s in sizes:
                check_positive(s, "sizes entry", integer=True)
        check_positive(samples, "samples", integer=True)
        if samples < 2:
            raise ValueError("samples must be at least 2 to compute a correlation")
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.sizes, self.samples, self.baseline = sizes, samples, baseline

    def compute(self, case: Case) -> MetricResult:
        pixels = case.layout.pixels
        sizes = self.sizes or sorted({int(v) for v in np.geomspace(1, max(1, 0.8 * pixels), 10).round()})
        relevance, drop = self._subset_effects(case, sizes)
        curve = pearson(relevance, drop)
        return MetricResult(curve.nanmean(1), curve, {"sizes": torch.tensor(sizes)})


@register
class FaithfulnessEstimate(Metric):
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018, Sec. 3.1).

    Pixels are grouped by relevance rank into groups of ``pixels_per_step`` (default: 100 groups); each group is
    removed on its own; the score is the Pearson correlation between the groups' relevance and the output drops
    f(x) − f(x_{−g}). Higher is better.
    """

    family = "faithfulness"
    higher_is_better = True

    def __init__(self, pixels_per_step: int | None = None, baseline: Any = "zero", softmax: bool = False,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if pixels_per_step is not None:
            check_positive(pixels_per_step, "pixels_per_step", integer=True)
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.pixels_per_step, self.baseline = pixels_per_step, baseline

    def compute(self, case: Case) -> MetricResult:
        pixels = case.layout.pixels
        per_step = _pixels_per_step(self.pixels_per_step, pixels)
        groups = math.ceil(pixels / per_step)
        order = stable_order(case.pixels, descending=True)
        group = torch.empty_like(order).scatter_(1, order, (torch.arange(pixels, device=order.device) // per_step).expand_as(order).contiguous())
        masks = group[:, None, :] == torch.arange(groups, device=group.device)[None, :, None]
        base = make_baseline(case.x, self.baseline, make_generator(self.seed))
        drop = case.base_scores()[:, None] - evaluate_masks(case, masks, base)
        relevance = segment_sums(case.pixels, group, groups)
        return MetricResult(pearson(relevance, drop))


@register
class Monotonicity(Metric):
    """Monotonicity (Arya et al. 2019, AIX360): insert pixels into the baseline in order of *increasing*
    relevance; the explanation is faithful if the target probability never decreases from one insertion to
    the next.

    The curve holds the output after inserting 0, k, 2k, ..., P pixels (k = ``pixels_per_step``); the score is 1
    when the outputs *after each insertion* (columns 1, 2, ... of the curve) never decrease, else 0 (higher is
    better). As in the reference implementation (AIX360's ``monotonicity_metric``), the baseline's own output
    (column 0) is not compared: the first insertion adds the least relevant, possibly negative, evidence, so a
    drop below the baseline there is expected. On a linear model the true attribution scores 1 and its
    negation 0.
    """

    family = "faithfulness"
    higher_is_better = True
    has_curve = True

    def __init__(self, pixels_per_step: int | None = None, baseline: Any = "zero", softmax: bool = True,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        _init_insertion(self, pixels_per_step, baseline, softmax, batch_size, seed)

    def compute(self, case: Case) -> MetricResult:
        curve, _ = _insertion_curve(self, case, most_relevant_first=False)
        monotone = (curve[:, 2:] >= curve[:, 1:-1]).all(1)  # after each insertion; not against the baseline
        return MetricResult(monotone.to(curve.dtype), curve)


@register
class MonotonicityCorrelation(Metric):
    """Monotonicity correlation (Nguyen & Martínez 2020, Sec. 3.2).

    Pixels are grouped by |relevance| rank into groups of ``pixels_per_step`` (default: 100 groups); each group
    is replaced ``samples`` times by uniform noise in the sample's range; the score is the Spearman correlation
    between the groups' |relevance| and the mean squared output change E[(f(x) − f(x̃_g))²]. Higher is better.
    """

    family = "faithfulness"
    higher_is_better = True

    def __init__(self, pixels_per_step: int | None = None, samples: int = 10, softmax: bool = False,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        if pixels_per_step is not None:
            check_positive(pixels_per_step, "pixels_per_step", integer=True)
        check_positive(samples, "samples", integer=True)
        self._common(batch_size, softmax, seed)
        self.pixels_per_step, self.samples = pixels_per_step, samples

    def compute(self, case: Case) -> MetricResult:
        pixels = case.layout.pixels
        per_step = _pixels_per_step(self.pixels_per_step, pixels)
        groups = math.ceil(pixels / per_step)
        magnitude = case.pixels.abs()
        order = stable_order(magnitude, descending=True)
        group = torch.empty_like(order).scatter_(1, order, (torch.arange(pixels, device=order.device) // per_step).expand_as(order).contiguous())
        masks = (group[:, None, :] == torch.arange(groups, device=group.device)[None, :, None])
        masks = masks.repeat_interleave(self.samples, 1)  # (N, G * samples, P)
        x = case.x
        draws = torch.rand(self.samples, *x.shape[1:], generator=make_generator(self.seed), dtype=x.dtype).to(x.device)
        dims = tuple(range(1, x.ndim))
        low, high = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)

        def fill(owner, step, m, x_rows):
            noise = low[owner] + (high[owner] - low[owner]) * draws[step % self.samples]
            return torch.where(case.layout.expand(m), noise, x_rows)

        change = (case.base_scores()[:, None] - evaluate_masks(case, masks, fill=fill)).square()
        variance = change.reshape(case.n, groups, self.samples).mean(2)
        return MetricResult(spearman(segment_sums(magnitude, group, groups), variance))


@register
class IROF(_Flipping):
    """Iterative removal of features (Rieger & Hansen 2020).

    Each image is segmented into superpixels (scikit-image SLIC on the image scaled to [0, 1], ``segments``
    target count, ``compactness`` trading colour for spatial distance); segments are
    removed in order of their *mean* relevance and replaced with the baseline (default: the image's
    per-channel mean). The curve is the class probability relative to the unperturbed input; IROF is the area
    over it, 1 − ∫ f(x⁽ᵏ⁾)/f(x) over the fraction of removed segments in [0, 1]. Higher is better.
    """

    higher_is_better = True

    def __init__(self, segments: int = 50, compactness: float = 1.0, baseline: Any = "mean",
                 softmax: bool = True, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_positive(segments, "segments", integer=True)
        check_positive(compactness, "compactness")
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.segments, self.compactness, self.baseline = segments, compactness, baseline

    def superpixels(self, x: torch.Tensor) -> torch.Tensor:
        """SLIC superpixel ids ``(N, H*W)`` (0-based) of a batch of images ``(N, C, H, W)``."""
        from skimage.segmentation import slic

        if x.ndim != 4:
            raise ValueError(f"IROF segments images (N, C, H, W) into superpixels, got shape {tuple(x.shape)}")
        images = x.detach().permute(0, 2, 3, 1).cpu().double().numpy()
        labels = []
        for image in images:  # one SLIC call per image: scikit-image segments one image at a time
            low, high = image.min(), image.max()
            scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
            label = slic(scaled, n_segments=self.segments, compactness=self.compactness, start_label=0,
                         channel_axis=-1, convert2lab=False)
            labels.append(np.unique(label, return_inverse=True)[1].reshape(label.shape))
        return torch.as_tensor(np.stack(labels).reshape(len(images), -1), dtype=torch.long, device=x.device)

    def compute(self, case: Case) -> MetricResult:
        segments = self.superpixels(case.x)
        count = int(segments.max()) + 1
        sizes = segment_sums(torch.ones_like(case.pixels), segments, count)
        relevance = segment_sums(case.pixels, segments, count, mean=True)
        relevance = relevance.masked_fill(sizes == 0, float("-inf"))  # absent ids of images with fewer segments
        order = stable_order(relevance, descending=True)
        present = (sizes > 0).sum(1)  # segments per image
        counts = torch.arange(1, count + 1)
        masks = removal_masks(order, segments, counts)
        valid = counts[None, :].to(present.device) <= present[:, None]
        base = make_baseline(case.x, self.baseline, make_generator(self.seed))
        scores = evaluate_masks(case, masks, base, valid=valid)
        start = case.base_scores()
        curve = torch.cat([start[:, None], scores], 1) / start[:, None]
        # trapezoid over each image's own k segments (positions j/k): (Σ_j c_j − (c_0 + c_k)/2) / k
        k = present.to(curve.dtype)
        last = curve.gather(1, present[:, None].to(curve.device))[:, 0]
        area = (curve.nan_to_num(0.0).sum(1) - (curve[:, 0] + last) / 2) / k
        return MetricResult(1 - area, curve, {"segments": present})


@register
class ROAD(_Flipping):
    """Remove and debias (Rong et al. 2022) with noisy linear imputation.

    For each fraction p in ``percentages`` the p·P most (``"morf"``) or least (``"lerf"``) relevant pixels are
    removed and imputed: every removed pixel becomes the weighted mean of its 8 neighbours (weights 1/6 for
    direct, 1/12 for diagonal neighbours), which is one sparse linear system per image over all removed pixels
    (shared by the channels), plus Gaussian noise of std ``noise`` × the sample's value range. The systems are
    solved to the accuracy that noise allows: the largest deviation from the exact solution is held (by an
    error estimate, checked against a direct solve in the tests) to a tenth of the noise's std (see
    :mod:`xaikit.metrics.imputation`; with ``noise=0`` to a relative residual of 1e-5). The curve holds the target probability at 0 and each fraction; the score is its mean over the
    fractions. MoRF: lower is better; LeRF: higher is better.
    """

    higher_is_better = False

    def __init__(self, order: str = "morf", percentages: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 noise: float = 0.01, softmax: bool = True, batch_size: int | str = "auto",
                 seed: int | None = 0) -> None:
        self.morf = check_order(order)
        percentages = tuple(float(p) for p in percentages)
        if not percentages or any(not 0 < p <= 1 for p in percentages):
            raise ValueError(f"percentages must be fractions in (0, 1], got {percentages!r}")
        check_positive(noise, "noise", allow_zero=True)
        self._common(batch_size, softmax, seed)
        self.order, self.percentages, self.noise = order, percentages, noise
        self.higher_is_better = not self.morf

    def compute(self, case: Case) -> MetricResult:
        if case.x.ndim != 4:
            raise ValueError(f"ROAD imputes pixels of images (N, C, H, W), got shape {tuple(case.x.shape)}")
        pixels = case.layout.pixels
        counts = torch.tensor([round(p * pixels) for p in self.percentages])
        order = stable_order(case.pixels, descending=self.morf)
        masks = removal_masks(order, None, counts)
        x = case.x
        dims = tuple(range(1, x.ndim))
        spread = (x.amax(dims) - x.amin(dims)) * self.noise
        noise = torch.randn(len(counts), *x.shape[1:], generator=make_generator(self.seed), dtype=x.dtype).to(x.device)

        def fill(owner, step, m, x_rows):
            removed = m.reshape(m.shape[0], *x.shape[2:])
            std = spread[owner]
            return noisy_linear_imputation(x_rows, removed, noise[step] * std.view(-1, 1, 1, 1), atol=ACCURACY * std)

        scores = evaluate_masks(case, masks, fill=fill)
        curve = torch.cat([case.base_scores()[:, None], scores], 1)
        return MetricResult(scores.mean(1), curve, {"percentages": torch.tensor((0.0, *self.percentages))})


@register
class Infidelity(Metric):
    """Infidelity (Yeh et al. 2019, eq. 4): INFD = E_I[(Iᵀ R − (f(x) − f(x − I)))²], lower is better.

    ``perturbation="gaussian"``: I is Gaussian noise per pixel (the same for all channels of a pixel) with std
    ``std`` × the sample's value range, so Iᵀ R = Σ_p I_p R_p. ``"square"``: I = x − baseline on a random square
    of ``patch_size`` pixels (needs an attribution with the input's shape). The expectation is estimated with
    ``samples`` draws. ``normalise=True`` first rescales R by the optimal β = E[IᵀR·Δf]/E[(IᵀR)²] per sample
    (as in the authors' experiments), which makes the score independent of the attribution's scale.
    """

    family = "faithfulness"
    higher_is_better = False

    def __init__(self, perturbation: str = "gaussian", samples: int = 50, std: float = 0.1, patch_size: int = 8,
                 baseline: Any = "zero", normalise: bool = False, softmax: bool = False,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_choice(perturbation, "perturbation", ("gaussian", "square"))
        check_positive(samples, "samples", integer=True)
        check_positive(std, "std")
        check_positive(patch_size, "patch_size", integer=True)
        check_baseline(baseline)
        self._common(batch_size, softmax, seed)
        self.perturbation, self.samples, self.std, self.patch_size = perturbation, samples, std, patch_size
        self.baseline, self.normalise = baseline, normalise

    def compute(self, case: Case) -> MetricResult:
        x, layout = case.x, case.layout
        generator = make_generator(self.seed)
        owner = torch.arange(case.n, device=x.device).repeat_interleave(self.samples)
        if self.perturbation == "gaussian":
            dims = tuple(range(1, x.ndim))
            spread = (x.amax(dims) - x.amin(dims)) * self.std
            noise = torch.randn(self.samples, layout.pixels, generator=generator, dtype=x.dtype).to(x.device)
            noise_rows = noise.repeat(case.n, 1) * spread[owner, None]  # (N*samples, P)
            projected = (noise_rows.reshape(case.n, self.samples, -1) * case.pixels[:, None]).sum(2)
            inputs = x[owner] - layout.expand(noise_rows)
        else:
            if tuple(case.attribution.shape[1:]) != layout.shape:
                raise ValueError("perturbation='square' needs an attribution with the input's shape (per channel)")
            squares = self._squares(case, generator)  # (samples, P)
            base = make_baseline(x, self.baseline, generator)
            removed = layout.expand(squares).to(x.dtype)  # (samples, 1, ...)
            delta = (x - base)[:, None] * removed[None]  # I = x − baseline on the square: (N, samples, ...)
            projected = (delta * case.attribution[:, None]).flatten(2).sum(2)
            inputs = (x[:, None] - delta).reshape(-1, *x.shape[1:])
        drop = case.base_scores()[:, None] - case.scores(inputs, owner).reshape(case.n, self.samples)
        if self.normalise:
            beta = (projected * drop).mean(1, keepdim=True) / projected.square().mean(1, keepdim=True).clamp_min(1e-30)
            projected = projected * beta
        return MetricResult((projected - drop).square().mean(1))

    def _squares(self, case: Case, generator: torch.Generator) -> torch.Tensor:
        spatial = case.layout.spatial
        size = [min(self.patch_size, s) for s in spatial]
        corners = [torch.randint(0, s - p + 1, (self.samples,), generator=generator) for s, p in zip(spatial, size)]
        grids = torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij")
        inside = torch.ones(self.samples, *spatial, dtype=torch.bool)
        for grid, corner, p in zip(grids, corners, size):
            view = corner.view(-1, *([1] * len(spatial)))
            inside &= (grid[None] >= view) & (grid[None] < view + p)
        return inside.reshape(self.samples, -1).to(case.x.device)


@register
class Sufficiency(Metric):
    """Sufficiency (Dasgupta et al. 2022): do samples with similar explanations get the same prediction?

    For each sample, the other samples of the batch whose explanation lies within cosine distance ``threshold``
    are its neighbours; the score is the fraction of them predicted as the same class (the arg-max of the
    output). A data-set-level criterion: a score depends on the other samples of the batch *by definition*.
    A sample without neighbours scores NaN (with a warning). Higher is better.
    """

    family = "faithfulness"
    higher_is_better = True

    def __init__(self, threshold: float = 0.6, batch_size: int | str = "auto") -> None:
        check_positive(threshold, "threshold", allow_zero=True)
        self._common(batch_size, False, None)
        self.threshold = threshold

    def compute(self, case: Case) -> MetricResult:
        flat = case.pixels
        unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
        distance = 1 - unit @ unit.T
        near = distance <= self.threshold
        near.fill_diagonal_(False)
        predicted = case.output.flatten(1).argmax(1) if case.output.ndim > 1 else (case.output > 0).long()
        same = predicted[:, None] == predicted[None, :]
        count = near.sum(1)
        scores = (near & same).sum(1) / count.clamp_min(1)
        if (count == 0).any():
            warnings.warn(
                f"Sufficiency: sample(s) {(count == 0).nonzero().flatten().tolist()} have no other sample in the "
                f"batch with an explanation within distance {self.threshold}; their score is NaN", UserWarning,
                stacklevel=4)
        return MetricResult(torch.where(count > 0, scores.to(flat.dtype), torch.full_like(flat[:, 0], float("nan"))))
