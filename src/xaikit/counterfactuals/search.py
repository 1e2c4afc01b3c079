"""The two searches for counterfactuals, both over all samples and candidates at once.

Candidates are ``(N, k, D)`` (flattened inputs), written as ``c = x + u ⊙ s`` with ``s`` the per-feature scale
(MAD for tables, 1 for images), so that distances are in MAD units (Wachter et al. 2017, eq. 4). The loss of a
candidate set is that of DiCE (Mothilal, Sharma, Tan, FAT* 2020, eq. 1) with Wachter's validity weight λ:

    L = λ · mean_i hinge(c_i) + w_p · mean_i dist(c_i, x) − w_d · det(K) + w_pl · mean_i plaus(c_i),
    hinge(c) = max(0, max_{j≠t} f_j(c) − f_t(c) + κ),   dist = mean_j |c_j − x_j| / s_j,
    K_ab = 1 / (1 + dist(c_a, c_b))   (the DPP kernel of DiCE, eq. 4).

- :func:`gradient_search`: Adam on ``u`` through the model's autograd (one forward/backward pass of all ``N·k``
  candidates per step), projected onto the constraints after each step; λ doubles every ``steps // 6`` steps
  for the samples with no valid candidate yet (Wachter's schedule, here per sample). Every step's candidates are
  checked (categories snapped); kept: the closest valid one per slot (``k = 1``), or for a diverse set the best
  all-valid set by ``w_p · mean dist − w_d · det K``. With ``latent=(encode, decode)`` the descent runs on an
  autoencoder's codes and the candidates are decoded (REVISE, Joshi et al. 2019).
- :func:`genetic_search`: gradient-free, for any callable model: a population of ``population`` candidates per
  sample, seeded by moving random subsets of features to values of data rows; each generation keeps the fittest,
  recombines them, reverts random features to ``x`` (sparsity) and mutates features to data values; the whole
  population of all samples is one forward pass. The ``k`` returned are chosen greedily among the valid ones
  (closest first, then the one farthest from those chosen, discounted by its distance to ``x``).
- :func:`sparsify`: DiCE's post-hoc step, reverting features to ``x`` while valid; for a diverse set only where
  the set's objective does not get worse.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..metrics.counterfactual import knn_distance, reconstruction_error
from .constraints import Constraints

Forward = Callable[[torch.Tensor], torch.Tensor]  # flattened candidates (M, D) -> scores (M, C)


def margin(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``max_{j≠t} f_j − f_t`` per row (negative: classified as ``t``)."""
    own = scores.gather(-1, target[..., None])[..., 0]
    others = scores.scatter(-1, target[..., None], float("-inf")).amax(-1)
    return others - own


def plausibility_term(points: torch.Tensor, plausibility: Any, data: torch.Tensor | None,
                      scale: torch.Tensor, neighbours: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-point implausibility: the k-NN distance to the data (scaled L1) or an autoencoder's reconstruction
    error (on the input's shape), both from :mod:`xaikit.metrics.counterfactual`."""
    if isinstance(plausibility, torch.nn.Module):
        weight = next((p for p in plausibility.parameters() if p.is_floating_point()), None)
        inputs = points.reshape(-1, *shape).to(weight.dtype if weight is not None else points.dtype)
        return reconstruction_error(inputs, plausibility).to(points.dtype)
    return knn_distance(points, data, neighbours, scale)


Latent = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def gradient_search(forward: Forward, x: torch.Tensor, target: torch.Tensor, constraints: Constraints,
                    scale: torch.Tensor, k: int, steps: int, learning_rate: float, kappa: float,
                    proximity_weight: float, diversity_weight: float, plausibility: Any, plausibility_weight: float,
                    data: torch.Tensor | None, neighbours: int, shape: tuple[int, ...],
                    generator: torch.Generator, latent: Latent | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The closest valid candidate per slot ``(N, k, D)`` found along the descent, and whether one was found.

    A diverse set (``k > 1``, ``diversity_weight > 0``) is chosen as a set: of the steps where all ``k``
    candidates of a sample are valid, the one with the lowest ``w_p · mean dist − w_d · det K``; a sample whose
    ``k`` are never valid together falls back to the closest valid candidate per slot (choosing each slot's
    closest valid point on its own would discard the spread that the diversity term made).

    ``latent=(encode, decode)`` (flattened ``(M, D) -> (M, L)`` and back): the descent runs on latent codes
    ``z`` ``(N, k, L)`` started at ``encode(x)``, and a candidate is ``c = decode(z)`` projected onto the
    constraints (REVISE, Joshi et al. 2019, eq. 2: the candidates stay on the decoder's image of the data); the
    loss is the same, on ``c``."""
    n, d = x.shape
    # a diverse set starts further apart: det K is flat where the candidates coincide (its gradient vanishes)
    jitter = 0.3 if k > 1 and diversity_weight > 0 else 0.1
    if latent is None:
        noise = torch.randn(n, k, d, generator=generator, dtype=x.dtype) * jitter
        start = constraints.project(x[:, None] + noise * scale, x, snap=False)
        params = ((start - x[:, None]) / scale).detach().requires_grad_(True)

        def decode(p: torch.Tensor) -> torch.Tensor:
            return x[:, None] + p * scale
    else:
        encode, decoder = latent
        with torch.no_grad():
            z0 = encode(x).double()
        spread = z0.std(0, unbiased=False).clamp_min(1e-6) if n > 1 else z0.abs().mean().clamp_min(1e-6)
        noise = torch.randn(n, k, z0.shape[1], generator=generator, dtype=z0.dtype) * jitter * spread
        params = (z0[:, None] + noise).detach().requires_grad_(True)

        def decode(p: torch.Tensor) -> torch.Tensor:
            c = decoder(p.reshape(n * k, -1)).double().view(n, k, d)
            return constraints.project(c, x, snap=False)
    optimiser = torch.optim.Adam([params], lr=learning_rate)
    weight = torch.ones(n, dtype=x.dtype)
    best = x[:, None].expand(n, k, d).clone()
    best_dist = torch.full((n, k), float("inf"), dtype=x.dtype)
    period = max(1, steps // 6)
    wanted = target[:, None].expand(n, k)
    diverse = k > 1 and diversity_weight > 0
    best_set, best_set_loss = best.clone(), torch.full((n,), float("inf"), dtype=x.dtype)
    for step in range(steps):
        with torch.enable_grad():
            c = decode(params)
            scores = forward(c.reshape(n * k, d)).view(n, k, -1)
            hinge = (margin(scores, wanted) + kappa).clamp_min(0)
            change = (c - x[:, None]) / scale
            dist = change.abs().mean(-1)
            loss = weight * hinge.mean(1) + proximity_weight * dist.mean(1)
            if diversity_weight > 0 and k > 1:
                loss = loss - diversity_weight * dpp(change)
            if plausibility_weight > 0:
                plaus = plausibility_term(c.reshape(n * k, d), plausibility, data, scale, neighbours, shape)
                loss = loss + plausibility_weight * plaus.view(n, k).mean(1)
            (params.grad,) = torch.autograd.grad(loss.sum(), params)  # only these: the model's get no .grad
        optimiser.step()
        with torch.no_grad():
            if latent is None:
                moved = constraints.project(x[:, None] + params * scale, x, snap=False)
                params.copy_((moved - x[:, None]) / scale)
            else:
                moved = decode(params)
            candidate = constraints.snap(moved, x)
            valid = margin(forward(candidate.reshape(n * k, d)).view(n, k, -1), wanted) + kappa <= 0
            valid &= constraints.satisfied(candidate, x)
            moved_change = (candidate - x[:, None]) / scale
            dist = moved_change.abs().mean(-1)
            better = valid & (dist < best_dist)
            best = torch.where(better[..., None], candidate, best)
            best_dist = torch.where(better, dist, best_dist)
            if diverse:  # the best set of k all valid by the set's own objective (proximity and diversity)
                objective = proximity_weight * dist.mean(1) - diversity_weight * dpp(moved_change)
                improved = valid.all(1) & (objective < best_set_loss)
                best_set = torch.where(improved[:, None, None], candidate, best_set)
                best_set_loss = torch.where(improved, objective, best_set_loss)
            if (step + 1) % period == 0:
                weight = torch.where(torch.isfinite(best_dist).any(1), weight, weight * 2)
    if diverse:
        whole = torch.isfinite(best_set_loss)
        best = torch.where(whole[:, None, None], best_set, best)
        best_dist = torch.where(whole[:, None], torch.zeros_like(best_dist), best_dist)
    return best, torch.isfinite(best_dist)


def dpp(change: torch.Tensor) -> torch.Tensor:
    """The diversity term of DiCE, ``det K`` with ``K_ab = 1 / (1 + dist(c_a, c_b))`` (Mothilal et al. 2020,
    eq. 3), of candidates given as scaled changes ``(N, k, D)``; ``dist`` is the paper's distance (eq. 4): the mean
    over features of the MAD-scaled ``|c_a − c_b|``. (DiCE's code sums over features instead, which makes ``K``
    nearly the identity, and the term flat, at small distances.)"""
    pair = (change[:, :, None] - change[:, None]).abs().mean(-1)
    return torch.linalg.det(1 / (1 + pair))


def genetic_search(forward: Forward, x: torch.Tensor, target: torch.Tensor, constraints: Constraints,
                   scale: torch.Tensor, k: int, data: torch.Tensor, population: int, generations: int,
                   kappa: float, proximity_weight: float, plausibility: Any, plausibility_weight: float,
                   neighbours: int, shape: tuple[int, ...],
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` valid, diverse candidates per sample ``(N, k, D)`` from a genetic search, and which were found."""
    n, d = x.shape
    m = data.shape[0]
    mutable = ~constraints.immutable

    def donors(count: int) -> torch.Tensor:  # (N, count, D) values of random data rows
        return data[torch.randint(m, (n, count), generator=generator)].to(x.dtype)

    def blend(base: torch.Tensor, rate: torch.Tensor | float) -> torch.Tensor:
        """Move each mutable feature of ``base`` to a data row's value with probability ``rate``."""
        take = (torch.rand(base.shape, generator=generator) < rate) & mutable
        return constraints.project(torch.where(take, donors(base.shape[1]), base), x)

    def fitness(pop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = forward(pop.reshape(-1, d)).view(n, pop.shape[1], -1)
        gap = margin(scores, target[:, None].expand(n, pop.shape[1])) + kappa
        dist = ((pop - x[:, None]).abs() / scale).mean(-1)
        cost = proximity_weight * dist + 10.0 * gap.clamp_min(0) + 10.0 * (gap > 0).to(x.dtype)
        if plausibility_weight > 0:
            plaus = plausibility_term(pop.reshape(-1, d), plausibility, data, scale, neighbours, shape)
            cost = cost + plausibility_weight * plaus.view(n, -1).to(x.dtype)
        return cost, gap <= 0

    rates = torch.rand(n, population, 1, generator=generator) * 0.9 + 0.1
    pop = blend(x[:, None].expand(n, population, d), rates)
    elite = max(2, population // 4)
    cost, valid = fitness(pop)
    for _ in range(generations):
        order = cost.argsort(1)[:, :elite]
        parents = pop.gather(1, order[..., None].expand(-1, -1, d))
        a = parents.gather(1, torch.randint(elite, (n, population - elite, 1), generator=generator).expand(-1, -1, d))
        b = parents.gather(1, torch.randint(elite, (n, population - elite, 1), generator=generator).expand(-1, -1, d))
        child = torch.where(torch.rand(a.shape, generator=generator) < 0.5, a, b)
        back = torch.rand(child.shape, generator=generator) < 0.15  # revert to x: sparser, closer
        child = torch.where(back, x[:, None].expand_as(child), child)
        child = blend(child, 0.05)
        pop = torch.cat([parents, child], 1)
        cost, valid = fitness(pop)
    valid &= constraints.satisfied(pop, x)
    return choose_diverse(pop, valid, x, scale, k, proximity_weight)


def choose_diverse(pool: torch.Tensor, valid: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, k: int,
                   proximity_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy choice of ``k`` of the valid candidates ``pool`` ``(N, P, D)``: the closest to ``x`` first, then
    each time the one maximising ``min distance to those chosen − w_p · distance to x`` (duplicates excluded)."""
    n, p, d = pool.shape
    dist = ((pool - x[:, None]).abs() / scale).mean(-1)
    chosen = torch.zeros(n, k, dtype=torch.long)
    found = torch.zeros(n, k, dtype=torch.bool)
    nearest = torch.full((n, p), float("inf"), dtype=x.dtype)
    rows = torch.arange(n)
    for slot in range(k):
        gain = (nearest - proximity_weight * dist) if slot else -dist
        usable = valid & (nearest > 1e-12)
        gain = torch.where(usable, gain, torch.full_like(gain, float("-inf")))
        pick = gain.argmax(1)
        chosen[:, slot], found[:, slot] = pick, usable[rows, pick]
        between = ((pool - pool[rows, pick][:, None]).abs() / scale).mean(-1)
        nearest = torch.minimum(nearest, between)
    out = pool.gather(1, chosen[..., None].expand(-1, -1, d))
    return torch.where(found[..., None], out, x[:, None]), found


def sparsify(forward: Forward, candidates: torch.Tensor, found: torch.Tensor, x: torch.Tensor,
             target: torch.Tensor, kappa: float, scale: torch.Tensor, proximity_weight: float = 0.5,
             diversity_weight: float = 0.0) -> torch.Tensor:
    """Revert changed features to ``x`` one at a time (smallest scaled change first) where the candidate stays
    valid (DiCE's post-hoc sparsity step); one forward pass of all candidates per feature. Constraints hold after
    (reverting a feature to ``x`` never leaves its box).

    For a diverse set (``k > 1``, ``diversity_weight > 0``) a revert is also kept only where it does not worsen
    the set's objective ``w_p · mean dist(c_i, x) − w_d · det K`` (the loss of :func:`gradient_search` without
    its validity term, which the revert keeps at zero): the small changes go, those that make the set diverse stay.
    The slots are visited one after the other (each set is scored with its other slots as they are)."""
    n, k, d = candidates.shape
    out = candidates.clone()
    change = ((out - x[:, None]).abs() / scale)
    order = torch.where(change > 0, change, torch.full_like(change, float("inf"))).argsort(-1)
    wanted = target[:, None].expand(n, k)
    setwise = k > 1 and diversity_weight > 0

    def objective(sets: torch.Tensor) -> torch.Tensor:  # (N, k, D) -> (N,)
        moved = (sets - x[:, None]) / scale
        return proximity_weight * moved.abs().mean(-1).mean(1) - diversity_weight * dpp(moved)

    for step in range(d):
        j = order[..., step]  # (N, k) feature to try
        trial = out.clone()
        trial.scatter_(-1, j[..., None], x[:, None].expand(n, k, d).gather(-1, j[..., None]))
        ok = (margin(forward(trial.reshape(n * k, d)).view(n, k, -1), wanted) + kappa <= 0) & found
        if not setwise:
            out = torch.where(ok[..., None], trial, out)
            continue
        for slot in range(k):
            one = out.clone()
            one[:, slot] = trial[:, slot]
            keep = ok[:, slot] & (objective(one) <= objective(out) + 1e-12)
            out = torch.where(keep[:, None, None], one, out)
    return out
