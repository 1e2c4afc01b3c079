"""Shapley interaction indices of a coalition game: their Möbius weights, value weights and exact computation.

A game ``v`` on d players has the Möbius (Harsanyi) coefficients ``m(T) = Σ_{U ⊆ T} (-1)^{|T|-|U|} v(U)``, with
``v(U) = Σ_{T ⊆ U} m(T)``. Every index here is linear in the game and gives the set S (``1 <= |S| <= k``) a
share of the coefficients of the sets containing it,

    I(S) = Σ_{T ⊇ S} ω(|S|, |T|) m(T),

with ``ω`` depending only on the sizes (the indices are symmetric); a set T not containing S gives it nothing
(every index is built from discrete derivatives Δ_S, which vanish when a player of S does not matter):

- **SII**, the Shapley interaction index (Grabisch & Roubens 1999): ``ω = 1 / (t - s + 1)``; order 1 is the
  Shapley value, order 2 the pairwise interaction of Lundberg et al. 2020 (SHAP interaction values, halved
  and symmetrised). Not efficient beyond order 1.
- **k-SII**, the k-Shapley values (Bordt & von Luxburg, AISTATS 2023): SII aggregated with Bernoulli
  numbers, ``I_k(S) = Σ_{R ⊆ N∖S, |R| <= k-s} B_{|R|} SII(S ∪ R)`` (``B_1 = -1/2``), hence
  ``ω = Σ_r B_r C(t-s, r) / (t-s-r+1)``. Efficient.
- **STII**, the Shapley-Taylor index (Sundararajan, Dhamdhere & Agarwal, ICML 2020): ``m(S)`` below order k,
  and at order k each ``m(T)`` of ``|T| >= k`` split evenly over its ``C(t, k)`` subsets of size k. Efficient.
- **FSII**, the Faithful Shapley interaction index (Tsai, Yeh & Ravikumar, JMLR 2023): the polynomial of
  degree k closest to the game in the Shapley-kernel weighted least squares that matches ``v(∅)`` and ``v(N)``;
  Theorem 19 of the paper: ``ω = [t = s]`` for ``t <= k`` and
  ``(-1)^{k-s} s/(k+s) C(k, s) C(t-1, k) / C(t+k-1, k+s)`` above. Efficient.

Efficiency: ``Σ_{1 <= |S| <= k} I(S) = v(N) - v(∅)``.

Written in the values, ``I(S) = Σ_U c(|S|, |U ∩ S|, |U|) v(U)`` with
``c(s, l, u) = Σ_{t >= q} ω(s, t) (-1)^{t-u} C(d-q, t-q)``, ``q = s + u - l`` (the sets T ⊇ S ∪ U); the
estimators use it. Both tables are computed in exact rational arithmetic (the alternating sums cancel).
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache

import torch

#: the interaction indices, by name
INDICES = ("SII", "k-SII", "STII", "FSII")
#: most players the exact computation accepts (2^16 coalitions per game)
MAX_EXACT_PLAYERS = 16


@lru_cache(maxsize=None)
def bernoulli(n: int) -> Fraction:
    """The Bernoulli number ``B_n`` with ``B_1 = -1/2`` (``Σ_{j<=n} C(n+1, j) B_j = 0``)."""
    if n == 0:
        return Fraction(1)
    return -sum((math.comb(n + 1, j) * bernoulli(j) for j in range(n)), Fraction(0)) / (n + 1)


def omega(index: str, s: int, t: int, k: int) -> Fraction:
    """The share ``ω(s, t)`` of a Möbius coefficient of a set of size t that goes to one subset of size s."""
    if t < s:
        return Fraction(0)
    if index == "SII":
        return Fraction(1, t - s + 1)
    if index == "STII":
        if s < k:
            return Fraction(int(t == s))
        return Fraction(1, math.comb(t, k))
    if index == "k-SII":
        return sum((bernoulli(r) * math.comb(t - s, r) / (t - s - r + 1) for r in range(min(k - s, t - s) + 1)),
                   Fraction(0))
    if index == "FSII":
        if t <= k:
            return Fraction(int(t == s))
        return (-1) ** (k - s) * Fraction(s, k + s) * math.comb(k, s) * Fraction(math.comb(t - 1, k),
                                                                              math.comb(t + k - 1, k + s))
    raise ValueError(f"unknown index {index!r}; valid: {', '.join(INDICES)}")


@lru_cache(maxsize=64)
def omega_table(index: str, d: int, k: int) -> torch.Tensor:
    """``ω`` as a float64 table ``(k + 1, d + 1)`` indexed by (s, t)."""
    return torch.tensor([[float(omega(index, s, t, k)) if s >= 1 else 0.0 for t in range(d + 1)]
                         for s in range(k + 1)], dtype=torch.float64)


@lru_cache(maxsize=64)
def value_table(index: str, d: int, k: int) -> torch.Tensor:
    """``c(s, l, u)`` as a float64 table ``(k + 1, k + 1, d + 1)``: the weight of ``v(U)`` in ``I(S)``."""
    table = torch.zeros((k + 1, k + 1, d + 1), dtype=torch.float64)
    w = [[omega(index, s, t, k) for t in range(d + 1)] for s in range(k + 1)]
    for s in range(1, k + 1):
        for l in range(s + 1):  # noqa: E741 - l = |U ∩ S| as in the module docstring
            for u in range(l, d - s + l + 1):
                q = s + u - l
                total = sum((w[s][t] * (-1) ** (t - u) * math.comb(d - q, t - q) for t in range(q, d + 1)),
                            Fraction(0))
                table[s, l, u] = float(total)
    return table


def interaction_sets(d: int, k: int) -> list[tuple[int, ...]]:
    """The sets S with ``1 <= |S| <= k`` of players ``0..d-1``: by size, then lexicographic."""
    return [subset for s in range(1, k + 1) for subset in itertools.combinations(range(d), s)]


def membership(sets: list[tuple[int, ...]], d: int) -> torch.Tensor:
    """``(P, d)`` bool: which players each set holds."""
    member = torch.zeros((len(sets), d), dtype=torch.bool)
    for i, subset in enumerate(sets):
        member[i, list(subset)] = True
    return member


def mobius(values: torch.Tensor) -> torch.Tensor:
    """The Möbius transform ``(G, 2^d)`` of games ``(G, 2^d)`` (coalition c holds player j iff bit j of c)."""
    m = values.clone()
    d = int(math.log2(values.shape[1]))
    for j in range(d):
        view = m.view(m.shape[0], -1, 2, 1 << j)
        view[:, :, 1] -= view[:, :, 0]
    return m


def _superset_sums(x: torch.Tensor, d: int) -> torch.Tensor:
    """``y(S) = Σ_{T ⊇ S} x(T)`` along the last dimension (``2^d`` coalitions), in place of a copy."""
    y = x.clone()
    for j in range(d):
        view = y.view(-1, y.shape[-1] // (2 << j), 2, 1 << j)
        view[:, :, 0] += view[:, :, 1]
    return y


def exact(values: torch.Tensor, index: str, k: int, chunk: int = 1 << 24) -> torch.Tensor:
    """The index ``(G, P)`` (sets of :func:`interaction_sets`) of games given by all their values ``(G, 2^d)``.

    Möbius transform, split by the size of T, superset sums per size, then ``Σ_t ω(s, t)`` (all in float64,
    ``O(d^2 2^d)`` per game; games in chunks of about ``chunk`` numbers).
    """
    games, n = values.shape
    d = int(math.log2(n))
    sets = interaction_sets(d, k)
    keys = torch.tensor([sum(1 << j for j in subset) for subset in sets], dtype=torch.long)
    sizes = torch.tensor([len(subset) for subset in sets], dtype=torch.long)
    c = torch.arange(n, device=values.device)
    size_of = ((c[:, None] >> torch.arange(d, device=values.device)) & 1).sum(1)  # |T| of coalition c
    onehot = (size_of[None] == torch.arange(d + 1, device=values.device)[:, None]).double()  # (d+1, 2^d)
    weights = omega_table(index, d, k).to(values.device)[sizes]  # (P, d+1)
    out = torch.empty((games, len(sets)), dtype=torch.float64, device=values.device)
    step = max(1, chunk // ((d + 1) * n))
    for start in range(0, games, step):
        m = mobius(values[start:start + step].double())
        by_size = _superset_sums(m[:, None, :] * onehot[None], d)  # (g, d+1, 2^d)
        picked = by_size[:, :, keys.to(values.device)]  # (g, d+1, P)
        out[start:start + step] = (picked * weights.T[None]).sum(1)
    return out


def from_mobius(coefficients: torch.Tensor, member: torch.Tensor, index: str, d: int, k: int) -> torch.Tensor:
    """The index ``(G, P)`` of games whose Möbius coefficients vanish above order k: ``coefficients`` ``(G, P)``
    on the sets of ``member`` ``(P, d)`` (a polynomial surrogate), without enumerating coalitions."""
    sizes = member.sum(1)
    contains = (member.double() @ member.double().T) == sizes[:, None].double()  # [S ⊆ T], rows S
    weight = omega_table(index, d, k)[sizes[:, None], sizes[None, :]] * contains  # (P_S, P_T)
    return coefficients @ weight.T.to(coefficients.device)
