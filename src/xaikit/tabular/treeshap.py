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
    """``(N, D, K)``: the path-dependent Shapley values of every output.

    With ``F_o = o t + z (1 − t)`` at the Gauss–Legendre nodes ``t_q``, ``Π_j F`` is
    ``exp(Σ_j log F_0 + Σ_j o_j (log F_1 − log F_0))``: one batched product of the 0/1 matrix ``o`` (samples ×
    path features) with a (path features × nodes) matrix per leaf, and ``φ_i`` another one, so the work runs
    as matrix products over all leaves at once.
    """
    n_leaves, width = leaves.feature.shape
    nodes, weights = np.polynomial.legendre.leggauss(width // 2 + 1)
    t = torch.from_numpy((nodes + 1) / 2)  # on [0, 1]
    w = torch.from_numpy(weights / 2)
    z = torch.from_numpy(leaves.cover)[..., None]  # (L, P, 1)
    real = torch.from_numpy(leaves.real)[..., None]
    one = torch.where(real, t + z * (1 - t), torch.ones(()))  # F_1 (L, P, Q); padding: 1
    zero = torch.where(real, z * (1 - t), torch.ones(()))  # F_0 (padding o = 1 below, so F_1 is used)
    log_zero, log_gain = zero.log().sum(1), (one.log() - zero.log())  # (L, Q), (L, P, Q)
    over_one, over_zero = w / one, w / zero  # (L, P, Q): w_q / F
    sign_one = torch.where(real[..., 0], 1 - z[..., 0], torch.zeros(()))  # o − z for o = 1 (L, P)
    sign_zero = torch.where(real[..., 0], -z[..., 0], torch.zeros(()))
    phi = np.zeros((x.shape[0], leaves.n_features, leaves.value.shape[1]))
    for start, stop in _chunks(x.shape[0], n_leaves * width * 4):
        o = torch.from_numpy(leaves.reached(x[start:stop])).transpose(0, 1).double()  # (L, n, P)
        total = torch.exp(log_zero[:, None] + torch.bmm(o, log_gain))  # (L, n, Q): Π_j F_{o_j}(t_q)
        with_one = torch.bmm(total, over_one.transpose(1, 2))  # (L, n, P): Σ_q w_q Π_j F / F_1,i
        with_zero = torch.bmm(total, over_zero.transpose(1, 2))
        weight = o * sign_one[:, None] * with_one + (1 - o) * sign_zero[:, None] * with_zero
        _scatter(phi[start:stop], weight.transpose(0, 1).numpy(), leaves)
    return phi


def interventional(leaves: Leaves, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``(N, D, K)``: the interventional Shapley values of every output, averaged over the background rows.

    For a pair (x, b) and a leaf, with ``A`` path features where only x is in the interval and ``C`` where only
    b is (the leaf is dead for the pair if one is in neither), ``φ_i = β(A − 1, C)`` for the first kind and
    ``−β(A, C − 1)`` for the second, ``β(a, c) = a! c! / (a + c + 1)!``. The counts are products of 0/1 matrices
    (samples × path features by path features × background rows), per leaf, batched over the leaves.
    """
    n_leaves, width = leaves.feature.shape
    fact = torch.tensor([math.factorial(k) for k in range(width + 2)], dtype=torch.float64)
    a, c = torch.meshgrid(torch.arange(width + 1), torch.arange(width + 1), indexing="ij")
    beta = (fact[a] * fact[c] / fact[(a + c + 1).clamp(max=width + 1)]).reshape(-1)
    real = torch.from_numpy(leaves.real)
    ob = torch.from_numpy(leaves.reached(background)).transpose(0, 1).double()  # (L, B, P)
    ob_out = (1 - ob) * real[:, None]  # b outside the interval (padding: never)
    ob_in = ob * real[:, None]
    b = background.shape[0]
    phi = np.zeros((x.shape[0], leaves.n_features, leaves.value.shape[1]))
    for start, stop in _chunks(x.shape[0], b * n_leaves * 4):
        ox = torch.from_numpy(leaves.reached(x[start:stop])).transpose(0, 1).double()  # (L, n, P)
        ox_in, ox_out = ox * real[:, None], (1 - ox) * real[:, None]
        dead = torch.bmm(ox_out, ob_out.transpose(1, 2)) > 0  # (L, n, B)
        count_x = torch.bmm(ox_in, ob_out.transpose(1, 2)).long()  # A: only x in the interval
        count_b = torch.bmm(ox_out, ob_in.transpose(1, 2)).long()  # C: only b
        plus = beta[((count_x - 1).clamp(min=0) * (width + 1) + count_b)].masked_fill(dead, 0.0)
        minus = beta[(count_x * (width + 1) + (count_b - 1).clamp(min=0))].masked_fill(dead, 0.0)
        weight = (ox_in * torch.bmm(plus, ob_out) - ox_out * torch.bmm(minus, ob_in)) / b  # (L, n, P)
        _scatter(phi[start:stop], weight.transpose(0, 1).numpy(), leaves)
    return phi


def _scatter(phi: np.ndarray, weight: np.ndarray, leaves: Leaves) -> None:
    """``phi[n, feature[l, p], k] += weight[n, l, p] · value[l, k]`` (sums by index: ``np.bincount``)."""
    n, features, k = phi.shape
    index = (np.arange(n)[:, None] * features + leaves.feature.reshape(1, -1)).reshape(-1)
    for out in range(k):
        contribution = (weight * leaves.value[:, out][None, :, None]).reshape(-1)
        phi[:, :, out] += np.bincount(index, contribution, minlength=n * features).reshape(n, features)
