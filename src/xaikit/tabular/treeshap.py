"""Exact TreeSHAP for scikit-learn tree ensembles (Lundberg et al., Nat. Mach. Intell. 2020): path-dependent and
interventional Shapley values, vectorised over samples and leaves.

Both games are sums over leaves of *product games*: leaf ``l`` with value ``v_l`` and path features ``P_l``
contributes ``v_l Π_{j ∈ P_l ∩ S} o_j Π_{j ∈ P_l \\ S} z_j`` to ``v(S)``, where ``o_j = 1[x_j in the leaf's
interval]`` and ``z_j`` is the cover share (path-dependent, Alg. 1 of the paper) or ``1[b_j in the interval]`` for
a background row ``b`` (interventional, Sec. "Interventional Tree SHAP"; then averaged over the background).
Shapley values are additive over the leaves, and for a product game of ``d`` players the weight
``|S|! (d − |S| − 1)! / d!`` is ``∫_0^1 t^{|S|} (1 − t)^{d − |S| − 1} dt``, so

    φ_i = v_l (o_i − z_i) ∫_0^1 Π_{j ∈ P_l, j ≠ i} (o_j t + z_j (1 − t)) dt,

a polynomial of degree ``d − 1`` in ``t`` that a Gauss–Legendre rule of ``⌈d/2⌉`` nodes integrates exactly
(the integral form of Linear TreeSHAP, Yu et al., NeurIPS 2022). For the interventional game ``o`` and ``z``
are 0/1 and the integral is a Beta function, ``a! c! / (a + c + 1)!``. No loop runs per sample or per node:
the leaves are read once (:mod:`xaikit.tabular.trees`, a recursion over the tree structure), and the values
are array operations over (samples, leaves, path features), in chunks of samples.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import check_choice
from ..explanation import Explanation
from ..settings import checked_init
from ..targets import TargetSpec, check_target, resolve_target
from .trees import Leaves, read_ensemble

ALGORITHMS = ("path_dependent", "interventional")
#: the most array elements one chunk of samples may hold (float64: 8 bytes each)
_CHUNK_ELEMENTS = 2 ** 24


class TreeSHAP:
    """Exact Shapley values of a scikit-learn tree ensemble's output (Lundberg et al. 2020).

    Parameters
    ----------
    model : fitted scikit-learn tree model
        ``DecisionTree*``, ``RandomForest*``, ``ExtraTrees*`` or ``GradientBoosting*`` (see
        :mod:`xaikit.tabular.trees` for the output each explains: ``predict_proba`` for forests and tree
        classifiers, ``predict`` for regressors, ``decision_function`` — the raw margin — for boosting).
    algorithm : str
        ``"path_dependent"`` (default; shap's ``feature_perturbation="tree_path_dependent"``): features outside
        ``S`` follow the training cover recorded in the trees. ``"interventional"``: they take the values of
        the rows of ``background`` (the Shapley values of ``E_b f(x_S, b_S̄)``), averaged over the background.
    background : array or tensor ``(B, D)``, optional
        The reference rows of the interventional game (required there; shap uses 100 to 1,000).

    Call
    ----
    ``TreeSHAP(model)(x, target=None)`` with ``x`` an array or tensor ``(N, D)``: an
    :class:`~xaikit.explanation.Explanation` with ``attribution`` ``(N, D)`` (float64), ``output`` the explained
    outputs ``(N, K)``, ``target`` as for the other methods (``None``: each row's largest output), and
    ``info["base_value"]`` ``(N,)``: the expected output (path-dependent: over the training cover; interventional:
    over the background), so that ``attribution.sum(1) = output_value − base_value`` up to rounding.

    Notes
    -----
    Cost: ``N · L · P · ⌈P/2⌉`` (path-dependent) or ``N · B · L · P`` (interventional) operations for ``L``
    leaves with at most ``P`` distinct features on a path.
    """

    @checked_init
    def __init__(self, model: Any, algorithm: str = "path_dependent", background: Any = None) -> None:
        check_choice(algorithm, "algorithm", ALGORITHMS)
        self.leaves, self.output_name = read_ensemble(model)
        self.model, self.algorithm = model, algorithm
        self.background = None
        if algorithm == "interventional":
            if background is None:
                raise ValueError("algorithm='interventional' needs background= (reference rows (B, D), e.g. 100 "
                                 "rows of the training data)")
            self.background = _rows(background, self.leaves.n_features, "background")
        elif background is not None:
            raise ValueError("background= is used by algorithm='interventional' only; the path-dependent game reads "
                             "the training cover from the trees")

    @property
    def name(self) -> str:
        return f"TreeSHAP({self.algorithm})"

    def __call__(self, x: Any, target: TargetSpec = None) -> Explanation:
        rows = _rows(x, self.leaves.n_features, "x")
        check_target(target, rows.shape[0])
        output = self.leaves.predict(rows)
        if self.algorithm == "path_dependent":
            phi = path_dependent(self.leaves, rows)
            base = np.broadcast_to(self.leaves.expected(), output.shape)
        else:
            phi = interventional(self.leaves, rows, self.background)
            base = np.broadcast_to(self.leaves.predict(self.background).mean(0), output.shape)
        output_t = torch.from_numpy(np.ascontiguousarray(output))
        resolved = resolve_target(target, output_t)
        index = resolved.index.cpu()
        attribution = torch.from_numpy(phi)[torch.arange(rows.shape[0]), :, index]
        base_value = torch.from_numpy(np.ascontiguousarray(base))[torch.arange(rows.shape[0]), index]
        info = {"base_value": base_value, "score": resolved.score(output_t), "algorithm": self.algorithm,
                "explained_output": self.output_name, "all_outputs": torch.from_numpy(phi)}
        if self.background is not None:
            info["background"] = self.background.shape[0]
        return Explanation(attribution, resolved.reported, output_t, self.name, info)


def _rows(x: Any, n_features: int, name: str) -> np.ndarray:
    """``x`` as float64 rows of the features as the trees compare them (scikit-learn casts to float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    array = np.asarray(x)
    if array.ndim != 2 or array.shape[1] != n_features:
        raise ValueError(f"{name} must be a table (N, {n_features}) of the model's features, got shape "
                         f"{array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {array.dtype}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN; impute missing values first (scikit-learn's trees route NaN by "
                         "learned defaults that TreeSHAP does not read)")
    return array.astype(np.float32).astype(np.float64)


def _chunks(n: int, per_row: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, per_row))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def path_dependent(leaves: Leaves, x: np.ndarray) -> np.ndarray:
    """``(N, D, K)``: the path-dependent Shapley values of every output."""
    n_leaves, width = leaves.feature.shape
    nodes, weights = np.polynomial.legendre.leggauss(width // 2 + 1)
    t, w = (nodes + 1) / 2, weights / 2  # on [0, 1]
    z = leaves.cover  # (L, P)
    phi = np.zeros((x.shape[0], leaves.n_features, leaves.value.shape[1]))
    for start, stop in _chunks(x.shape[0], n_leaves * width * t.size):
        o = leaves.reached(x[start:stop]).astype(float)  # (n, L, P)
        factor = o[..., None] * t + z[..., None] * (1 - t)  # (n, L, P, Q): o_j t + z_j (1 − t) > 0 (z > 0)
        others = factor.prod(2, keepdims=True) / factor  # Π_{j ≠ i}
        weight = (o - z) * (others @ w)  # (n, L, P)
        weight[:, ~leaves.real] = 0.0
        _scatter(phi[start:stop], weight, leaves)
    return phi


def interventional(leaves: Leaves, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``(N, D, K)``: the interventional Shapley values of every output, averaged over the background rows."""
    n_leaves, width = leaves.feature.shape
    fact = np.array([math.factorial(k) for k in range(width + 2)], dtype=float)
    a, c = np.meshgrid(np.arange(width + 1), np.arange(width + 1), indexing="ij")
    beta = fact[a] * fact[c] / fact[np.minimum(a + c + 1, width + 1)]  # ∫ t^a (1 − t)^c dt, a + c < width
    ob = leaves.reached(background)  # (B, L, P)
    phi = np.zeros((x.shape[0], leaves.n_features, leaves.value.shape[1]))
    b = background.shape[0]
    for start, stop in _chunks(x.shape[0], b * n_leaves * width):
        ox = leaves.reached(x[start:stop])[:, None]  # (n, 1, L, P)
        only_x = ox & ~ob  # (n, B, L, P)
        only_b = ~ox & ob
        dead = (~ox & ~ob).any(3, keepdims=True)  # a feature in neither: the leaf is never reached
        count_x, count_b = only_x.sum(3, keepdims=True), only_b.sum(3, keepdims=True)
        plus = beta[np.maximum(count_x - 1, 0), count_b]  # for i in only_x: ∫ t^{A−1} (1 − t)^C
        minus = beta[count_x, np.maximum(count_b - 1, 0)]  # for i in only_b: ∫ t^A (1 − t)^{C−1}
        weight = np.where(only_x, plus, 0.0) - np.where(only_b, minus, 0.0)
        weight = np.where(dead, 0.0, weight).mean(1)  # (n, L, P), the mean over the background
        _scatter(phi[start:stop], weight, leaves)
    return phi


def _scatter(phi: np.ndarray, weight: np.ndarray, leaves: Leaves) -> None:
    """``phi[n, feature[l, p], k] += weight[n, l, p] · value[l, k]`` (sums by index: ``np.bincount``)."""
    n, features, k = phi.shape
    index = (np.arange(n)[:, None] * features + leaves.feature.reshape(1, -1)).reshape(-1)
    for out in range(k):
        contribution = (weight * leaves.value[:, out][None, :, None]).reshape(-1)
        phi[:, :, out] += np.bincount(index, contribution, minlength=n * features).reshape(n, features)
