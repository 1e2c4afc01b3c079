"""Per-leaf pattern tables for TreeSHAP: what a leaf adds to the Shapley values depends on a sample only through
which of its ``w`` path conditions the sample meets, a ``w``-bit *pattern*, so it is computed once per leaf and
pattern, before any sample is seen (the precomputation of Fast TreeSHAP v2, Yang, arXiv:2109.09847, 2021), and
a batch of samples costs one comparison per (sample, leaf, path feature), one table look-up per (sample, leaf)
and one sparse product that adds the looked-up rows into the features.

- Path-dependent game (Lundberg et al. 2020, Alg. 1): leaf ``l`` contributes
  ``v_l (o_i − z_i) ∫_0^1 Π_{j ≠ i} (o_j t + z_j (1 − t)) dt`` to ``φ_i`` (the product-game form of
  :mod:`xaikit.tabular.treeshap`), evaluated for every pattern ``o`` by a Gauss–Legendre rule that is exact for
  the polynomial of degree ``w − 1``.
- Interventional game (Lundberg et al. 2020, "Interventional Tree SHAP"; the leaf-wise form of Laberge &
  Pequignot, arXiv:2209.04012, 2022): for a sample with pattern ``s`` and a background row with pattern ``c``
  the leaf is reached by a hybrid row only if every path feature is in ``s ∪ c``; then ``φ_i = β(A − 1, C)`` for
  ``i ∈ s \\ c`` and ``−β(A, C − 1)`` for ``i ∈ c \\ s``, ``A = |s \\ c|``, ``C = |c \\ s|``,
  ``β(a, c) = a! c! / (a + c + 1)!``. This depends on the background only through how many background rows have
  each pattern ``c``: the table of a leaf is that histogram (divided by ``B``) times a ``2^w × 2^w w`` matrix
  that is the same for every leaf of width ``w`` — one matrix product per width.

Leaves wider than the table budget allows are left to the direct computation (same values, more work).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from .trees import Leaves

#: widest leaf given a table (2^w · w entries each): path-dependent, interventional (whose matrix is 4^w · w)
MAX_WIDTH = {"path_dependent": 12, "interventional": 9}
#: the most table entries (float64) for one ensemble; wider leaves beyond it are computed directly
TABLE_BUDGET = 2 ** 25
#: the most (sample, leaf, path feature) elements looked up at once
_CHUNK = 2 ** 22


@dataclass
class _Group:
    """The leaves of one width ``w``: their path conditions as ranges of threshold ranks (a leaf's ``p``-th
    condition is met iff ``lower ≤ rank(x_j) ≤ lower + span``, see :class:`_Ranks`), table ``(L, w, 2^w)`` and
    the sparse matrix ``(D·K, L·w)`` that adds row ``(l, p)`` into feature ``feature[l, p]`` of every output,
    times ``v_lk``."""

    width: int
    feature: np.ndarray
    lower: np.ndarray
    span: np.ndarray
    table: np.ndarray
    scatter: scipy.sparse.csr_matrix

    def patterns(self, ranks: np.ndarray) -> np.ndarray:
        """``(L, n)`` int for the samples' threshold ranks ``(D, n)``: bit ``p`` set iff the sample meets the
        leaf's condition on its ``p``-th path feature (one unsigned comparison: below ``lower`` wraps round)."""
        code = np.zeros((self.feature.shape[0], ranks.shape[1]), dtype=np.int16)  # w ≤ 12 bits
        unsigned = np.uint16 if ranks.dtype == np.int16 else np.uint32
        for p in range(self.width):
            met = (ranks[self.feature[:, p]] - self.lower[:, p, None]).view(unsigned) <= self.span[:, p, None]
            code |= met.view(np.int8).astype(np.int16) << p
        return code


class _Ranks:
    """Each feature's distinct finite split thresholds, sorted: ``rank(x_j)`` is how many of them are ``< x_j``,
    so that ``x_j > t_m ⇔ rank ≥ m + 1`` and ``x_j ≤ t_k ⇔ rank ≤ k`` (exact: the same float64
    comparisons)."""

    def __init__(self, leaves: Leaves) -> None:
        bounds = np.concatenate([leaves.lo[leaves.real], leaves.hi[leaves.real]])
        features = np.concatenate([leaves.feature[leaves.real]] * 2)
        finite = np.isfinite(bounds)
        features, bounds = features[finite], bounds[finite]
        order = np.lexsort((bounds, features))  # by feature, then value
        features, bounds = features[order], bounds[order]
        new = np.ones(features.size, dtype=bool)
        new[1:] = (features[1:] != features[:-1]) | (bounds[1:] != bounds[:-1])
        features, bounds = features[new], bounds[new]
        cut = np.searchsorted(features, np.arange(leaves.n_features + 1))
        self.thresholds = [bounds[cut[j]:cut[j + 1]] for j in range(leaves.n_features)]
        most = max((t.size for t in self.thresholds), default=0)
        self.dtype = np.int16 if most < 2 ** 14 else np.int32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(D, n)``: the ranks of the samples ``x`` ``(n, D)`` (a loop over features, not samples)."""
        return np.stack([np.searchsorted(t, x[:, j], side="left") for j, t in enumerate(self.thresholds)]
                        ).astype(self.dtype)

    def ranges(self, feature: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lower, span`` of the conditions ``lo < x ≤ hi`` (infinite bounds: no limit on that side)."""
        lower, upper = np.zeros(feature.shape, dtype=np.int64), np.zeros(feature.shape, dtype=np.int64)
        order = np.argsort(feature, axis=None, kind="stable")
        cut = np.searchsorted(feature.ravel()[order], np.arange(len(self.thresholds) + 1))
        for j, t in enumerate(self.thresholds):  # a loop over features
            at = order[cut[j]:cut[j + 1]]
            a, b = lo.ravel()[at], hi.ravel()[at]
            lower.ravel()[at] = np.where(np.isfinite(a), np.searchsorted(t, a) + 1, 0)
            upper.ravel()[at] = np.where(np.isfinite(b), np.searchsorted(t, b), t.size)
        return lower.astype(self.dtype), (upper - lower).astype(self.dtype).view(
            np.uint16 if self.dtype == np.int16 else np.uint32)


def _bits(width: int) -> np.ndarray:
    """``(2^w, w)`` 0/1: the patterns, pattern ``s`` has bit ``p`` at column ``p``."""
    return (np.arange(2 ** width)[:, None] >> np.arange(width)) & 1


def _path_dependent_table(cover: np.ndarray) -> np.ndarray:
    """``(L, w, 2^w)``: ``(o_i − z_i) ∫ Π_{j≠i} (o_j t + z_j (1 − t)) dt`` for every pattern ``o``."""
    width = cover.shape[1]
    o = _bits(width).astype(float)  # (S, w)
    nodes, weights = np.polynomial.legendre.leggauss(width // 2 + 1)
    t, w = (nodes + 1) / 2, weights / 2  # on [0, 1]; t in (0, 1), so no factor below is 0 when z > 0
    z = cover[:, :, None]  # (L, w, 1)
    one, zero = t + z * (1 - t), z * (1 - t)  # (L, w, Q): F_1, F_0
    log_zero, log_gain = np.log(zero).sum(1), np.log(one) - np.log(zero)  # (L, Q), (L, w, Q)
    total = np.exp(log_zero[:, None, :] + o @ log_gain)  # (L, S, Q): Π_j F_{o_j}(t_q)
    gain_one = (w / one) @ total.transpose(0, 2, 1) * (1 - cover)[:, :, None]  # (L, w, S): o_i = 1
    gain_zero = (w / zero) @ total.transpose(0, 2, 1) * -cover[:, :, None]  # o_i = 0
    return np.where(o.T[None] > 0, gain_one, gain_zero)


def _interventional_matrix(width: int) -> np.ndarray:
    """``(2^w, 2^w · w)``: row ``c`` (a background row's pattern), column ``(s, i)`` (the sample's pattern,
    the path feature): the Shapley value of ``i`` in the game of one leaf and one background row."""
    bits = _bits(width).astype(bool)
    only_x = bits[None, :, :] & ~bits[:, None, :]  # (c, s, w): in s, not in c
    only_b = bits[:, None, :] & ~bits[None, :, :]
    live = (bits[None, :, :] | bits[:, None, :]).all(2)  # (c, s)
    a, c = only_x.sum(2), only_b.sum(2)
    fact = np.array([math.factorial(k) for k in range(width + 2)], dtype=float)

    def beta(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        p, q = np.maximum(p, 0), np.maximum(q, 0)  # the clamped entries are multiplied by 0 below
        return fact[p] * fact[q] / fact[np.minimum(p + q + 1, width + 1)]

    plus, minus = (beta(a - 1, c) * live)[..., None], (beta(a, c - 1) * live)[..., None]
    return (only_x * plus - only_b * minus).reshape(2 ** width, -1)


def _scatter(feature: np.ndarray, value: np.ndarray, n_features: int) -> scipy.sparse.csr_matrix:
    n_leaves, width = feature.shape
    k = value.shape[1]
    rows = np.repeat(np.arange(n_leaves * width), k)
    cols = (feature.reshape(-1, 1) * k + np.arange(k)).reshape(-1)
    data = np.repeat(value, width, axis=0).reshape(-1)
    return scipy.sparse.csr_matrix((data, (cols, rows)), shape=(n_features * k, n_leaves * width))


class LeafTables:
    """Pattern tables for the leaves of ``leaves`` whose width fits :data:`MAX_WIDTH` and the budget; the
    others are in ``rest`` (a :class:`Leaves`, or ``None``) for the direct computation."""

    def __init__(self, leaves: Leaves, algorithm: str, background: np.ndarray | None = None) -> None:
        widths = leaves.real.sum(1)
        cap = MAX_WIDTH[algorithm]
        sizes = np.bincount(widths, minlength=cap + 1)[:cap + 1] * (2.0 ** np.arange(cap + 1)) * np.arange(cap + 1)
        while cap > 0 and sizes[:cap + 1].sum() > TABLE_BUDGET:
            cap -= 1
        self.n_features, self.n_outputs = leaves.n_features, leaves.value.shape[1]
        self.groups: list[_Group] = []
        self.ranks = _Ranks(leaves)
        for width in range(cap + 1):
            index = np.flatnonzero(widths == width)
            if width == 0 or index.size == 0:  # a leaf with no path feature (a tree that is a root) adds nothing
                continue
            feature, lo, hi = (a[index, :width] for a in (leaves.feature, leaves.lo, leaves.hi))
            group = _Group(width, feature, *self.ranks.ranges(feature, lo, hi), np.empty(0),
                           _scatter(feature, leaves.value[index], leaves.n_features))
            if algorithm == "path_dependent":
                table = _path_dependent_table(leaves.cover[index, :width])
            else:
                counts = np.zeros(index.size * 2 ** width)  # per leaf, how many background rows have pattern c
                first = (np.arange(index.size) * 2 ** width)[:, None]
                for start, stop in _chunks(background.shape[0], index.size * width):
                    codes = group.patterns(self.ranks(background[start:stop]))  # (L, b)
                    counts += np.bincount((first + codes).ravel(), minlength=counts.size)
                share = counts.reshape(index.size, -1) / background.shape[0]
                table = (share @ _interventional_matrix(width)).reshape(index.size, 2 ** width, width)
                table = table.transpose(0, 2, 1)
            group.table = np.ascontiguousarray(table)
            self.groups.append(group)
        wide = widths > cap
        self.rest = leaves.subset(wide) if wide.any() else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(N, D, K)``: the tabled leaves' share of the Shapley values of every output."""
        phi = np.zeros((self.n_features * self.n_outputs, x.shape[0]))
        ranks = self.ranks(x)
        for group in self.groups:
            n_leaves = group.feature.shape[0]
            first = (np.arange(n_leaves * group.width) * 2 ** group.width).reshape(n_leaves, group.width, 1)
            for start, stop in _chunks(x.shape[0], n_leaves * group.width):
                codes = group.patterns(ranks[:, start:stop])  # (L, n)
                rows = np.take(group.table, first + codes[:, None, :])  # (L, w, n): table[l, p, code[l, n]]
                phi[:, start:stop] += group.scatter @ rows.reshape(n_leaves * group.width, -1)
        return phi.T.reshape(x.shape[0], self.n_features, self.n_outputs)


def _chunks(n: int, per_row: int):
    step = max(1, _CHUNK // max(1, per_row))
    for start in range(0, n, step):
        yield start, min(n, start + step)
