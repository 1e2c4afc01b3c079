"""KL confidence bounds on Bernoulli means and the KL-LUCB selection of the best arms.

Kaufmann & Kalyanakrishnan, "Information Complexity in Bandit Subset Selection", COLT 2013 (KL-LUCB), as
Anchors uses it (Ribeiro, Singh, Guestrin, AAAI 2018, §3.1): an arm is a candidate rule, a pull draws samples
from the perturbation distribution conditioned on the rule, and its reward is whether the model keeps the
explained class. The bounds are

    U(p̂, n) = max{q ∈ [p̂, 1] : n·KL(p̂ ‖ q) ≤ β},   L(p̂, n) = min{q ∈ [0, p̂] : n·KL(p̂ ‖ q) ≤ β},

found by bisection for all arms at once, with the exploration rate β(t, δ) = log(k₁ K t^α / δ) (k₁ = 405.5,
α = 1.1, the constants of the KL-LUCB paper's Theorem 2) for K arms at round t.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

#: constants of KL-LUCB's exploration rate (Kaufmann & Kalyanakrishnan 2013, Theorem 2)
K1, ALPHA = 405.5, 1.1


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) ‖ Bernoulli(q)), element-wise (0·log 0 = 0; q clipped away from 0 and 1)."""
    q = q.clamp(1e-12, 1 - 1e-12)
    return torch.special.xlogy(p, p / q) + torch.special.xlogy(1 - p, (1 - p) / (1 - q))


def kl_bounds(mean: torch.Tensor, n: torch.Tensor, level: torch.Tensor | float,
              iterations: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` KL confidence bounds of Bernoulli means ``mean`` estimated from ``n`` draws at
    exploration level ``level`` (``β``), by bisection (``iterations`` halvings: width 2⁻¹⁶)."""
    mean, n = mean.double(), n.double().clamp_min(1)
    budget = torch.as_tensor(level, dtype=torch.float64) / n
    low_u, high_u = mean.clone(), torch.ones_like(mean)
    low_l, high_l = torch.zeros_like(mean), mean.clone()
    for _ in range(iterations):
        mid = (low_u + high_u) / 2
        inside = kl_bernoulli(mean, mid) <= budget
        low_u, high_u = torch.where(inside, mid, low_u), torch.where(inside, high_u, mid)
        mid = (low_l + high_l) / 2
        inside = kl_bernoulli(mean, mid) <= budget
        low_l, high_l = torch.where(inside, low_l, mid), torch.where(inside, mid, high_l)
    return high_l.clamp(0, 1), high_u.clamp(0, 1)  # the conservative ends of the last brackets


def exploration_rate(arms: int, t: int, delta: float) -> float:
    """``β(t, δ) = log(k₁ K t^α / δ)`` of KL-LUCB."""
    return math.log(K1 * max(arms, 1) * max(t, 1) ** ALPHA / delta)


def kl_lucb(pull: Callable[[torch.Tensor, int], torch.Tensor], hits: torch.Tensor, draws: torch.Tensor, best: int,
            delta: float, epsilon: float, batch: int, max_draws: int) -> torch.Tensor:
    """Indices of the ``best`` arms by mean (KL-LUCB), batched.

    KL-LUCB pulls, each round, the weakest chosen arm (lowest lower bound among the ``best`` highest means) and
    the strongest other arm (highest upper bound), and stops when the latter's upper bound exceeds the former's
    lower bound by less than ``epsilon``. Here every arm whose interval still crosses that boundary is pulled in
    the same round, up to ``best`` of each side (the chosen arms below the boundary, the ``best`` other arms of
    highest upper bound above it; ``batch`` samples each, one call of ``pull(arms, batch)`` returning the hits
    per arm): the two arms of KL-LUCB are always among them, so the stopping rule is KL-LUCB's, reached in fewer
    rounds (one forward pass per round for up to ``2·best`` arms). An arm is not pulled beyond
    ``max_draws`` draws; the search ends when no arm that could be pulled remains.

    ``hits`` and ``draws`` (float64, one entry per arm, every arm pulled at least once) are updated in place.
    """
    arms = hits.shape[0]
    if arms <= best:
        return torch.arange(arms)
    t = 0
    while True:
        t += 1
        mean = hits / draws
        lower, upper = kl_bounds(mean, draws, exploration_rate(arms, t, delta))
        order = torch.argsort(mean, descending=True, stable=True)
        chosen = torch.zeros(arms, dtype=torch.bool)
        chosen[order[:best]] = True
        floor = lower[chosen].min()
        ceiling = upper[~chosen].max()
        if float(ceiling - floor) < epsilon:
            break
        pullable = draws < max_draws
        weak = chosen & pullable & (lower < ceiling - epsilon)  # at most ``best`` arms
        strong = ~chosen & pullable & (upper > floor + epsilon)
        if int(strong.sum()) > best:  # the ``best`` highest upper bounds among the others
            keep = torch.argsort(torch.where(strong, upper, -1.0), descending=True, stable=True)[:best]
            strong = torch.zeros_like(strong)
            strong[keep] = True
        ambiguous = weak | strong
        if not ambiguous.any():
            break
        index = ambiguous.nonzero().flatten()
        hits[index] += pull(index, batch).to(hits.dtype)
        draws[index] += batch
    mean = hits / draws
    return torch.argsort(mean, descending=True, stable=True)[:best]
