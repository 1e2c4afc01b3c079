"""Shapley values of interpretable features: exact, KernelSHAP and permutation sampling.

The game: the value of a coalition S of features is ``v(S) = E_b[f(x_S, b_{S̄})]``: the features in S come
from x, the others from a baseline b (one baseline, or the expectation over a background data set, i.e.
interventional Shapley values). The Shapley value of feature j (Shapley 1953) is

    φ_j = Σ_{S ⊆ F \\ {j}} |S|! (d - |S| - 1)! / d! · (v(S ∪ {j}) - v(S)),

and efficiency holds: ``Σ_j φ_j = v(F) - v(∅) = f(x) - E_b f(b)``. Every method reports the per-sample
deviation from it as ``info["convergence_delta"]``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import check_positive
from .baselines import BaselineSpec, describe_baseline, resolve_background, resolve_baseline
from .features import (
    Features, FeatureSpec, LazyInputs, attribution_dtype, perturb, random_ranks, resolve_features, reverse_ranks,
)
from .linear import constrained_least_squares
from .scoring import _ForwardMethod
from .seeding import check_seed, make_generator

#: most features ExactShapley accepts: 2^20 ≈ 10^6 coalitions per sample
MAX_EXACT_FEATURES = 20


class _Shapley(_ForwardMethod):
    """Shared settings and the coalition game of the Shapley methods."""

    default_features = "grid:8"

    def __init__(self, model: nn.Module, features: FeatureSpec = None, baseline: BaselineSpec | None = None,
                 background: torch.Tensor | None = None, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        super().__init__(model, batch_size, progress)
        if background is not None and baseline is not None:
            raise ValueError("give either baseline= (one reference input) or background= (a data set), not both")
        if background is not None and not isinstance(background, torch.Tensor):
            raise TypeError(f"background must be a tensor of reference samples (B, ...), got {type(background).__name__}")
        self.features, self.baseline, self.background = features, baseline, background

    def _game(self, x: torch.Tensor) -> tuple[Features, torch.Tensor]:
        features = resolve_features(self.features, x, default=self.default_features)
        if self.background is not None:
            return features, resolve_background(self.background, x)
        return features, resolve_baseline("zero" if self.baseline is None else self.baseline, x)[:, None]

    def values(self, x, features: Features, baseline: torch.Tensor, coalitions: int,
               coalition: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], targets, args, kwargs) -> torch.Tensor:
        """``v`` ``(N, C, K)`` (float64) of coalitions ``0..C-1``; ``coalition(owner, c)`` gives their ``(M, d)`` bools.

        Rows are (sample, coalition, reference) triples built chunk by chunk; the B references of a
        background are averaged.
        """
        n, refs = x.shape[0], baseline.shape[1]

        def build(start: int, stop: int) -> torch.Tensor:
            rows = torch.arange(start, stop, device=x.device)
            ref, rest = rows % refs, rows // refs
            owner, c = rest // coalitions, rest % coalitions
            return perturb(x, baseline, features.present(coalition(owner, c), owner), owner, ref)

        owner = torch.arange(n).repeat_interleave(coalitions * refs)
        scores = self.scores(LazyInputs(build, n * coalitions * refs, x), owner, targets, n, args, kwargs)
        return scores.double().view(n, coalitions, refs, -1).mean(2)

    def _results(self, x, features, phi: torch.Tensor, full: torch.Tensor, empty: torch.Tensor, info: dict):
        """Per target: attribution (each element gets its feature's φ) and info with the efficiency delta."""
        phi = phi * features.valid()[:, None]  # (N, K, d); padded slots carry nothing
        attribution = features.spread(phi.to(attribution_dtype(x))).expand(x.shape[0], phi.shape[1], *x.shape[1:])
        delta = phi.sum(2) - (full - empty)
        results = []
        for k in range(phi.shape[1]):
            entry = {"feature_attribution": phi[:, k].to(attribution_dtype(x)), "convergence_delta": delta[:, k],
                     "value_full": full[:, k], "value_empty": empty[:, k], "features": features.mask,
                     "baseline": "background" if self.background is not None else describe_baseline(
                         "zero" if self.baseline is None else self.baseline), **info}
            results.append((attribution[:, k].contiguous(), entry))
        return results


def _bits(c: torch.Tensor, d: int) -> torch.Tensor:
    return (c[:, None] >> torch.arange(d, device=c.device)) & 1 == 1


class ExactShapley(_Shapley):
    """Exact Shapley values by evaluating all ``2^d`` coalitions (Shapley 1953).

    Parameters
    ----------
    model : nn.Module
    features : None, "grid:N", "slic:N" or int tensor
        The players (see :mod:`xaikit.methods.features`); default: columns of tabular inputs, ``"grid:4"``
        (16 cells) on images. At most 20 features per sample.
    baseline : number, tensor, "zero", "mean" or "blur", optional
        Value of absent features (default ``"zero"``).
    background : tensor (B, ...), optional
        A background data set instead: ``v(S)`` is the mean over its B samples (cost × B).
    batch_size, progress
        As for every forward-only method.

    Notes
    -----
    Cost: ``N * (1 + 2^d * B)`` forward passes. φ is formed as one matrix product of the ``2^d`` values with
    the Shapley weights ``+w(|S|-1)`` (j ∈ S) / ``-w(|S|)`` (j ∉ S), ``w(s) = s!(d-s-1)!/d!``.
    """

    default_features = "grid:4"

    def attribute(self, x, targets, output, args, kwargs):
        features, baseline = self._game(x)
        d = features.d
        if d > MAX_EXACT_FEATURES:
            raise ValueError(
                f"features: ExactShapley evaluates all 2^d coalitions and d = {d} features gives 2^{d} = "
                f"{2 ** d:,} per sample; the limit is d <= {MAX_EXACT_FEATURES}. Use coarser features (e.g. "
                "features='grid:4') or KernelSHAP / PermutationShapley"
            )
        coalitions = 2**d
        v = self.values(x, features, baseline, coalitions, lambda owner, c: _bits(c, d), targets, args, kwargs)
        s = torch.arange(d + 1, dtype=torch.float64)
        w = torch.exp(torch.lgamma(s + 1) + torch.lgamma(d - s) - math.lgamma(d + 1))  # w(s), s = 0..d-1
        w[d] = 0.0
        phi = torch.zeros((x.shape[0], v.shape[2], d), dtype=torch.float64, device=v.device)
        for start in range(0, coalitions, 1 << 16):  # weights built in pieces: 2^20 × 20 would be large
            c = torch.arange(start, min(coalitions, start + (1 << 16)))
            z = _bits(c, d)
            size = z.sum(1, keepdim=True)
            coef = torch.where(z, w[(size - 1).clamp_min(0)], -w[size]).to(v.device)
            phi += torch.einsum("nck,cd->nkd", v[:, start:start + c.shape[0]], coef)
        return self._results(x, features, phi, v[:, -1], v[:, 0], {"coalitions": coalitions})


class KernelSHAP(_Shapley):
    """KernelSHAP (Lundberg & Lee, NeurIPS 2017, Theorem 2) with paired sampling (Covert & Lee, AISTATS 2021).

    Coalitions ``z`` are drawn from the Shapley kernel's distribution (size s with probability
    ``∝ (d-1)/(s(d-s))``, then a uniform subset of that size), so the regression weights are uniform; φ solves
    ``min Σ_z (v(z) - v(∅) - z·φ)²`` subject to the efficiency constraint ``Σ φ = v(F) - v(∅)``, enforced
    exactly (KKT system in torch, float64).

    Parameters
    ----------
    model : nn.Module
    features, baseline, background
        As for :class:`ExactShapley` (default features: columns, or ``"grid:8"`` on images).
    samples : int
        Sampled coalitions per sample (model evaluations besides ``v(∅)``; rounded up to even when paired).
    paired : bool
        Antithetic sampling: each drawn coalition is evaluated with its complement (default ``True``); this
        reduces the error at equal budget. ``False`` gives the plain estimator.
    seed : int, optional
        Seed of the sampling (private generator; ``None`` draws a fresh seed, reported in ``info["seed"]``).
    batch_size, progress
        As for every forward-only method.

    Notes
    -----
    Cost: ``N * (1 + (samples + 1) * B)`` forward passes. ``v(F) = f(x)`` needs no extra pass. On a model that
    is additive in the features (e.g. linear) the regression is exact once the sampled coalitions span all
    features.
    """

    def __init__(self, model: nn.Module, features: FeatureSpec = None, samples: int = 1000, paired: bool = True,
                 baseline: BaselineSpec | None = None, background: torch.Tensor | None = None,
                 seed: int | None = None, batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model, features, baseline, background, batch_size, progress)
        check_positive(samples, "samples", integer=True)
        check_seed(seed)
        self.samples, self.paired, self.seed = samples, bool(paired), seed

    def _draw(self, count: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Coalitions ``(N, S, d)`` bool from the Shapley kernel distribution (pairs interleaved when paired)."""
        n, d = count.shape[0], int(count.max())
        draws = (self.samples + 1) // 2 if self.paired else self.samples
        s = torch.arange(1, max(d, 2), dtype=torch.float64)  # sizes 1..d-1
        d_i = count.double()[:, None]
        probs = torch.where(s[None] < d_i, (d_i - 1) / (s * (d_i - s)), torch.zeros(()))
        probs[probs.sum(1) == 0, 0] = 1.0  # a single feature: only the full coalition exists
        sizes = torch.multinomial(probs, draws, replacement=True, generator=generator) + 1  # (N, draws)
        ranks = random_ranks(count, draws, generator)
        z = ranks < sizes[..., None]
        if self.paired:
            valid = torch.arange(d)[None, None] < count.cpu()[:, None, None]
            z = torch.stack([z, valid & ~z], 2).flatten(1, 2)
        return z

    def attribute(self, x, targets, output, args, kwargs):
        n = x.shape[0]
        features, baseline = self._game(x)
        generator, seed = make_generator(self.seed)
        z = self._draw(features.count.cpu(), generator).to(x.device)  # (N, S, d)
        empty = torch.zeros((1, z.shape[2]), dtype=torch.bool, device=x.device)
        samples = z.shape[1]
        coalition = lambda owner, c: torch.where((c == 0)[:, None], empty, z[owner, (c - 1).clamp_min(0)])  # noqa: E731
        v = self.values(x, features, baseline, 1 + samples, coalition, targets, args, kwargs)  # (N, 1+S, K)
        full = torch.stack([t.score(output) for t in targets], 1).double()  # v(F) = f(x)
        k = full.shape[1]
        y = (v[:, 1:] - v[:, :1]).transpose(1, 2).flatten(0, 1)  # (N*K, S)
        design = z.repeat_interleave(k, 0)
        use = features.valid().repeat_interleave(k, 0)
        phi = constrained_least_squares(design, y, use, (full - v[:, 0]).flatten()).view(n, k, -1)
        return self._results(x, features, phi, full, v[:, 0], {"samples": samples, "paired": self.paired, "seed": seed})


class PermutationShapley(_Shapley):
    """Shapley values by sampling feature orders (Štrumbelj & Kononenko, KAIS 2014), with antithetic orders.

    For a random order of the features, each feature's marginal contribution is the change of ``v`` when it
    joins the features before it; φ is the mean over orders. With ``antithetic=True`` every order is paired
    with its reverse (Mitchell et al., JMLR 2022), which lowers the error at equal budget. Efficiency holds
    exactly for every order (the contributions telescope to ``v(F) - v(∅)``).

    Parameters
    ----------
    model : nn.Module
    features, baseline, background
        As for :class:`ExactShapley` (default features: columns, or ``"grid:8"`` on images).
    permutations : int
        Number of orders per sample (rounded up to even when antithetic).
    antithetic : bool
        Pair each order with its reverse (default ``True``); ``False`` gives the plain estimator.
    seed : int, optional
        Seed of the orders (private generator; ``None`` draws a fresh seed, reported in ``info["seed"]``).
    batch_size, progress
        As for every forward-only method.

    Notes
    -----
    Cost: ``N * (1 + (1 + permutations * (d - 1)) * B)`` forward passes (``v(F) = f(x)`` is free).
    """

    def __init__(self, model: nn.Module, features: FeatureSpec = None, permutations: int = 16,
                 antithetic: bool = True, baseline: BaselineSpec | None = None, background: torch.Tensor | None = None,
                 seed: int | None = None, batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model, features, baseline, background, batch_size, progress)
        check_positive(permutations, "permutations", integer=True)
        check_seed(seed)
        self.permutations, self.antithetic, self.seed = permutations, bool(antithetic), seed

    def attribute(self, x, targets, output, args, kwargs):
        n = x.shape[0]
        features, baseline = self._game(x)
        d, count = features.d, features.count.cpu()
        generator, seed = make_generator(self.seed)
        if self.antithetic:
            ranks = random_ranks(count, (self.permutations + 1) // 2, generator)
            ranks = torch.stack([ranks, reverse_ranks(ranks, count)], 2).flatten(1, 2)
        else:
            ranks = random_ranks(count, self.permutations, generator)
        ranks = ranks.to(x.device)  # (N, P, d)
        orders, steps = ranks.shape[1], max(d - 1, 1)

        def coalition(owner: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            """c = 0: ∅; else the first ``k`` features of order ``p`` with (p, k-1) = divmod(c - 1, d - 1)."""
            p, k = (c - 1).clamp_min(0) // steps, (c - 1).clamp_min(0) % steps + 1
            return (ranks[owner, p] < k[:, None]) & (c > 0)[:, None]

        chain = 1 + orders * (d - 1) if d > 1 else 1
        v = self.values(x, features, baseline, chain, coalition, targets, args, kwargs)  # (N, chain, K)
        full = torch.stack([t.score(output) for t in targets], 1).double()
        k = full.shape[1]
        empty = v[:, 0]
        inner = v[:, 1:].view(n, orders, d - 1, k) if d > 1 else v[:, 1:].view(n, orders, 0, k)
        path = torch.cat([empty[:, None, None].expand(n, orders, 1, k), inner,
                          full[:, None, None].expand(n, orders, 1, k)], 2)  # v after 0..d features joined
        gains = path.diff(dim=2)  # (N, P, d, K): gain of the feature at position t of the order
        position = ranks.clamp_max(d - 1)  # feature j sits at position rank_j
        phi = gains.gather(2, position[..., None].expand(n, orders, d, k)).mean(1).transpose(1, 2)  # (N, K, d)
        info = {"permutations": orders, "antithetic": self.antithetic, "seed": seed}
        return self._results(x, features, phi, full, empty, info)
