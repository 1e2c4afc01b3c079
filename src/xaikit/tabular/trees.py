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


def _tree_leaves(tree: Any, weight: np.ndarray, normalise: bool) -> list[tuple]:
    """The leaves of one fitted ``sklearn.tree._tree.Tree``: (features, lo, hi, cover share, value)."""
    left, right = tree.children_left, tree.children_right
    feature, threshold = tree.feature, tree.threshold
    cover = tree.weighted_n_node_samples
    values = tree.value[:, :, :]  # (nodes, outputs, classes)
    found = []

    def visit(node: int, bounds: dict) -> None:  # the recursion over the tree structure (not over samples)
        if left[node] == -1:
            v = values[node].reshape(-1).astype(float)
            if normalise:
                v = v / v.sum()
            found.append((bounds, v * weight))
            return
        j = int(feature[node])
        lo, hi, share = bounds.get(j, (-np.inf, np.inf, 1.0))
        t = float(threshold[node])
        for child, interval in ((left[node], (lo, min(hi, t))), (right[node], (max(lo, t), hi))):
            inner = dict(bounds)
            inner[j] = (*interval, share * cover[child] / cover[node])
            visit(int(child), inner)

    visit(0, {})
    return found


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
    parts: list[tuple] = []
    offset: np.ndarray
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
    for tree in trees:
        parts.extend(_tree_leaves(tree.tree_, np.asarray(weight), classify))
    k = parts[0][1].shape[0]
    offset = np.zeros(k)
    output = output or ("predict_proba" if classify else "predict")
    return _pad(parts, offset, model.n_features_in_), output


def _boosting(model: Any) -> Leaves:
    """Gradient boosting: ``raw(x) = init(x) + lr Σ_stage tree_{stage,k}(x)``; the initial raw prediction is a
    constant, read as ``raw(x₀) − lr Σ tree(x₀)`` at any row x₀ (public API only)."""
    stages, k = model.estimators_.shape
    parts = []
    for s in range(stages):
        for c in range(k):
            for bounds, v in _tree_leaves(model.estimators_[s, c].tree_, np.asarray(model.learning_rate), False):
                one_hot = np.zeros(k)
                one_hot[c] = v[0]
                parts.append((bounds, one_hot))
    x0 = np.zeros((1, model.n_features_in_))
    raw = np.asarray(model.decision_function(x0) if hasattr(model, "decision_function") else model.predict(x0),
                     dtype=float).reshape(1, -1)
    trees = np.array([[model.learning_rate * model.estimators_[s, c].predict(x0)[0] for c in range(k)]
                      for s in range(stages)]).sum(0)
    return _pad(parts, raw[0] - trees, model.n_features_in_)


def _pad(parts: list[tuple], offset: np.ndarray, n_features: int) -> Leaves:
    width = max(1, max(len(bounds) for bounds, _ in parts))
    n = len(parts)
    feature = np.zeros((n, width), dtype=np.int64)
    lo = np.full((n, width), -np.inf)
    hi = np.full((n, width), np.inf)
    cover = np.ones((n, width))
    real = np.zeros((n, width), dtype=bool)
    for i, (bounds, _) in enumerate(parts):
        for p, (j, (a, b, share)) in enumerate(sorted(bounds.items())):
            feature[i, p], lo[i, p], hi[i, p], cover[i, p], real[i, p] = j, a, b, share, True
    value = np.stack([v for _, v in parts])
    return Leaves(feature, lo, hi, cover, real, value, np.asarray(offset, dtype=float), int(n_features))
