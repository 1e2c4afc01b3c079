"""Interaction indices at a budget of model evaluations: stratified sampling and a regression-adjusted estimate.

The coalitions are those of xaikit's KernelSHAP (:func:`xaikit.methods.machinery.kernel_design.kernel_design`):
the cheap sizes (1 and d-1, 2 and d-2, ...) enumerated while sampling would spend as much on them, the rest
drawn without replacement, each coalition with its complement. Written in the values (:mod:`.indices`),
``I(S) = Σ_U c(|S|, |U ∩ S|, |U|) v(U)``; per size u the sum over the ``C(d, u)`` coalitions is

- exact on the enumerated sizes,
- on a sampled size, ``C(d, u) / n_u`` times the sum over the ``n_u`` coalitions drawn (uniform within the size:
  the Horvitz-Thompson estimate of the stratum, as SHAP-IQ does, Fumagalli et al., NeurIPS 2023).

``estimator="sampling"`` applies this to ``v``. ``estimator="regression"`` (the default) first fits a polynomial
surrogate ``g(U) = v(∅) + Σ_{T ⊆ U, 1 <= |T| <= k} a(T)`` to the same values by the Shapley-kernel weighted least
squares that defines FSII (Tsai et al. 2023; each sampled coalition weighted by its stratum's share, the fit
constrained to ``g(N) = v(N)``), takes the index of ``g`` exactly from its Möbius coefficients ``a``
(:func:`.indices.from_mobius`), and adds the sampling estimate of the index of the residual ``v - g``
(regression-adjusted Monte Carlo, Witter et al. 2025): the sampling then only estimates what the polynomial
misses. Both are linear in the values and efficient exactly (each coalition's weights sum to zero over the
sets, for every efficient index); once every size is enumerated both are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..methods.machinery.kernel_design import kernel_design
from .indices import from_mobius, value_table

ESTIMATORS = ("regression", "sampling")
#: ridge penalty of the surrogate's interaction coefficients, relative (see :func:`_fit`)
RIDGE = 0.3


def min_budget(d: int, k: int) -> int:
    """Fewest evaluations an estimate of order k on d players accepts: one per set of size 1..k."""
    return min(sum(math.comb(d, s) for s in range(1, k + 1)), 2**d - 2)


@dataclass
class Plan:
    """The evaluated coalitions ``z`` ``(C, d)`` (never ∅ or N), their sizes and each one's stratum factor
    ``scale`` ``(C,)`` (1 on enumerated sizes, ``C(d, u) / n_u`` on sampled ones)."""

    z: torch.Tensor
    size: torch.Tensor
    scale: torch.Tensor
    exact_sizes: list[int]

    @property
    def complete(self) -> bool:
        """Whether every coalition is evaluated (then the estimate is exact)."""
        return len(self.exact_sizes) == self.z.shape[1] - 1


def plan(d: int, budget: int, paired: bool, generator: torch.Generator) -> Plan:
    """The coalitions of KernelSHAP's design for ``budget`` evaluations and their stratum factors."""
    design = kernel_design(d, budget, paired, generator)
    size = design.size
    counts = torch.bincount(size, minlength=d + 1).double()
    total = torch.tensor([float(math.comb(d, u)) for u in range(d + 1)], dtype=torch.float64)
    scale = (total / counts.clamp_min(1))[size]
    return Plan(design.z, size, scale, list(design.exact_sizes))


def estimate(empty: torch.Tensor, full: torch.Tensor, values: torch.Tensor, design: Plan, index: str, k: int,
             estimator: str, sets_member: torch.Tensor) -> torch.Tensor:
    """The index ``(G, P)`` of G games from ``v(∅)`` ``(G,)``, ``v(N)`` ``(G,)`` and the values ``(G, C)`` of
    ``design.z``; ``sets_member`` ``(P, d)`` are the sets S."""
    d = design.z.shape[1]
    z = design.z.to(values.device)
    member = sets_member.to(values.device)
    contains = (z.double() @ member.double().T) == member.sum(1).double()[None]  # (C, P): [T ⊆ U]
    correction = _correction_weights(z, design, member, index, d, k)  # (C, P) weights of the residuals
    if estimator == "sampling":
        return (values @ correction + _ends(empty, full, member, index, d, k))
    coefficients = _fit(empty, full, values, contains.double(), design, d, member.sum(1) > 1)  # (G, P) of g
    residual = values - empty[:, None] - coefficients @ contains.double().T
    return from_mobius(coefficients, member.cpu(), index, d, k).to(values.device) + residual @ correction


def _correction_weights(z, design: Plan, member, index, d, k) -> torch.Tensor:
    """``c(|S|, |U ∩ S|, |U|) × scale(U)`` ``(C, P)``."""
    table = value_table(index, d, k).to(z.device)
    overlap = (z.double() @ member.double().T).long()  # |U ∩ S|
    sizes = member.sum(1)
    return table[sizes[None, :], overlap, design.size.to(z.device)[:, None]] * design.scale.to(z.device)[:, None]


def _ends(empty, full, member, index, d, k) -> torch.Tensor:
    """The terms of ``v(∅)`` and ``v(N)``: ``c(s, 0, 0) v(∅) + c(s, s, d) v(N)``."""
    table = value_table(index, d, k).to(empty.device)
    sizes = member.sum(1).to(empty.device)
    return empty[:, None] * table[sizes, 0, 0][None] + full[:, None] * table[sizes, sizes, d][None]


def _fit(empty, full, values, x, design: Plan, d: int, higher: torch.Tensor) -> torch.Tensor:
    """Möbius coefficients ``(G, P)`` of the Shapley-kernel weighted least-squares polynomial with ``Σ a = v(N) -
    v(∅)``, as one KKT system for all games (the pseudo-inverse picks the smallest solution if the coalitions
    leave it undetermined).

    The coefficients of order >= 2 (``higher``) get a ridge penalty ``RIDGE × (their mean Gram diagonal) × P / C``
    (P coefficients, C coalitions): a prior that interactions are smaller than main effects, which fades as
    the evaluations grow. It only shapes the surrogate: the sampled correction keeps the estimate exact once
    every coalition is evaluated. Measured on the wine MLP (10 rows × 2 seeds, median error of the pairs):
    2.06 / 1.19 / 0.47 / 0.20 / 0.129 without it at 128 / 256 / 512 / 1024 / 2048 evaluations, 0.88 / 0.66 /
    0.40 / 0.19 / 0.128 with ``RIDGE = 0.3`` (0.03-1 all help at 128-256 evaluations).
    """
    u = design.size.double().to(values.device)
    binom = torch.exp(torch.lgamma(torch.tensor(d + 1.0)) - torch.lgamma(u + 1) - torch.lgamma(d - u + 1))
    weight = (d - 1) / (binom * u * (d - u)) * design.scale.to(values.device)  # kernel × stratum share
    p = x.shape[1]
    gram = x.T @ (weight[:, None] * x)
    higher = higher.to(gram.device)
    if higher.any():
        ridge = RIDGE * gram.diagonal()[higher].mean() * p / max(x.shape[0], 1)
        gram = gram + torch.diag(higher.double() * ridge)
    kkt = torch.zeros((p + 1, p + 1), dtype=torch.float64, device=values.device)
    kkt[:p, :p], kkt[:p, p], kkt[p, :p] = gram, 1.0, 1.0
    rhs = torch.cat([(values - empty[:, None]) @ (weight[:, None] * x), (full - empty)[:, None]], 1)  # (G, P+1)
    return (rhs @ torch.linalg.pinv(kkt).T)[:, :p]

