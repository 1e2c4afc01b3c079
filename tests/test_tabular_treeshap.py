"""TreeSHAP (Lundberg et al. 2020) on scikit-learn trees: equal to the exact Shapley values of the trees'
expected-value games, computed here by enumerating every coalition (≤ 5 features): the path-dependent game by
walking the tree (a split on a feature outside S averages its children by cover, Alg. 1 of the paper) and the
interventional game from the model's own ``predict`` on hybrid rows. shap's TreeExplainer, where installed."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.ensemble import (ExtraTreesRegressor, GradientBoostingClassifier, GradientBoostingRegressor,
                              RandomForestClassifier)
from sklearn.tree import DecisionTreeRegressor

import xaikit as xk

D = 5


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, D))
    y = x[:, 0] + 2 * x[:, 1] * (x[:, 2] > 0) - x[:, 3] ** 2 + 0.1 * rng.normal(size=200)
    return x, y


def shapley(game, d: int) -> np.ndarray:
    """Exact Shapley values of ``game(frozenset) -> float`` by enumeration."""
    phi = np.zeros(d)
    for i in range(d):
        rest = [j for j in range(d) if j != i]
        for k in range(d):
            w = math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d)
            for s in itertools.combinations(rest, k):
                phi[i] += w * (game(frozenset(s) | {i}) - game(frozenset(s)))
    return phi


def tree_expectation(tree, x: np.ndarray, known: frozenset, column: int) -> float:
    """``E[f(x_S, ·)]`` under the path-dependent rule, by walking one scikit-learn tree."""
    t = tree.tree_
    x = x.astype(np.float32)

    def walk(node: int) -> float:
        if t.children_left[node] == -1:
            v = t.value[node, 0]
            return (v / v.sum())[column] if len(v) > 1 else v[0]
        left, right = t.children_left[node], t.children_right[node]
        if t.feature[node] in known:
            return walk(left if x[t.feature[node]] <= t.threshold[node] else right)
        cover = t.weighted_n_node_samples
        return (cover[left] * walk(left) + cover[right] * walk(right)) / cover[node]

    return walk(0)


@pytest.mark.parametrize("kind", ["tree", "forest_classifier", "boosting"])
def test_path_dependent_equals_enumeration(kind):
    x, y = data()
    if kind == "tree":
        model = DecisionTreeRegressor(max_depth=6, random_state=0).fit(x, y)
        trees, weight, column, offset = [model], 1.0, 0, 0.0
    elif kind == "forest_classifier":
        model = RandomForestClassifier(n_estimators=4, max_depth=5, random_state=0).fit(x, y > 0)
        trees, weight, column, offset = model.estimators_, 0.25, 1, 0.0
    else:
        model = GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
        trees, weight, column = model.estimators_[:, 0], model.learning_rate, 0
        offset = float(model.predict(x[:1])[0] - weight * sum(t.predict(x[:1])[0] for t in trees))
    expl = xk.tabular.TreeSHAP(model)(x[:4], target=column)
    for row in range(4):
        def game(s):
            return offset + weight * sum(tree_expectation(t, x[row], s, column) for t in trees)
        expected = shapley(game, D)
        assert np.abs(expl.attribution[row].numpy() - expected).max() < 1e-10
        assert abs(expl.info["base_value"][row].item() - game(frozenset())) < 1e-10
    assert np.allclose(expl.attribution.sum(1) + expl.info["base_value"], expl.output[:, column], atol=1e-10)


@pytest.mark.parametrize("kind", ["forest", "boosting_classifier"])
def test_interventional_equals_enumeration(kind):
    x, y = data(1)
    if kind == "forest":
        model = ExtraTreesRegressor(n_estimators=3, max_depth=5, random_state=0).fit(x, y)
        score = model.predict
    else:
        model = GradientBoostingClassifier(n_estimators=4, max_depth=3, random_state=0).fit(x, y > 0)
        score = model.decision_function
    background = x[50:62]
    expl = xk.tabular.TreeSHAP(model, algorithm="interventional", background=background)(x[:3])
    for row in range(3):
        def game(s):
            hybrid = background.copy()
            hybrid[:, sorted(s)] = x[row, sorted(s)]
            return float(np.mean(score(hybrid)))
        assert np.abs(expl.attribution[row].numpy() - shapley(game, D)).max() < 1e-6
    assert np.allclose(expl.info["base_value"].numpy(), np.mean(score(background)), atol=1e-10)


def test_outputs_targets_and_errors():
    x, y = data(2)
    model = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(x, y > 0)
    expl = xk.tabular.TreeSHAP(model)(x[:5])  # target None: each row's largest probability
    assert np.allclose(expl.output.numpy(), model.predict_proba(x[:5]), atol=1e-12)
    leaves = xk.tabular.TreeSHAP(model).leaves  # the leaves as read reproduce the model's outputs
    assert np.allclose(leaves.predict(x.astype(np.float32).astype(float)), model.predict_proba(x), atol=1e-12)
    assert np.array_equal(expl.target.numpy(), model.predict_proba(x[:5]).argmax(1))
    with pytest.raises(ValueError, match="background"):
        xk.tabular.TreeSHAP(model, algorithm="interventional")
    with pytest.raises(ValueError, match="algorithm"):
        xk.tabular.TreeSHAP(model, algorithm="exact")
    with pytest.raises(TypeError, match="algorithm"):
        xk.tabular.TreeSHAP(model, algoritm="exact")
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        xk.tabular.TreeSHAP(model)(x[:, :3])
    with pytest.raises(TypeError, match="KernelSHAP"):
        from sklearn.linear_model import LinearRegression
        xk.tabular.TreeSHAP(LinearRegression().fit(x, y))
    with pytest.raises(ValueError, match="not fitted"):
        xk.tabular.TreeSHAP(RandomForestClassifier())


def test_equal_to_shap():
    shap = pytest.importorskip("shap")
    x, y = data(3)
    model = GradientBoostingRegressor(n_estimators=20, max_depth=4, random_state=0).fit(x, y)
    ours = xk.tabular.TreeSHAP(model)(x[:20]).attribution.numpy()
    assert np.abs(ours - shap.TreeExplainer(model).shap_values(x[:20])).max() <= 1e-6
    ours = xk.tabular.TreeSHAP(model, algorithm="interventional", background=x[100:130])(x[:20]).attribution.numpy()
    theirs = shap.TreeExplainer(model, data=x[100:130], feature_perturbation="interventional").shap_values(x[:20])
    assert np.abs(ours - theirs).max() <= 1e-6


@pytest.mark.parametrize("algorithm", ["path_dependent", "interventional"])
def test_tables_equal_direct_computation(algorithm, monkeypatch):
    """The per-leaf pattern tables, the direct computation (leaves too wide for a table) and any split between
    them give the same values: all leaves tabled, none, or those of width ≤ 3 (a cap, then a budget)."""
    from xaikit.tabular import leaf_tables, treeshap
    x, y = data(4)
    model = RandomForestClassifier(n_estimators=3, max_depth=6, random_state=0).fit(x, y > 0)
    kw = {} if algorithm == "path_dependent" else {"algorithm": algorithm, "background": x[100:120]}
    tabled = xk.tabular.TreeSHAP(model, **kw)
    assert tabled.tables.rest is None and tabled.leaves.real.sum(1).max() > 3
    full = tabled(x[:6], target=1).attribution.numpy()
    direct = (treeshap.path_dependent(tabled.leaves, treeshap._rows(x[:6], D, "x")) if algorithm == "path_dependent"
              else treeshap.interventional(tabled.leaves, treeshap._rows(x[:6], D, "x"), tabled.background))[:, :, 1]
    assert np.abs(full - direct).max() < 1e-12
    monkeypatch.setitem(leaf_tables.MAX_WIDTH, algorithm, 3)
    capped = xk.tabular.TreeSHAP(model, **kw)
    assert capped.tables.rest is not None and capped.tables.groups
    assert np.abs(capped(x[:6], target=1).attribution.numpy() - full).max() < 1e-12
    monkeypatch.setitem(leaf_tables.MAX_WIDTH, algorithm, 12)
    monkeypatch.setattr(leaf_tables, "TABLE_BUDGET", 2 ** 3 * 3 * 20)  # room for few leaves: the cap comes down
    budget = xk.tabular.TreeSHAP(model, **kw)
    assert budget.tables.rest is not None
    assert np.abs(budget(x[:6], target=1).attribution.numpy() - full).max() < 1e-12


@pytest.mark.parametrize("algorithm", ["path_dependent", "interventional"])
def test_values_on_the_thresholds(algorithm):
    """Rows whose values equal split thresholds (x ≤ t goes left): the tables' threshold ranks agree with the
    model's own routing (completeness against predict) and with the direct comparisons."""
    from xaikit.tabular import treeshap
    x, y = data(5)
    x = np.round(x * 2) / 2  # thresholds at quarter points, exact in float32
    model = GradientBoostingRegressor(n_estimators=6, max_depth=3, random_state=0).fit(x, y)
    explainer = xk.tabular.TreeSHAP(model, **({} if algorithm == "path_dependent"
                                              else {"algorithm": algorithm, "background": x[100:115]}))
    thresholds = np.unique(np.concatenate([t.tree_.threshold[t.tree_.feature == 0] for t in model.estimators_[:, 0]]))
    assert thresholds.size >= 2 and np.array_equal(thresholds.astype(np.float32), thresholds)
    rows = np.tile(x[:1], (8, 1))
    rows[:, 0] = np.resize(thresholds, 8)  # feature 0 on its split thresholds
    expl = explainer(rows)
    assert np.allclose(expl.attribution.sum(1) + expl.info["base_value"], model.predict(rows), atol=1e-10)
    direct = (treeshap.path_dependent(explainer.leaves, rows) if algorithm == "path_dependent"
              else treeshap.interventional(explainer.leaves, rows, explainer.background))[:, :, 0]
    assert np.abs(expl.attribution.numpy() - direct).max() < 1e-12
