"""KL confidence bounds on Bernoulli means and the KL-LUCB selection of the best arms.

Kaufmann & Kalyanakrishnan, "Information Complexity in Bandit Subset Selection", COLT 2013 (KL-LUCB), as
Anchors uses it (Ribeiro, Singh, Guestrin, AAAI 2018, §3.1): an arm is a candidate rule, a pull draws samples
from the perturbation distribution conditioned on the rule, and its reward is whether the model keeps the
explained class. The bounds are

    U(p̂, n) = max{q ∈ [p̂, 1] : n·KL(p̂ ‖ q) ≤ β},   L(p̂, n) = min{q ∈ [0, p̂] : n·KL(p̂ ‖ q) ≤ β},

found by bisection for all arms at once. KL-LUCB's exploration rate is β(t, δ) = log(k₁ K t^α / δ) (k₁ = 405.5,
α = 1.1, the constants of the KL-LUCB paper's Theorem 2) for K arms at round t (``rate="kl-lucb"``), or the
one-look union bound β = log(K / δ) (``rate="union"``): about half the samples, without the guarantee of
Theorem 2 over many looks. Anchors uses the selection only to choose its beam; the precision guarantee of an
anchor comes from a separate verification on fresh draws (:mod:`xaikit.rules.anchors`).
"""
from __future__ import annotations

import math
from typing import Callable, Generator

import numpy as np
import torch

#: constants of KL-LUCB's exploration rate (Kaufmann & Kalyanakrishnan 2013, Theorem 2)
K1, ALPHA = 405.5, 1.1
#: per round, up to ``STRONG·best`` unchosen arms (those of highest upper bound) are pulled with the chosen ones:
#: the same draws as ``best`` of them on the breast-cancer benchmark, in 2.5× fewer rounds (each round is one
#: sampler call and one bound computation per explained row)
STRONG = 4


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) ‖ Bernoulli(q)), element-wise (0·log 0 = 0; q clipped away from 0 and 1)."""
    q = q.clamp(1e-12, 1 - 1e-12)
    return torch.special.xlogy(p, p / q) + torch.special.xlogy(1 - p, (1 - p) / (1 - q))


def kl_bounds(mean: torch.Tensor, n: torch.Tensor, level: torch.Tensor | float,
              iterations: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` KL confidence bounds of Bernoulli means ``mean`` estimated from ``n`` draws at
    exploration level ``level`` (``β``), by bisection (``iterations`` halvings: width 2⁻¹⁶).

    Both bounds of all arms are bisected together in one float64 array; in numpy, because the arrays are small
    (a few arms) and the search calls this once per bandit step: torch's per-operation overhead dominated."""
    lower, upper = _kl_bounds(mean.detach().double().cpu().numpy(), n.detach().double().cpu().numpy(),
                              np.asarray(level, dtype=np.float64), iterations)
    return torch.from_numpy(lower), torch.from_numpy(upper)


def _kl_bounds(m: np.ndarray, n: np.ndarray, level: np.ndarray,
               iterations: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """:func:`kl_bounds` on numpy arrays."""
    budget = level / np.maximum(n, 1)
    p = np.concatenate([m, m])
    budget = np.broadcast_to(budget, m.shape)
    budget = np.concatenate([budget, budget])
    k = m.shape[0]
    # brackets [low, high]: the upper bound in [mean, 1] (first k), the lower bound in [0, mean] (last k)
    low = np.concatenate([m, np.zeros_like(m)])
    high = np.concatenate([np.ones_like(m), m])
    upper_side = np.arange(2 * k) < k
    with np.errstate(divide="ignore", invalid="ignore"):
        # KL(p ‖ q) = [p log p + (1−p) log(1−p)] − p log q − (1−p) log(1−q): the bracket is computed once
        entropy = np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log1p(-p), 0.0)
    rest = 1 - p
    for _ in range(iterations):
        mid = (low + high) / 2
        q = np.minimum(np.maximum(mid, 1e-12), 1 - 1e-12)
        inside = entropy - p * np.log(q) - rest * np.log1p(-q) <= budget
        # upper bound: inside -> move low up; lower bound: inside -> move high down
        move_low = inside == upper_side
        low = np.where(move_low, mid, low)
        high = np.where(move_low, high, mid)
    # the conservative ends of the last brackets: the upper bracket's high end, the lower bracket's low end
    return low[k:].copy(), high[:k].copy()


def grown_batch(draws: torch.Tensor, batch: int, max_draws: int) -> int:
    """Draws of the next pull of arms that have ``draws`` so far: as many as the least-drawn of them has (the
    samples double with each pull, so an arm needs ``O(log n)`` rounds, not ``O(n / batch)``), at least
    ``batch``, and no more than that arm still may take before ``max_draws``. Under the anytime rate
    (``rate="kl-lucb"``) the bounds hold at any sample count (the rate is indexed by the round ``t`` of the
    checks), so a growing batch keeps KL-LUCB's guarantee; it spends at most twice the draws a fixed batch would,
    in far fewer model calls."""
    least = int(draws.min())
    return max(batch, min(least, max_draws - least))


RATES = ("union", "kl-lucb")


def exploration_rate(arms: int, t: int, delta: float, rate: str = "kl-lucb") -> float:
    """``β(t, δ) = log(k₁ K t^α / δ)`` of KL-LUCB (``rate="kl-lucb"``), or ``log(K / δ)`` (``rate="union"``: a
    union bound over the ``K`` arms at one look)."""
    if rate == "union":
        return math.log(max(arms, 1) / delta)
    return math.log(K1 * max(arms, 1) * max(t, 1) ** ALPHA / delta)


def kl_lucb_steps(hits: torch.Tensor, draws: torch.Tensor, best: int, delta: float, epsilon: float,
                  batch: int, max_draws: int, rate: str = "kl-lucb",
                  ) -> Generator[tuple[torch.Tensor, int], torch.Tensor, torch.Tensor]:
    """KL-LUCB (batched, see :func:`kl_lucb`) as a generator: it yields the arms to pull and the draws of each
    (:func:`grown_batch`), is sent their hits, and returns the indices of the ``best`` arms. The caller runs many
    of them at once (the searches of many explained rows) and serves all their pulls with one model call.

    The bookkeeping is in numpy (a few hundred arms: torch's per-operation overhead dominated); with
    ``rate="union"`` the level does not change between rounds, so only the pulled arms' bounds are recomputed."""
    arms = hits.shape[0]
    if arms <= best:
        return torch.arange(arms)
    h, d = hits.numpy(), draws.numpy()  # views: updated in place
    lower, upper = np.zeros(arms), np.ones(arms)
    index = np.arange(arms)  # the arms whose bounds are (re)computed
    t = 0
    while True:
        t += 1
        if rate != "union":  # the anytime rate grows with t: every bound moves
            index = np.arange(arms)
        mean = h / d
        lower[index], upper[index] = _kl_bounds(mean[index], d[index],
                                                np.float64(exploration_rate(arms, t, delta, rate)))
        order = np.argsort(-mean, kind="stable")
        chosen = np.zeros(arms, dtype=bool)
        chosen[order[:best]] = True
        floor = lower[chosen].min()
        ceiling = upper[~chosen].max()
        if ceiling - floor < epsilon:
            break
        pullable = d < max_draws
        weak = chosen & pullable & (lower < ceiling - epsilon)  # at most ``best`` arms
        strong = ~chosen & pullable & (upper > floor + epsilon)
        cap = STRONG * best
        if int(strong.sum()) > cap:  # the ``STRONG·best`` highest upper bounds among the others
            keep = np.argsort(-np.where(strong, upper, -1.0), kind="stable")[:cap]
            strong = np.zeros_like(strong)
            strong[keep] = True
        ambiguous = weak | strong
        if not ambiguous.any():
            break
        index = ambiguous.nonzero()[0]
        n = grown_batch(draws[index], batch, max_draws)
        got = yield torch.from_numpy(index), n
        h[index] += got.double().numpy()
        d[index] += n
    return torch.from_numpy(np.argsort(-(h / d), kind="stable")[:best].copy())


def kl_lucb(pull: Callable[[torch.Tensor, int], torch.Tensor], hits: torch.Tensor, draws: torch.Tensor, best: int,
            delta: float, epsilon: float, batch: int, max_draws: int, rate: str = "kl-lucb") -> torch.Tensor:
    """Indices of the ``best`` arms by mean (KL-LUCB), batched.

    KL-LUCB pulls, each round, the weakest chosen arm (lowest lower bound among the ``best`` highest means) and
    the strongest other arm (highest upper bound), and stops when the latter's upper bound exceeds the former's
    lower bound by less than ``epsilon``. Here every arm whose interval still crosses that boundary is pulled in
    the same round: the chosen arms below the boundary and up to ``STRONG·best`` other arms of highest upper bound
    above it (``batch`` samples each at first, then doubling (:func:`grown_batch`), one
    call of ``pull(arms, n)`` returning the hits per arm): the two arms of KL-LUCB are always among them, so the
    stopping rule is KL-LUCB's, reached in fewer rounds (one forward pass per round for up to ``5·best`` arms).
    An arm is not pulled beyond ``max_draws`` draws; the search ends when no arm that could be pulled remains.

    ``rate`` is the exploration rate (:func:`exploration_rate`). ``hits`` and ``draws`` (float64, one entry per
    arm, every arm pulled at least once) are updated in place.
    """
    steps = kl_lucb_steps(hits, draws, best, delta, epsilon, batch, max_draws, rate)
    try:
        index, n = next(steps)
        while True:
            index, n = steps.send(pull(index, n))
    except StopIteration as stop:
        return stop.value
