"""scikit-learn tree ensembles read as lists of leaves: for each leaf, its value and, for each feature on its
path, the interval of values that leads there and the share of the training cover that follows the path.

This is all TreeSHAP needs (:mod:`xaikit.tabular.treeshap`): a tree's prediction is ``Σ_l v_l Π_{j ∈ P_l}
1[lo_lj < x_j ≤ hi_lj]`` (scikit-learn sends ``x_j ≤ threshold`` to the left child), and the expectation of the
tree over the training data with the features outside ``S`` unknown — the path-dependent game of Lundberg et
al. (Nat. Mach. Intell. 2020, Alg. 1) — is ``Σ_l v_l Π_{j ∈ P_l ∩ S} 1[...] Π_{j ∈ P_l \\ S} z_lj``, where
``z_lj`` is the product over the splits on ``j`` along the path of the cover of the child taken over the
cover of the node. Splits on one feature repeated along a path are merged (an interval, a product of ratios),
so that each feature is one player per leaf.

Supported: ``DecisionTree{Regressor,Classifier}``, ``RandomForest*``, ``ExtraTrees*`` (averages of trees,
classifiers explained on ``predict_proba``) and ``GradientBoosting{Regressor,Classifier}`` (sums of regression
trees on the raw margin, ``decision_function``: log-odds for classifiers, as shap's TreeExplainer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Leaves:
    """Every leaf of an ensemble, padded to ``P`` path features (the padding: feature 0, an interval that holds
    every value and a cover share 1, so that it changes no product and no Shapley value).

    Attributes
    ----------
    feature : (L, P) int
    lo, hi : (L, P) float — the leaf is reached iff ``lo < x_j ≤ hi`` for every path feature ``j``
    cover : (L, P) float — ``z_lj``, the share of the cover at the root that follows the path at feature ``j``
    real : (L, P) bool — the slot holds a path feature (not padding)
    value : (L, K) float — the leaf's contribution to each of the K outputs (ensemble weights included)
    offset : (K,) float — the constant added to the outputs (a boosting's initial prediction)
    n_features : int
    """

    feature: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cover: np.ndarray
    real: np.ndarray
    value: np.ndarray
    offset: np.ndarray
    n_features: int

    def reached(self, x: np.ndarray) -> np.ndarray:
        """``(N, L, P)`` bool: sample n satisfies leaf l's interval on its p-th path feature (padding: True)."""
        values = x[:, self.feature]  # (N, L, P)
        return (values > self.lo) & (values <= self.hi)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, K)``: the ensemble's outputs, from the leaves (a check that the leaves are read right)."""
        return self.reached(x).all(2).astype(float) @ self.value + self.offset

    def subset(self, keep: np.ndarray) -> "Leaves":
        """The leaves selected by the boolean mask ``keep`` (same outputs, no offset: a share of the ensemble)."""
        return Leaves(self.feature[keep], self.lo[keep], self.hi[keep], self.cover[keep], self.real[keep],
                      self.value[keep], np.zeros_like(self.offset), self.n_features)

    def expected(self) -> np.ndarray:
        """``(K,)``: the outputs' expectation over the training cover, ``Σ_l v_l Π_j z_lj`` plus the offset."""
        return self.cover.prod(1) @ self.value + self.offset


def _read_trees(trees: list, values: list[np.ndarray], n_features: int, offset: np.ndarray) -> Leaves:
    """The leaves of fitted ``sklearn.tree._tree.Tree`` objects, ``values[i]`` ``(nodes_i, K)`` the output of
    each node of tree ``i`` (ensemble weights included). The trees are walked together, one depth level at a
    time (a loop over depth, vectorised over the nodes of every tree; scikit-learn sends ``x_j ≤ threshold``
    to the left child), each node carrying the splits on its path; splits on one feature are then merged."""
    starts = np.cumsum([0] + [t.node_count for t in trees])
    left = np.concatenate([np.where(t.children_left >= 0, t.children_left + s, -1) for t, s in zip(trees, starts)])
    right = np.concatenate([np.where(t.children_right >= 0, t.children_right + s, -1)
                            for t, s in zip(trees, starts)])
    feature = np.concatenate([t.feature for t in trees]).astype(np.int64)
    threshold = np.concatenate([t.threshold for t in trees]).astype(float)
    cover = np.concatenate([t.weighted_n_node_samples for t in trees]).astype(float)
    value = np.concatenate(values)
    node = starts[:-1]  # the frontier: the nodes of one depth, with the splits on their paths
    path_f, path_lo, path_hi, path_z = (np.zeros((node.size, 0), dtype=np.int64), np.zeros((node.size, 0)),
                                        np.zeros((node.size, 0)), np.zeros((node.size, 0)))
    found: list[tuple] = []
    while node.size:
        leaf = left[node] < 0
        found.append((node[leaf], path_f[leaf], path_lo[leaf], path_hi[leaf], path_z[leaf]))
        inner = ~leaf
        parent, pf, plo, phi, pz = node[inner], path_f[inner], path_lo[inner], path_hi[inner], path_z[inner]
        t = threshold[parent]
        child = np.concatenate([left[parent], right[parent]])
        path_f = np.concatenate([np.column_stack([pf, feature[parent]])] * 2)
        path_lo = np.concatenate([np.column_stack([plo, np.full(t.shape, -np.inf)]), np.column_stack([plo, t])])
        path_hi = np.concatenate([np.column_stack([phi, t]), np.column_stack([phi, np.full(t.shape, np.inf)])])
        path_z = np.column_stack([np.concatenate([pz] * 2), cover[child] / np.concatenate([cover[parent]] * 2)])
        node = child
    depth = len(found) - 1

    def pad(a: np.ndarray, fill: float) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, depth - a.shape[1])), constant_values=fill)

    leaves = np.concatenate([f[0] for f in found])
    path_f = np.concatenate([pad(f[1], n_features) for f in found])  # padding: feature n_features, sorted last
    path_lo = np.concatenate([pad(f[2], -np.inf) for f in found])
    path_hi = np.concatenate([pad(f[3], np.inf) for f in found])
    path_z = np.concatenate([pad(f[4], 1.0) for f in found])
    return _merge(path_f, path_lo, path_hi, path_z, value[leaves], offset, n_features)


def _merge(path_f: np.ndarray, path_lo: np.ndarray, path_hi: np.ndarray, path_z: np.ndarray, value: np.ndarray,
           offset: np.ndarray, n_features: int) -> Leaves:
    """Merge the splits on one feature along each path (an interval, a product of cover shares): one slot per
    distinct feature, sorted by feature, padded on the right."""
    n = path_f.shape[0]
    order = np.argsort(path_f, axis=1, kind="stable")
    f, lo, hi, z = (np.take_along_axis(a, order, 1) for a in (path_f, path_lo, path_hi, path_z))
    valid = f < n_features
    first = valid.copy()
    first[:, 1:] &= f[:, 1:] != f[:, :-1]
    width = max(1, int(first.sum(1).max(initial=0)))
    feature = np.zeros((n, width), dtype=np.int64)
    lo_out, hi_out, cover = np.full((n, width), -np.inf), np.full((n, width), np.inf), np.ones((n, width))
    real = np.zeros((n, width), dtype=bool)
    if valid.any():
        flat_first = first[valid]
        begin = np.flatnonzero(flat_first)  # segment starts in the flattened valid entries
        row = np.broadcast_to(np.arange(n)[:, None], f.shape)[valid][begin]
        slot = (np.cumsum(first, 1) - 1)[valid][begin]
        feature[row, slot] = f[valid][begin]
        lo_out[row, slot] = np.maximum.reduceat(lo[valid], begin)
        hi_out[row, slot] = np.minimum.reduceat(hi[valid], begin)
        cover[row, slot] = np.multiply.reduceat(z[valid], begin)
        real[row, slot] = True
    return Leaves(feature, lo_out, hi_out, cover, real, np.asarray(value, dtype=float),
                  np.asarray(offset, dtype=float), int(n_features))


def read_ensemble(model: Any) -> tuple[Leaves, str]:
    """The leaves of a fitted scikit-learn tree model and the name of the output it explains."""
    try:
        from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                                      GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
    except ImportError as err:  # pragma: no cover - scikit-learn is a core dependency
        raise ImportError("TreeSHAP reads scikit-learn models: pip install scikit-learn") from err
    if not hasattr(model, "n_features_in_"):
        raise ValueError(f"model must be a fitted scikit-learn tree model; {type(model).__name__} is not fitted "
                         "(call .fit first)")
    if isinstance(model, (DecisionTreeClassifier, DecisionTreeRegressor)):
        trees, weight, classify, output = [model], 1.0, isinstance(model, DecisionTreeClassifier), None
    elif isinstance(model, (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier,
                            ExtraTreesRegressor)):
        trees = list(model.estimators_)
        weight, classify, output = 1.0 / len(trees), isinstance(model, (RandomForestClassifier,
                                                                        ExtraTreesClassifier)), None
    elif isinstance(model, (GradientBoostingClassifier, GradientBoostingRegressor)):
        return _boosting(model), "decision_function" if hasattr(model, "decision_function") else "predict"
    else:
        raise TypeError(
            f"TreeSHAP reads scikit-learn DecisionTree*, RandomForest*, ExtraTrees* and GradientBoosting* models, "
            f"got {type(model).__name__}; for another model use KernelSHAP or PermutationShapley with "
            "xk.NumpyModel(model.predict)")
    if classify and getattr(model, "n_outputs_", 1) != 1:
        raise ValueError("TreeSHAP explains single-output classifiers; fit one classifier per output")
    values = []
    for tree in trees:
        v = tree.tree_.value.reshape(tree.tree_.node_count, -1).astype(float)
        values.append(weight * (v / v.sum(1, keepdims=True) if classify else v))
    output = output or ("predict_proba" if classify else "predict")
    leaves = _read_trees([t.tree_ for t in trees], values, model.n_features_in_, np.zeros(values[0].shape[1]))
    return leaves, output


def _boosting(model: Any) -> Leaves:
    """Gradient boosting: ``raw(x) = init(x) + lr Σ_stage tree_{stage,k}(x)``; the initial raw prediction is a
    constant, read as ``raw(x₀) − lr Σ tree(x₀)`` at any row x₀ (public API only)."""
    stages, k = model.estimators_.shape
    trees, values = [], []
    for s in range(stages):
        for c in range(k):
            tree = model.estimators_[s, c].tree_
            one_hot = np.zeros((tree.node_count, k))
            one_hot[:, c] = model.learning_rate * tree.value.reshape(tree.node_count)
            trees.append(tree)
            values.append(one_hot)
    leaves = _read_trees(trees, values, model.n_features_in_, np.zeros(k))
    x0 = np.zeros((1, model.n_features_in_))
    raw = np.asarray(model.decision_function(x0) if hasattr(model, "decision_function") else model.predict(x0),
                     dtype=float).reshape(-1)
    leaves.offset = raw - leaves.predict(x0)[0]
    return leaves
