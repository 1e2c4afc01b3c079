"""LIME (Ribeiro, Singh & Guestrin, KDD 2016): a locally weighted linear surrogate on interpretable features."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import check_choice, check_positive
from .base import register
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from .machinery.features import FeatureSpec, LazyInputs, attribution_dtype, perturb, random_ranks, resolve_features
from .machinery.linear import lasso_select, weighted_ridge
from .machinery.scoring import _ForwardMethod
from .machinery.seeding import check_seed, make_generator, resolve_seed

KERNELS = ("cosine", "euclidean")


@register
class LIME(_ForwardMethod):
    """Local Interpretable Model-agnostic Explanations (Ribeiro et al. 2016, Sec. 3).

    Interpretable features ``z' ∈ {0, 1}^d`` switch groups of input elements between ``x`` (1) and the
    baseline (0). Around ``z' = 1`` it samples ``samples`` vectors (the number of present features uniform in
    ``1..d``, then a uniform subset, Sec. 3.3), weights them with the exponential kernel
    ``π(z) = exp(-D(1, z')² / σ²)`` and fits a weighted ridge regression ``g(z') = c + β·z'`` to the model's
    scores (Eq. 2). The attribution of each element is the coefficient β of its feature.

    Parameters
    ----------
    model : nn.Module
    features : None, "grid:N", "slic:N" or int tensor
        Interpretable features (see :mod:`xaikit.methods.machinery.features`); default: columns of tabular inputs,
        ``"grid:8"`` (64 cells) on images. The paper uses superpixels: ``"slic:50"``.
    samples : int
        Number of perturbed samples per input (the original input is added as the first one, for free).
    baseline : number, tensor, "zero", "mean" or "blur"
        What an absent feature shows (default ``"zero"``).
    kernel : "cosine" or "euclidean"
        Distance D between ``z'`` and the all-ones vector: cosine distance ``1 - sqrt(|z'|/d)`` or Euclidean
        ``sqrt(d - |z'|)``.
    kernel_width : float, optional
        σ; default 0.25 for cosine, ``0.75 sqrt(d)`` for Euclidean.
    num_features : int, optional
        K of K-LASSO: keep the K features selected on the LASSO path and refit on them (Algorithm 1);
        ``None`` (default) fits all features.
    ridge : float
        Ridge penalty of the fit (default 1.0; 0 gives weighted least squares).
    seed : int, optional
        Seed of the sampling (private generator; ``None`` draws a fresh seed, reported in ``info["seed"]``).
    batch_size, progress
        As for every forward-only method.

    Notes
    -----
    Cost: ``N * (1 + samples)`` forward passes, no backward pass, plus a small batched fit in torch.
    ``info``: ``"feature_attribution"`` (N, d) coefficients, ``"intercept"``, ``"score"`` (weighted R² of the
    surrogate), ``"selected"`` features and the feature mask ``"features"``. On a model that is linear in the
    interpretable features (e.g. a linear model with one feature per column) the fit is exact for any kernel
    when ``ridge=0``: β_j = the effect of switching feature j from baseline to x.
    """

    def __init__(self, model: nn.Module, features: FeatureSpec = None, samples: int = 1000,
                 baseline: BaselineSpec = "zero", kernel: str = "cosine", kernel_width: float | None = None,
                 num_features: int | None = None, ridge: float = 1.0, seed: int | None = None,
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model, batch_size, progress)
        check_positive(samples, "samples", integer=True)
        check_choice(kernel, "kernel", KERNELS)
        if kernel_width is not None:
            check_positive(kernel_width, "kernel_width")
        if num_features is not None:
            check_positive(num_features, "num_features", integer=True)
        check_positive(ridge, "ridge", allow_zero=True)
        check_seed(seed)
        self.features, self.samples, self.baseline = features, samples, baseline
        self.kernel, self.kernel_width, self.num_features = kernel, kernel_width, num_features
        self.ridge, self.seed = float(ridge), seed

    def _kernel(self, present: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Similarity π of coalitions with ``present`` features (N, S) to the input, for d_i features."""
        present, d = present.double(), d.double()[:, None]
        if self.kernel == "cosine":
            distance = 1 - torch.sqrt(present / d)
            width = self.kernel_width or 0.25
        else:
            distance = torch.sqrt(d - present)
            width = self.kernel_width if self.kernel_width is not None else 0.75 * torch.sqrt(d)
        return torch.exp(-(distance**2) / width**2)

    def attribute(self, x, targets, output, args, kwargs):
        n, s = x.shape[0], self.samples
        features = resolve_features(self.features, x)
        baseline = resolve_baseline(self.baseline, x)[:, None]
        seed = resolve_seed(self.seed)
        generator = make_generator(seed)
        count = features.count.cpu()
        sizes = (torch.rand((n, s), generator=generator, dtype=torch.float64) * count[:, None]).long() + 1
        z = random_ranks(count, s, generator) < sizes[..., None]  # (N, S, d) on the CPU

        def build(start: int, stop: int) -> torch.Tensor:
            rows = torch.arange(start, stop)
            owner = rows // s
            present = features.present(z[owner, rows % s].to(x.device), owner.to(x.device))
            return perturb(x, baseline, present, owner)

        owner = torch.arange(n).repeat_interleave(s)
        scores = self.scores(LazyInputs(build, n * s, x), owner, targets, n, args, kwargs)  # (N*S, K)
        reference = torch.stack([t.score(output) for t in targets], 1)  # the original input, z' = 1
        valid = features.valid()
        design = torch.cat([valid.cpu()[:, None], z], 1).to(x.device)  # (N, 1+S, d)
        weights = self._kernel(design.sum(2), features.count)
        k = len(targets)
        y = torch.cat([reference[:, :, None], scores.view(n, s, k).transpose(1, 2)], 2).flatten(0, 1)
        rep = lambda t: t.repeat_interleave(k, 0)  # noqa: E731 - one problem per (sample, target)
        use = rep(valid)
        if self.num_features is not None and self.num_features < features.d:
            use = lasso_select(rep(design), y, rep(weights), use, self.num_features)
        beta, intercept, r2 = weighted_ridge(rep(design), y, rep(weights), use, self.ridge)
        beta = beta.to(attribution_dtype(x)).view(n, k, -1)
        attribution = features.spread(beta)  # (N, K, *r)
        attribution = attribution.expand(n, k, *x.shape[1:])
        results = []
        for j in range(k):
            info = {"feature_attribution": beta[:, j], "intercept": intercept.view(n, k)[:, j],
                    "score": r2.view(n, k)[:, j], "selected": use.view(n, k, -1)[:, j], "features": features.mask,
                    "samples": s, "seed": seed, "kernel": self.kernel, "baseline": describe_baseline(self.baseline)}
            results.append((attribution[:, j].contiguous(), info))
        return results
