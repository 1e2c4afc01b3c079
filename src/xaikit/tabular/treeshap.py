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
the leaves are read once (:mod:`xaikit.tabular.trees`, a loop over depth levels), each leaf's contribution is
tabulated for every pattern of met/unmet path conditions when the explainer is built
(:mod:`xaikit.tabular.leaf_tables`), and a call looks the samples' patterns up. Leaves with too many path
features for a table (more than 12, or 9 interventional, or beyond the table budget) are computed here
directly, as array operations over (samples, leaves, path features) in chunks of samples.
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
from .leaf_tables import LeafTables
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
    Cost, for ``L`` leaves with ``w_l`` distinct features on their paths: building ``Σ_l 2^{w_l} w_l ⌈w_l/2⌉``
    operations (path-dependent) or ``Σ_l 4^{w_l} w_l + B Σ_l w_l`` (interventional: a histogram of the
    background's patterns per leaf times a matrix shared by the leaves of one width), and a table of
    ``Σ_l 2^{w_l} w_l`` floats; a call ``N Σ_l w_l`` comparisons and look-ups, whatever the background's size.
    Leaves wider than the tables allow cost ``N · P · ⌈P/2⌉`` (path-dependent) or ``N · B · P``
    (interventional) each per call.
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
        self.tables = LeafTables(self.leaves, algorithm, self.background)

    @property
    def name(self) -> str:
        return f"TreeSHAP({self.algorithm})"

    def __call__(self, x: Any, target: TargetSpec = None) -> Explanation:
        rows = _rows(x, self.leaves.n_features, "x")
        check_target(target, rows.shape[0])
        output = self._outputs(rows)
        phi = self.tables(rows)
        rest = self.tables.rest
        if self.algorithm == "path_dependent":
            if rest is not None:
                phi += path_dependent(rest, rows)
            base = np.broadcast_to(self.leaves.expected(), output.shape)
        else:
            if rest is not None:
                phi += interventional(rest, rows, self.background)
            base = np.broadcast_to(self._outputs(self.background).mean(0), output.shape)
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


    def _outputs(self, rows: np.ndarray) -> np.ndarray:
        """``(N, K)``: the explained outputs, from the model itself (``predict_proba``, ``predict`` or
        ``decision_function``)."""
        return np.asarray(getattr(self.model, self.output_name)(rows), dtype=np.float64).reshape(len(rows), -1)


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


def _reached(leaves: Leaves, x: np.ndarray) -> torch.Tensor:
    """``(L, P, n)`` float64 0/1: row n is in leaf l's interval on its p-th path feature (padding: 1); the rows
    last, so that the products below and the sums by feature run over contiguous rows."""
    values = torch.from_numpy(np.ascontiguousarray(x.T))[torch.from_numpy(leaves.feature)]  # (L, P, n)
    lo, hi = torch.from_numpy(leaves.lo)[..., None], torch.from_numpy(leaves.hi)[..., None]
    return ((values > lo) & (values <= hi)).double()


def path_dependent(leaves: Leaves, x: np.ndarray) -> np.ndarray:
    """``(N, D, K)``: the path-dependent Shapley values of every output.

    With ``F_o = o t + z (1 − t)`` at the Gauss–Legendre nodes ``t_q``, ``Π_j F`` is
    ``exp(Σ_j log F_0 + Σ_j o_j (log F_1 − log F_0))``: one batched product of a (nodes × path features) matrix
    with the 0/1 matrix ``o`` (path features × samples) per leaf, and ``φ_i`` another one, so the work runs as
    matrix products over all leaves at once.
    """
    n_leaves, width = leaves.feature.shape
    nodes, weights = np.polynomial.legendre.leggauss(width // 2 + 1)
    t = torch.from_numpy((nodes + 1) / 2)  # on [0, 1]
    w = torch.from_numpy(weights / 2)
    z = torch.from_numpy(leaves.cover)[..., None]  # (L, P, 1)
    real = torch.from_numpy(leaves.real)[..., None]
    one = torch.where(real, t + z * (1 - t), torch.ones(()))  # F_1 (L, P, Q); padding: 1 (its o is 1)
    zero = torch.where(real, z * (1 - t), torch.ones(()))  # F_0
    log_zero = zero.log().sum(1)[..., None]  # (L, Q, 1)
    log_gain = (one.log() - zero.log()).transpose(1, 2).contiguous()  # (L, Q, P)
    sign = torch.where(real, 1 - z, torch.zeros(()))  # o − z for o = 1 (L, P, 1); 0 on padding
    over_one = sign * w / one  # (L, P, Q): (o − z) w_q / F_1
    over_zero = torch.where(real, -z, torch.zeros(())) * w / zero
    phi = torch.zeros(leaves.value.shape[1], leaves.n_features, x.shape[0], dtype=torch.float64)
    for start, stop in _chunks(x.shape[0], n_leaves * width * 4):
        o = _reached(leaves, x[start:stop])  # (L, P, n)
        total = torch.exp(log_zero + torch.bmm(log_gain, o))  # (L, Q, n): Π_j F_{o_j}(t_q)
        weight = torch.where(o > 0, torch.bmm(over_one, total), torch.bmm(over_zero, total))  # (L, P, n)
        _scatter(phi[:, :, start:stop], weight, leaves)
    return phi.permute(2, 1, 0).numpy()


def interventional(leaves: Leaves, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``(N, D, K)``: the interventional Shapley values of every output, averaged over the background rows.

    For a pair (x, b) and a leaf, with ``A`` path features where only x is in the interval and ``C`` where only
    b is (the leaf is dead for the pair if one is in neither), ``φ_i = β(A − 1, C)`` for the first kind and
    ``−β(A, C − 1)`` for the second, ``β(a, c) = a! c! / (a + c + 1)!``. The counts are products of 0/1 matrices
    (background rows × path features by path features × samples), per leaf, batched over the leaves.
    """
    n_leaves, width = leaves.feature.shape
    fact = torch.tensor([math.factorial(k) for k in range(width + 2)], dtype=torch.float64)
    a, c = torch.meshgrid(torch.arange(width + 1), torch.arange(width + 1), indexing="ij")
    beta = (fact[a] * fact[c] / fact[(a + c + 1).clamp(max=width + 1)]).reshape(-1)
    real = torch.from_numpy(leaves.real)[..., None].double()  # (L, P, 1)
    ob = _reached(leaves, background)  # (L, P, B)
    ob_out, ob_in = ((1 - ob) * real).transpose(1, 2), (ob * real).transpose(1, 2)  # (L, B, P)
    b = background.shape[0]
    phi = torch.zeros(leaves.value.shape[1], leaves.n_features, x.shape[0], dtype=torch.float64)
    for start, stop in _chunks(x.shape[0], b * n_leaves * 4):
        ox = _reached(leaves, x[start:stop])  # (L, P, n)
        ox_in, ox_out = ox * real, (1 - ox) * real
        dead = torch.bmm(ob_out, ox_out) > 0  # (L, B, n): a path feature in neither interval
        count_x = torch.bmm(ob_out, ox_in).long()  # A: only x in the interval
        count_b = torch.bmm(ob_in, ox_out).long()  # C: only b
        plus = beta[(count_x - 1).clamp(min=0) * (width + 1) + count_b].masked_fill_(dead, 0.0)
        minus = beta[count_x * (width + 1) + (count_b - 1).clamp(min=0)].masked_fill_(dead, 0.0)
        weight = (ox_in * torch.bmm(ob_out.transpose(1, 2), plus)
                  - ox_out * torch.bmm(ob_in.transpose(1, 2), minus)) / b  # (L, P, n)
        _scatter(phi[:, :, start:stop], weight, leaves)
    return phi.permute(2, 1, 0).numpy()


def _scatter(phi: torch.Tensor, weight: torch.Tensor, leaves: Leaves) -> None:
    """``phi[k, feature[l, p], n] += weight[l, p, n] · value[l, k]`` (a sum by index over the rows (l, p))."""
    features = torch.from_numpy(leaves.feature.reshape(-1))
    values = torch.from_numpy(leaves.value)
    flat = weight.reshape(-1, weight.shape[-1])  # (L·P, n)
    for out in range(values.shape[1]):
        scaled = flat * values[:, out].repeat_interleave(weight.shape[1])[:, None]
        phi[out].index_add_(0, features, scaled)
