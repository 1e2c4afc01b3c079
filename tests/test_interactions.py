"""Shapley interaction indices: equal to their definitions written out here, efficient, estimators converge."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.interactions import ShapleyInteractions
from xaikit.interactions.indices import exact, interaction_sets


# -- the definitions, written out with loops over subsets (numpy, independent of the library) -------------------
def subsets(items):
    items = list(items)
    for r in range(len(items) + 1):
        yield from itertools.combinations(items, r)


def key(coalition):
    return sum(1 << j for j in coalition)


def derivative(v, S, T):
    """Discrete derivative Δ_S v(T) = Σ_{L ⊆ S} (-1)^{|S|-|L|} v(T ∪ L)."""
    return sum((-1) ** (len(S) - len(L)) * v[key(set(T) | set(L))] for L in subsets(S))


def sii(v, d, S):
    """Grabisch & Roubens 1999: Σ_{T ⊆ N∖S} (d-t-s)! t! / (d-s+1)! Δ_S v(T)."""
    s, rest = len(S), [j for j in range(d) if j not in S]
    return sum(math.factorial(d - len(T) - s) * math.factorial(len(T)) / math.factorial(d - s + 1)
               * derivative(v, S, T) for T in subsets(rest))


BERNOULLI = {0: 1.0, 1: -0.5, 2: 1 / 6, 3: 0.0}


def k_sii(v, d, S, k):
    """Bordt & von Luxburg 2023, the recursive definition: SII at order k, and below it the order k-1 values
    plus B_{k-s} times the SII of the supersets of size k."""
    if len(S) == k:
        return sii(v, d, S)
    rest = [j for j in range(d) if j not in S]
    return k_sii(v, d, S, k - 1) + BERNOULLI[k - len(S)] * sum(
        sii(v, d, tuple(sorted(S + K))) for K in itertools.combinations(rest, k - len(S)))


def stii(v, d, S, k):
    """Sundararajan et al. 2020: Δ_S v(∅) below order k; k/d Σ_T Δ_S v(T) / C(d-1, t) at order k."""
    if len(S) < k:
        return derivative(v, S, ())
    rest = [j for j in range(d) if j not in S]
    return k / d * sum(derivative(v, S, T) / math.comb(d - 1, len(T)) for T in subsets(rest))


def fsii(v, d, k):
    """Tsai et al. 2023, the definition: the Shapley-kernel weighted least-squares polynomial of degree k with
    v(∅) and v(N) matched (a KKT system)."""
    sets = [S for s in range(1, k + 1) for S in itertools.combinations(range(d), s)]
    rows, weights, y = [], [], []
    for U in subsets(range(d)):
        if 0 < len(U) < d:
            rows.append([float(set(S) <= set(U)) for S in sets])
            weights.append((d - 1) / (math.comb(d, len(U)) * len(U) * (d - len(U))))
            y.append(v[key(U)] - v[0])
    X, W, y, p = np.array(rows), np.diag(weights), np.array(y), len(sets)
    kkt = np.zeros((p + 1, p + 1))
    kkt[:p, :p], kkt[:p, p], kkt[p, :p] = X.T @ W @ X, 1, 1
    return np.linalg.solve(kkt, np.concatenate([X.T @ W @ y, [v[-1] - v[0]]]))[:p]


def brute(v, d, index, k):
    if index == "FSII":
        return fsii(v, d, k)
    one = {"SII": lambda S: sii(v, d, S), "k-SII": lambda S: k_sii(v, d, S, k), "STII": lambda S: stii(v, d, S, k)}
    return np.array([one[index](S) for S in interaction_sets(d, k)])


INDICES = ("SII", "k-SII", "STII", "FSII")


@pytest.mark.parametrize("index", INDICES)
def test_exact_equals_definition_on_random_games(index):
    rng = np.random.default_rng(0)
    for d, k in ((5, 1), (5, 2), (6, 3)):
        v = rng.normal(size=2**d)
        got = exact(torch.tensor(v)[None], index, k)[0].numpy()
        np.testing.assert_allclose(got, brute(v, d, index, k), rtol=0, atol=1e-6)


def game_model(d: int = 6) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d, 12), nn.Tanh(), nn.Linear(12, 2)).double().eval()


def values_of(model, x, d):
    """v(U) = f(x on U, 0 elsewhere) for every coalition (bit j: feature j), one sample."""
    z = torch.tensor([[(c >> j) & 1 for j in range(d)] for c in range(2**d)], dtype=torch.float64)
    with torch.no_grad():
        return model(x[None] * z)[:, 0].numpy()


@pytest.mark.parametrize("index", INDICES)
def test_tool_on_a_model_equals_definition_and_is_efficient(index):
    d = 6
    model = game_model(d)
    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    before = snapshot(model)
    for k in (2, 3):
        result = ShapleyInteractions(model, index=index, order=k)(x, target=0)
        assert result.info["exact"] and result.sets == interaction_sets(d, k)
        for i in range(3):
            np.testing.assert_allclose(result.values[i].numpy(), brute(values_of(model, x[i], d), d, index, k),
                                       rtol=0, atol=1e-6)
        if index != "SII":  # efficiency: Σ_S I(S) = v(N) - v(∅)
            assert result.efficiency_delta.abs().max() < 1e-9
    assert_unchanged(model, before)


def test_order_ten_features_pairwise_sii_equals_definition():
    """d = 10 (1024 coalitions): pairwise SII from the definition over T ⊆ N∖{i, j}."""
    d = 10
    model = game_model(d)
    x = torch.randn(1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v = values_of(model, x[0], d)
    result = ShapleyInteractions(model, index="SII", order=2)(x, target=0)
    for (i, j) in [(0, 1), (2, 7), (8, 9)]:
        assert abs(float(result[(i, j)][0]) - sii(v, d, (i, j))) < 1e-6


def test_order_one_is_the_shapley_value_and_k_sii_matches_shap_interaction_values():
    d = 6
    model = game_model(d)
    x = torch.randn(2, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    shapley = xk.ExactShapley(model)(x, target=0).info["feature_attribution"]
    for index in INDICES:
        first = ShapleyInteractions(model, index=index, order=1)(x, target=0)
        torch.testing.assert_close(first.values, shapley.double(), rtol=0, atol=1e-9)
    # 2-SII as a matrix (Lundberg et al. 2020): rows sum to the Shapley values when the pairs are halved
    two = ShapleyInteractions(model, index="k-SII", order=2)(x, target=0)
    for i in range(2):
        m = two.matrix(i)
        rows = m.diagonal() + (m.sum(1) - m.diagonal()) / 2
        torch.testing.assert_close(rows, shapley[i].double(), rtol=0, atol=1e-9)


def median_error(results, truth: torch.Tensor, columns=slice(None)) -> float:
    """Median over samples (and results) of ``‖I - truth‖ / ‖truth‖`` on ``columns`` of the sets."""
    results = results if isinstance(results, (list, tuple)) else [results]
    return float(torch.stack([(r.values - truth)[:, columns].norm(dim=1) / truth[:, columns].norm(dim=1)
                              for r in results]).median())


@pytest.mark.parametrize("estimator", ["regression", "sampling", "kernel", "sparse"])
def test_estimators_converge_and_are_efficient(estimator):
    d = 9
    model = game_model(d)
    x = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    truth = ShapleyInteractions(model, index="k-SII", order=2)(x, target=0).values
    errors = []
    for budget in (64, 160, 400):
        runs = [ShapleyInteractions(model, index="k-SII", order=2, budget=budget, estimator=estimator, seed=s)(
            x, target=0) for s in range(3)]
        for run in runs:
            assert run.efficiency_delta.abs().max() < 1e-9 and not run.info["exact"]
        errors.append(median_error(runs, truth))
    assert errors[0] > errors[1] > errors[2], errors
    full = ShapleyInteractions(model, index="k-SII", order=2, budget=2**d - 2, estimator=estimator, seed=0)
    assert (full(x, target=0).values - truth).abs().max() < 1e-9  # every size enumerated: exact


def test_regression_estimator_beats_sampling_and_is_seeded():
    d = 9
    model = game_model(d)
    x = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    truth = ShapleyInteractions(model, index="FSII", order=2)(x, target=0).values
    error = {}
    for estimator in ("regression", "sampling"):
        # a fixed chunk size: "auto" times chunk sizes, and the model's outputs differ in the last bits between them
        run = ShapleyInteractions(model, index="FSII", order=2, budget=128, estimator=estimator, seed=0,
                                  batch_size=64)
        a, b = run(x, target=0), run(x, target=0)
        assert torch.equal(a.values, b.values)
        error[estimator] = median_error(a, truth)
    assert error["regression"] < 0.5 * error["sampling"], error


def test_kernel_estimator_beats_regression_on_a_smooth_model_and_refuses_large_budgets():
    d = 9
    model = game_model(d)
    x = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    truth = ShapleyInteractions(model, index="k-SII", order=2)(x, target=0).values
    error = {}
    for estimator in ("regression", "kernel"):
        runs = [ShapleyInteractions(model, index="k-SII", order=2, budget=96, estimator=estimator, seed=s)(
            x, target=0) for s in range(3)]
        error[estimator] = median_error(runs, truth)
    assert error["kernel"] < 0.7 * error["regression"], error
    with pytest.raises(ValueError, match='estimator="kernel" solves a system of budget × budget'):
        ShapleyInteractions(model, estimator="kernel", budget=10_000)


class SparseGame(nn.Module):
    """A game with few interactions: main effects, three products of pairs and one of a triple (16 features)."""

    def forward(self, x):
        main = x @ torch.linspace(-1.0, 1.0, x.shape[1], dtype=x.dtype)
        pairs = 1.5 * x[:, 0] * x[:, 1] - x[:, 2] * x[:, 7] + 0.8 * x[:, 4] * x[:, 12]
        return (main + pairs + 0.6 * x[:, 3] * x[:, 9] * x[:, 14])[:, None]


def test_sparse_estimator_beats_regression_on_a_sparse_game_near_the_number_of_sets_and_is_seeded():
    d = 16  # 136 sets of size 1..2; 160 evaluations
    model = SparseGame().eval()
    x = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    truth = ShapleyInteractions(model, index="k-SII", order=2, budget=2**d - 2)(x, target=0)
    assert truth.info["exact"]
    pairs = torch.tensor([len(s) == 2 for s in interaction_sets(d, 2)])
    error = {}
    for estimator in ("regression", "kernel", "sparse"):
        run = ShapleyInteractions(model, index="k-SII", order=2, budget=160, estimator=estimator, seed=0)
        result = run(x, target=0)
        assert result.efficiency_delta.abs().max() < 1e-9
        error[estimator] = median_error(result, truth.values, pairs)
        if estimator == "sparse":
            assert torch.equal(run(x, target=0).values, result.values)  # seeded: the same folds, the same fit
            other = ShapleyInteractions(model, index="k-SII", order=2, budget=160, estimator=estimator, seed=1)
            assert not torch.equal(other(x, target=0).values, result.values)
    assert error["sparse"] < 0.5 * min(error["regression"], error["kernel"]), error


def probability_model(d: int) -> nn.Module:
    """A saturating class probability (softmax of a tanh MLP with large weights): far from a low-order polynomial."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        net[2].weight.mul_(6.0)
    return nn.Sequential(net, nn.Softmax(-1)).double().eval()


def test_logit_link_surrogate_is_efficient_exact_at_full_budget_and_beats_identity_on_probabilities():
    from xaikit.interactions.estimators import estimate, plan
    from xaikit.interactions.indices import membership

    d = 9
    model = probability_model(d)
    x = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    truth = ShapleyInteractions(model, index="k-SII", order=2)(x, target=0).values
    pairs = torch.tensor([len(s) == 2 for s in interaction_sets(d, 2)])
    error = {}
    for link in ("identity", "logit"):
        runs = [ShapleyInteractions(model, index="k-SII", order=2, budget=256, link=link, seed=s)(x, target=0)
                for s in range(3)]
        for run in runs:
            assert run.efficiency_delta.abs().max() < 1e-9 and run.info["link"] == link
        error[link] = median_error(runs, truth, pairs)
    # median pair error on this model: identity 0.037 (0.111 with the Shapley-kernel weighted fit of earlier
    # versions), logit 0.022
    assert error["logit"] < 0.7 * error["identity"], error
    # every coalition evaluated: the surrogate's index plus the residual's estimate is the exact index
    z = torch.tensor([[(c >> j) & 1 for j in range(d)] for c in range(2**d)], dtype=torch.bool)
    with torch.no_grad():
        v = model(x[:, None] * z[None])[..., 0]
    design = plan(d, 2**d - 2, True, torch.Generator().manual_seed(0))
    index_of = {int(sum(1 << j for j in range(d) if row[j])): i for i, row in enumerate(z)}
    values = v[:, [index_of[int(sum(1 << j for j in range(d) if row[j]))] for row in design.z]]
    member = membership(interaction_sets(d, 2), d)
    for index in ("k-SII", "STII", "FSII"):
        full = estimate(v[:, 0], v[:, -1], values, design, index, 2, "regression", member, "logit")
        reference = ShapleyInteractions(model, index=index, order=2)(x, target=0).values
        assert (full - reference).abs().max() < 1e-9, index


def test_logit_link_above_sixteen_players_estimates_the_surrogate_and_refuses_non_probabilities():
    d = 18
    model = probability_model(d)
    x = torch.randn(2, d, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    tool = ShapleyInteractions(model, index="k-SII", order=2, budget=256, link="logit", seed=0, batch_size=512)
    a, b = tool(x, target=1), tool(x, target=1)
    assert torch.equal(a.values, b.values) and a.efficiency_delta.abs().max() < 1e-9
    logits = model[0]
    before = snapshot(logits)
    with pytest.raises(ValueError, match=r'link="logit" needs scores in \[0, 1\]'):
        ShapleyInteractions(logits, order=2, budget=256, link="logit")(x, target=0)
    with pytest.raises(ValueError, match="link"):
        ShapleyInteractions(model, link="probit")
    assert_unchanged(logits, before)


def test_batch_invariance_and_images_on_grid_and_uneven_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    tool = ShapleyInteractions(model, index="STII", order=2, features="grid:3", budget=200, seed=1)
    batch = tool(x, target=1)
    alone = tool(x[1:2], target=1)
    assert torch.allclose(batch.values[1], alone.values[0], atol=1e-9)
    assert batch.efficiency_delta.abs().max() < 1e-6
    # per-sample masks with 4 and 6 features (superpixels come this way): padded sets carry 0
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    mask[0, 0] = (torch.arange(8)[:, None] // 4) * 2 + torch.arange(8)[None] // 4
    mask[1, 0] = (torch.arange(8)[:, None] // 3).clamp_max(1) * 3 + torch.arange(8)[None] // 3
    result = ShapleyInteractions(model, index="k-SII", order=2, features=mask)(x[:2], target=0)
    assert result.count.tolist() == [4, 6]
    assert result.efficiency_delta.abs().max() < 1e-9
    assert result.matrix(0).shape == (4, 4) and float(result[(4, 5)][0]) == 0.0
    assert len(result._rows()) == (4 + 6) + (6 + 15)


def test_token_ids_are_players():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 2)).eval()
    ids = torch.randint(1, 10, (2, 5))
    result = ShapleyInteractions(model, order=2, baseline=0)(ids, target=1)
    assert result.values.shape == (2, 15) and result.efficiency_delta.abs().max() < 1e-5
    # the model is additive over tokens (embedding, then linear): every pair interacts by 0
    _, pairs = result.of_order(2)
    assert pairs.abs().max() < 1e-5


def test_bad_input_is_refused_clearly_and_the_model_is_unchanged():
    model = game_model(4)
    x = torch.randn(2, 4, dtype=torch.float64)
    before = snapshot(model)
    with pytest.raises(ValueError, match="order=5 is above the number of features"):
        ShapleyInteractions(model, order=5)(x)
    with pytest.raises(ValueError, match="budget=5 is too small for order 2"):
        ShapleyInteractions(model, order=2, budget=5)(x)
    with pytest.raises(ValueError, match="index"):
        ShapleyInteractions(model, index="shapley-taylor")
    with pytest.raises(ValueError, match="unknown estimator 'lasso'; valid: kernel, regression, sampling, sparse"):
        ShapleyInteractions(model, estimator="lasso")
    with pytest.raises(TypeError, match="did you mean 'order'"):
        ShapleyInteractions(model, ordr=2)
    assert_unchanged(model, before)


def test_views_draw_the_values_they_are_given():
    import xaikit.viz as viz

    d = 5
    model = game_model(d)
    x = torch.randn(1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    result = ShapleyInteractions(model, order=2)(x, target=0)
    matrix = result.matrix(0)
    assert torch.equal(matrix, matrix.T) and float(matrix[1, 3]) == float(result[(1, 3)][0])
    figure = viz.plot_interaction_matrix(result, 0, names=list("abcde"))
    shown = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), matrix.numpy())
    assert len(viz.plot_interaction_network(result, 0, top=3).axes[0].lines) == 3
    assert result.top(0, n=2)[0][1] == max((v for s, v in zip(result.sets, result.values[0].tolist())
                                            if len(s) == 2), key=abs)
    with pytest.raises(ValueError, match="order >= 2"):
        viz.plot_interaction_matrix(ShapleyInteractions(model, order=1)(x, target=0))
    with pytest.raises(ValueError, match="names has 2 entries for 5 features"):
        viz.plot_interaction_matrix(result, 0, names=["a", "b"])


def test_auto_link_is_logit_on_softmax_outputs_identity_elsewhere_per_sample():
    d = 9
    probabilities = probability_model(d)

    def scaled(x):  # a softmax where x_0 <= 1, twice one (not a probability vector) where x_0 > 1
        return probabilities(x) * (1.0 + (x[:, :1] > 1).double())

    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    x[:, 0] = torch.tensor([0.5, 1.5, -0.3], dtype=torch.float64)
    before = snapshot(probabilities)
    settings = dict(index="k-SII", order=2, budget=200, seed=4)
    auto = ShapleyInteractions(scaled, **settings)(x, target=1)
    assert auto.info["link"] == ["logit", "identity", "logit"]
    for row, link in enumerate(["logit", "identity", "logit"]):
        alone = ShapleyInteractions(scaled, link=link, **settings)(x[row:row + 1], target=1)
        assert alone.info["link"] == link
        assert torch.allclose(auto.values[row], alone.values[0], atol=1e-12, rtol=0), (row, link)
    assert ShapleyInteractions(probabilities, **settings)(x, target=2).info["link"] == "logit"
    # logits are not probabilities, even where they happen to lie in [0, 1]; nor is a single output
    squashed = lambda t: torch.sigmoid(probabilities[0](t)) * 0.5 + 0.25  # noqa: E731
    assert ShapleyInteractions(squashed, **settings)(x, target=2).info["link"] == "identity"
    assert ShapleyInteractions(lambda t: probabilities(t)[:, :1], **settings)(x, target=0).info["link"] == "identity"
    assert auto.efficiency_delta.abs().max() < 1e-9
    assert_unchanged(probabilities, before)


def surrogate_game(model, d: int, budget: int, rows: int, seed: int):
    """A design of ``budget`` coalitions on d players (seeded), its sets of size 1..2 (``member``), ``[T ⊆ U]``
    (``x``, float64) and the model's values on ∅, the coalitions and N for ``rows`` random inputs (``v``)."""
    from xaikit.interactions.estimators import plan
    from xaikit.interactions.indices import membership

    design = plan(d, budget, True, torch.Generator().manual_seed(seed))
    member = membership(interaction_sets(d, 2), d)
    x = ((design.z.double() @ member.double().T) == member.sum(1).double()).double()
    inputs = torch.randn(rows, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        v = model(inputs[:, None] * torch.cat([torch.zeros(1, d, dtype=torch.bool), design.z,
                                               torch.ones(1, d, dtype=torch.bool)])[None])[..., 0]
    return design, member, x, v


def test_logit_surrogate_prior_is_the_cross_validated_one():
    """The prior picked per game and its coefficients equal a brute-force cross-validation written here (numpy:
    every fold and prior fitted from scratch on its own coalitions)."""
    from xaikit.interactions.estimators import CV_FOLDS, PRIORS, cv_folds, logit_surrogate

    d, ridge = 7, 1e-3
    design, member, _, v = surrogate_game(probability_model(d), d, 60, 4, seed=2)
    fitted = logit_surrogate(v[:, 0], v[:, -1], v[:, 1:-1], design.z, member, ridge)
    every = np.concatenate([np.zeros((1, d)), design.z.numpy(), np.ones((1, d))])
    sets = member.numpy().astype(float)
    features = np.concatenate([np.ones((len(every), 1)), (every @ sets.T == sets.sum(1)).astype(float)], 1)
    higher = np.concatenate([[False], sets.sum(1) > 1])
    fold = np.concatenate([[-1], cv_folds(len(every) - 2).numpy(), [-1]])
    for g in range(v.shape[0]):
        p = np.clip(v[g].numpy(), 1e-6, 1 - 1e-6)
        y, w = np.log(p / (1 - p)), p * (1 - p)

        def fit(keep, prior):
            a, ww = features[keep], w[keep]
            gram = a.T @ (ww[:, None] * a)
            penalty = ridge * ww.mean() + higher * prior * gram.diagonal()[higher].mean() * a.shape[1] / keep.sum()
            return np.linalg.solve(gram + np.diag(penalty), a.T @ (ww * y[keep]))

        losses = [sum(((1 / (1 + np.exp(-features[fold == f] @ fit(fold != f, prior))) - p[fold == f]) ** 2).sum()
                      for f in range(CV_FOLDS)) for prior in PRIORS]
        best = PRIORS[int(np.argmin(losses))]
        reference = fit(np.ones(len(every), dtype=bool), best)
        assert abs(fitted.intercept[g].item() - reference[0]) < 1e-8
        assert np.abs(fitted.beta[g].numpy() - reference[1:]).max() < 1e-8


def test_regression_surrogate_prior_is_the_cross_validated_one():
    """The polynomial of ``estimator="regression"``: its prior per game and its coefficients equal a brute-force
    cross-validation of the constrained least squares written here (numpy, one KKT system per fold and prior)."""
    from xaikit.interactions.estimators import CV_FOLDS, PRIORS, _fit, cv_folds

    d = 7
    _, member, x, v = surrogate_game(game_model(d), d, 70, 4, seed=5)
    higher = member.sum(1) > 1
    fitted = _fit(v[:, 0], v[:, -1], v[:, 1:-1], x, higher)
    xs, hs, fold = x.numpy(), higher.numpy(), cv_folds(len(x)).numpy()

    def solve(keep, y, gap, prior):
        a = xs[keep]
        gram = a.T @ a
        diagonal = gram.diagonal()
        penalty = 1e-9 * diagonal.mean() + hs * prior * diagonal[hs].mean() * a.shape[1] / keep.sum()
        p = len(penalty)
        kkt = np.zeros((p + 1, p + 1))
        kkt[:p, :p], kkt[:p, p], kkt[p, :p] = gram + np.diag(penalty), 1.0, 1.0
        return np.linalg.solve(kkt, np.concatenate([a.T @ y[keep], [gap]]))[:p]

    for g in range(v.shape[0]):
        y, gap = (v[g, 1:-1] - v[g, 0]).numpy(), float(v[g, -1] - v[g, 0])
        losses = [sum(((y[fold == f] - xs[fold == f] @ solve(fold != f, y, gap, prior)) ** 2).sum()
                      for f in range(CV_FOLDS)) for prior in PRIORS]
        reference = solve(np.ones(len(xs), dtype=bool), y, gap, PRIORS[int(np.argmin(losses))])
        assert np.abs(fitted[g].numpy() - reference).max() < 1e-7 * max(1.0, np.abs(reference).max())
        assert abs(fitted[g].sum().item() - gap) < 1e-9


def test_above_the_cross_validation_limit_the_surrogates_take_the_fixed_prior(monkeypatch):
    """Above CV_MAX_SETS sets both surrogates skip the cross-validation (its cost grows as P³ per fold and prior)
    and fit with the fixed prior RIDGE: equal to the cross-validated fit restricted to that one prior."""
    from xaikit.interactions import estimators

    d = 8
    design, member, x, v = surrogate_game(probability_model(d), d, 120, 3, seed=1)
    higher = member.sum(1) > 1
    monkeypatch.setattr(estimators, "CV_MAX_SETS", 10)  # 36 sets: above it
    fixed_poly = estimators._fit(v[:, 0], v[:, -1], v[:, 1:-1], x, higher)
    fixed_logit = estimators.logit_surrogate(v[:, 0], v[:, -1], v[:, 1:-1], design.z, member)
    monkeypatch.setattr(estimators, "CV_MAX_SETS", 1024)
    monkeypatch.setattr(estimators, "PRIORS", (estimators.RIDGE,))
    one_poly = estimators._fit(v[:, 0], v[:, -1], v[:, 1:-1], x, higher)
    one_logit = estimators.logit_surrogate(v[:, 0], v[:, -1], v[:, 1:-1], design.z, member)
    assert torch.allclose(fixed_poly, one_poly, atol=1e-10, rtol=0)
    assert torch.allclose(fixed_logit.beta, one_logit.beta, atol=1e-10, rtol=0)
    assert torch.allclose(fixed_logit.intercept, one_logit.intercept, atol=1e-10, rtol=0)
