"""KernelSHAP's coalitions and its estimator: exact small sizes, stratified paired sampling, regression adjustment.

The Shapley value written by coalition size (e.g. Kolpaczki et al., AAAI 2024, "stratified" Shapley) is

    φ_j = (v(F) - v(∅)) / d + 1/d · Σ_{s=1}^{d-1} Δ_{s,j},     Δ_{s,j} = μ⁺_{s,j} - μ⁻_{s,j},

with ``μ⁺_{s,j}`` (``μ⁻_{s,j}``) the mean of ``v`` over the coalitions of size s that contain (do not contain)
feature j. Every size counts equally, which is also where the Shapley kernel regression puts its leverage
(Musco & Witter, ICLR 2025). :func:`kernel_design` spends a budget of model evaluations as follows:

1. sizes s and d - s are evaluated exactly, cheapest first, as long as sampling would spend at least as
   many evaluations on them (the rule of the reference implementation of KernelSHAP, with our allocation):
   their Δ are exact;
2. the rest is spread over the remaining sizes in proportion to ``1 / sqrt(s (d - s))`` (:func:`_share`),
   drawn without replacement, each coalition with its complement (paired sampling, Covert & Lee, AISTATS
   2021: the pair's difference cancels every interaction of even order);
3. on the sampled sizes, Δ is a regression-adjusted Monte Carlo estimate (Witter et al. 2025; the GREG
   estimator of survey sampling): ``v`` is fitted by one intercept per size plus one slope per feature shared by
   all sampled sizes; Δ of the fit is exact (``(d b_j - Σ b) / (d - 1)``, the same at every size) and the
   sample means of the residuals correct it.

Every step is linear in the values, so the estimator is a matrix ``W`` with ``φ = [v(∅), v(F), v(z_1..C)] @ W``,
computed once per design and applied to all samples and targets at once. Efficiency (``Σ φ = v(F) - v(∅)``)
holds exactly: every row of the Δ part of ``W`` sums to zero over the features.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

#: at most this many bits are packed into an int64 key to find repeated coalitions
_KEY_BITS = 62


@dataclass
class Design:
    """Coalitions ``z`` ``(C, d)`` (never ∅ or F), their sizes, the estimator ``weights`` ``(C + 2, d)`` (rows:
    v(∅), v(F), the C coalitions) and the sizes evaluated exactly."""

    z: torch.Tensor
    size: torch.Tensor
    weights: torch.Tensor
    exact_sizes: list[int]

    @property
    def sampled(self) -> bool:
        """Whether some size is sampled (else the estimate is exact)."""
        return bool(set(self.size.tolist()) - set(self.exact_sizes))

    def with_ends(self) -> torch.Tensor:
        """The coalitions in the order of the rows of ``weights``: ∅, F, then ``z``."""
        d = self.z.shape[1]
        return torch.cat([torch.zeros((1, d), dtype=torch.bool), torch.ones((1, d), dtype=torch.bool), self.z])


def coalitions(c: torch.Tensor, d: int) -> torch.Tensor:
    """The coalitions ``(M, d)`` (bool) whose bits are the integers ``c`` ``(M,)``: feature j present iff bit j."""
    return (c[:, None] >> torch.arange(d, device=c.device)) & 1 == 1


def shapley_weights(z: torch.Tensor) -> torch.Tensor:
    """``(M, d)`` weights with ``φ = Σ_S v(S) weights[S]`` when ``z`` holds all 2^d coalitions (Shapley 1953).

    ``+w(|S|-1)`` where j ∈ S and ``-w(|S|)`` where j ∉ S, ``w(s) = s! (d-s-1)! / d!``.
    """
    d = z.shape[1]
    s = torch.arange(d + 1, dtype=torch.float64, device=z.device)
    w = torch.exp(torch.lgamma(s + 1) + torch.lgamma(d - s) - math.lgamma(d + 1))  # w(s), s = 0..d-1
    w[d] = 0.0
    size = z.sum(1, keepdim=True)
    return torch.where(z, w[(size - 1).clamp_min(0)], -w[size])


def min_budget(d: int) -> int:
    """The smallest number of coalitions KernelSHAP accepts for d features: d + 2, or all 2^d - 2 if fewer."""
    return min(d + 2, 2**d - 2) if d < 63 else d + 2


def kernel_design(d: int, budget: int, paired: bool, generator: torch.Generator) -> Design:
    """The coalitions for d features and a budget of ``budget`` evaluations besides v(∅) and v(F)."""
    z_parts: list[torch.Tensor] = []
    left, lo, hi = budget, 1, d - 1
    exact: list[int] = []
    while lo <= hi:  # sizes lo and hi = d - lo together, cheapest first
        cost = math.comb(d, lo) * (2 if lo < hi else 1)
        everything = sum(math.comb(d, s) for s in range(lo, hi + 1))
        if cost > left * _share(lo, lo, hi, d) and left < everything:  # sampling would spend less on it
            break
        for s in (lo, hi) if lo < hi else (lo,):
            z_parts.append(_all_of_size(d, s))
            exact.append(s)
        left, lo, hi = left - cost, lo + 1, hi - 1
    sampled_sizes = list(range(lo, hi + 1))
    if sampled_sizes and left > 0:
        z_parts.append(_sample(d, sampled_sizes, left, paired, generator))
    z = torch.cat(z_parts) if z_parts else torch.zeros((0, d), dtype=torch.bool)
    size = z.sum(1)
    return Design(z, size, _weights(z, size, d, exact, sampled_sizes), exact)


def _all_of_size(d: int, s: int) -> torch.Tensor:
    members = torch.tensor(list(itertools.combinations(range(d), s)), dtype=torch.long).view(-1, s)
    return torch.zeros((members.shape[0], d), dtype=torch.bool).scatter_(1, members, True)


def _share(s: int, lo: int, hi: int, d: int) -> float:
    """The fraction of a sampling budget over sizes lo..hi that goes to sizes s and d - s.

    Each size gets a weight ``1 / sqrt(s (d - s))``: the standard error of a mean difference Δ_{s,j} from n
    coalitions of size s is about ``σ / sqrt(n (s/d) (1 - s/d))``, so this is Neyman's allocation for equal
    spreads σ (between the even split over sizes and the Shapley kernel's ``1 / (s (d - s))``; measured best of
    the three on wine and breast cancer).
    """
    weight = lambda t: (1.0 if t < d - t else 0.5) / math.sqrt(t * (d - t))  # noqa: E731
    return weight(s) / sum(weight(t) for t in range(lo, hi + 1) if t <= d - t)


def _allocate(total: int, shares: list[float], caps: list[int]) -> list[int]:
    """``total`` units split in proportion to ``shares`` (largest remainders), none above its cap."""
    counts, free = [0] * len(shares), list(range(len(shares)))
    while total > 0 and free:
        weight = sum(shares[i] for i in free)
        exact = {i: total * shares[i] / weight for i in free}
        add = {i: int(exact[i]) for i in free}
        rest = total - sum(add.values())
        for i in sorted(free, key=lambda i: (add[i] - exact[i], i))[:rest]:
            add[i] += 1
        for i in free:
            counts[i] += add[i]
        total = sum(max(0, counts[i] - caps[i]) for i in free)
        counts = [min(c, cap) for c, cap in zip(counts, caps)]
        free = [i for i in free if counts[i] < caps[i]]
    return counts


def _sample(d: int, sizes: list[int], budget: int, paired: bool, generator: torch.Generator) -> torch.Tensor:
    """Coalitions drawn without replacement, evenly over ``sizes`` (with their complements when paired)."""
    lo_unit, hi_unit = sizes[0], sizes[-1]
    if paired:
        units = [s for s in sizes if s <= d - s]  # one unit: S of size s and its complement
        shares = [_share(s, lo_unit, hi_unit, d) for s in units]
        caps = [math.comb(d, s) if s < d - s else math.comb(d, s) // 2 for s in units]
        counts = _allocate(budget // 2, shares, caps)
    else:
        shares = [1 / math.sqrt(s * (d - s)) for s in sizes]
        units, counts = sizes, _allocate(budget, shares, [math.comb(d, s) for s in sizes])
    parts = []
    for s, count in zip(units, counts):
        if count == 0:
            continue
        z = _distinct_of_size(d, s, count, paired and 2 * s == d, generator)
        parts.append(torch.stack([z, ~z], 1).flatten(0, 1) if paired else z)
    return torch.cat(parts) if parts else torch.zeros((0, d), dtype=torch.bool)


def _distinct_of_size(d: int, s: int, count: int, up_to_complement: bool, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct uniformly random coalitions of size s (distinct up to complement if asked)."""
    found = torch.zeros((0, d), dtype=torch.bool)
    for _ in range(64):
        draws = torch.rand((2 * count, d), generator=generator).argsort(1) < s
        found = _unique_rows(torch.cat([found, draws]), up_to_complement)
        if found.shape[0] >= count or d > _KEY_BITS:
            break
    return found[:count]


def _unique_rows(z: torch.Tensor, up_to_complement: bool) -> torch.Tensor:
    """The distinct rows of ``z`` in order of first appearance (all rows when d is too large to pack)."""
    d = z.shape[1]
    if d > _KEY_BITS:
        return z
    bits = 1 << torch.arange(d, dtype=torch.long)
    key = (z.long() * bits).sum(1)
    if up_to_complement:
        key = torch.minimum(key, ((~z).long() * bits).sum(1))
    _, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), z.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(z.shape[0]), reduce="amin")
    return z[first.sort().values]


def _mean_difference(z: torch.Tensor, size: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``M`` ``(C, d)`` with ``(y @ M)_j = Σ_s [mean of y over rows of size s with j] - [... without j]``.

    A side with no row gives 0 (its mean difference is left to the regression fit).
    """
    m = torch.zeros(z.shape, dtype=torch.float64)
    zf = z.double()
    for s in sizes:
        rows = size == s
        if not rows.any():
            continue
        inside, outside = zf[rows], 1 - zf[rows]
        m[rows] = inside / inside.sum(0).clamp_min(1) - outside / outside.sum(0).clamp_min(1)
    return m


def _weights(z: torch.Tensor, size: torch.Tensor, d: int, exact: list[int], sampled: list[int]) -> torch.Tensor:
    """The estimator matrix ``W`` ``(C + 2, d)`` of the module docstring."""
    weights = torch.zeros((z.shape[0] + 2, d), dtype=torch.float64)
    weights[0], weights[1] = -1.0 / d, 1.0 / d
    weights[2:] = _mean_difference(z, size, exact) / d
    rows = (size[:, None] == torch.tensor(sampled, dtype=size.dtype)[None]).any(1) if sampled else size < 0
    if rows.any():
        zs, ss = z[rows].double(), size[rows]
        present = sorted(set(ss.tolist()))
        onehot = (ss[:, None] == torch.tensor(present)[None]).double()
        design = torch.cat([onehot, zs], 1)
        pinv = torch.linalg.pinv(design)  # (sizes + d, rows): least-squares coefficients of the fit
        slopes = pinv[len(present):]  # b = slopes @ y
        centre = (d * torch.eye(d, dtype=torch.float64) - 1) / (d - 1)  # Δ of the fit: (d b - Σ b) / (d - 1)
        fitted = (centre @ slopes).T * len(sampled)  # the fit's Δ, the same at each of the sampled sizes
        m = _mean_difference(z[rows], ss, sampled)
        m = m - m.mean(1, keepdim=True)  # each row sums to zero: efficiency is kept
        correction = m - design @ (pinv @ m)  # residual means: (I - A A⁺) M
        weights[2:][rows] = (fitted + correction) / d
    return weights
