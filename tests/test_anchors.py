"""Anchors (xaikit.rules): measured precision on held-out draws, coverage against a brute-force count on the
data, closed forms on images and tokens, seeded determinism, the model left unchanged, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.rules import Anchors

from models import assert_unchanged, snapshot

TAU = 0.95


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, seed: int = 0) -> nn.Module:
    """A standardising logistic model fitted full-batch (LBFGS) in float64."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0)
    model = nn.Sequential(nn.Linear(x.shape[1], classes)).double()

    class Standardise(nn.Module):
        def forward(self, v):
            return (v - mean) / std

    model = nn.Sequential(Standardise(), model)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 1e-3 * model[1][0].weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = torch.tensor(data.data), torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:400], order[400:]
    model = fit_logistic(x[train], y[train], 2)
    return model, x[train], x[test], list(data.feature_names)


def holds(conditions, names, rows):
    """Brute force: which rows satisfy every condition of a rule."""
    ok = torch.ones(rows.shape[0], dtype=torch.bool)
    for c in conditions:
        v = rows[:, names.index(c["column"])]
        ok &= (v == c["equals"]) if "equals" in c else ((v > c["low"]) & (v <= c["high"]))
    return ok


def test_anchors_on_breast_cancer_hold_their_precision_on_held_out_draws(cancer):
    model, train, test, names = cancer
    before = snapshot(model)
    anchors = Anchors(model, data=train, feature_names=names, seed=0)
    rows = test[:4]
    result = anchors(rows)
    assert_unchanged(model, before)
    assert result.valid.all()
    # precision on fresh draws (another seed), computed here from the model's own predictions
    drawn = anchors.sample(rows, result, samples=2000, seed=123)
    measured = []
    for i, z in enumerate(drawn):
        rule = result.rules[i]
        assert holds(rule.conditions, names, z).all()  # every draw satisfies the rule
        with torch.no_grad():
            measured.append(float((model(z).argmax(1) == rule.target).double().mean()))
        # coverage is the fraction of the data rows where the rule holds (brute force)
        assert rule.coverage == pytest.approx(float(holds(rule.conditions, names, train).double().mean()))
        assert str(rule).startswith("IF ") and f"THEN class {rule.target}" in str(rule)
    assert np.mean(np.array(measured) >= TAU) >= 0.95, measured
    assert torch.equal(result.target, model(rows).argmax(1))
    assert list(result.to_pandas().columns)[:3] == ["sample", "rule", "target"]


def test_anchors_are_seeded_and_sklearn_models_work():
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data[:150], data.target[:150])
    model = xk.NumpyModel(clf.predict_proba)
    rows = torch.tensor(data.data[150:151])
    make = lambda seed: Anchors(model, data=data.data[:150], feature_names=data.feature_names, seed=seed,  # noqa
                                samples=128, max_samples=2048)
    first, again = make(3)(rows), make(3)(rows)
    assert [r.text for r in first.rules] == [r.text for r in again.rules]
    assert torch.equal(first.precision, again.precision)
    assert all(r.valid for r in first.rules)
    assert first.rules[0].text[0] in first.to_markdown()


def test_categorical_columns_of_a_dataframe_give_equality_predicates():
    pd = pytest.importorskip("pandas")
    g = torch.Generator().manual_seed(0)
    colour = np.array(["red", "green", "blue"])[torch.randint(3, (300,), generator=g).numpy()]
    size = torch.rand(300, generator=g).numpy()
    frame = pd.DataFrame({"colour": colour, "size": size})

    def predict(codes):  # codes: colour as 0 blue, 1 green, 2 red (sorted); class 1 iff red
        red = torch.as_tensor(codes[:, 0] == 2, dtype=torch.float64)
        return torch.stack([1 - red, red], 1)

    with pytest.raises(ValueError, match="categorical"):
        Anchors(predict, data=frame)
    anchors = Anchors(predict, data=frame, categorical=["colour"], seed=0)
    result = anchors(frame.iloc[:3])
    for i, rule in enumerate(result.rules):
        if colour[i] == "red":
            assert rule.text == ["colour = red"] and rule.precision == 1.0
            assert rule.coverage == pytest.approx(float((colour == "red").mean()))


class CellModel(nn.Module):
    """Class 1 iff the mean of the top-left 4×4 cell of an 8×8 image exceeds 0.5."""

    def forward(self, x):
        s = x[:, :, :4, :4].mean((1, 2, 3)) - 0.5
        return torch.stack([-s, s], 1) * 10


def test_image_anchor_is_the_cell_the_model_reads_with_coverage_keep():
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, :4, :4] = 1.0
    x[1, :, 4:, 4:] = 1.0
    anchors = Anchors(CellModel().eval(), features="grid:2", baseline="zero", seed=0)
    result = anchors(x)
    for rule in result.rules:
        assert rule.target == 1 and rule.conditions == [{"part": 0}]
        assert rule.precision == 1.0 and rule.coverage == 0.5  # keep^|A| with keep = 0.5


def test_token_anchor_is_the_word_the_model_reads():
    def model(ids):  # class 1 iff token 7 is present
        has = (ids == 7).any(1).double()
        return torch.stack([1 - has, has], 1)

    ids = torch.tensor([[3, 7, 5, 9], [7, 2, 2, 2]])
    result = Anchors(model, mask_token=0, vocabulary={3: "the", 7: "great", 5: "film", 9: "!", 2: "a"},
                     seed=0)(ids)
    assert result.rules[0].conditions == [{"part": 1}] and result.rules[0].text == ["'great'@1"]
    assert result.rules[1].conditions == [{"part": 0}]
    assert result.rules[0].coverage == 0.5
    with pytest.raises(ValueError, match="mask_token"):
        Anchors(model)(ids)


@pytest.mark.parametrize("tau", [0, 1, 1.5, -0.1])
def test_threshold_outside_the_unit_interval_is_refused(tau):
    with pytest.raises(ValueError, match="threshold"):
        Anchors(CellModel(), threshold=tau)


def test_bad_columns_and_settings_are_named():
    data = torch.rand(20, 3)
    with pytest.raises(ValueError, match="categorical.*did you mean 'x1'"):
        Anchors(CellModel(), data=data, categorical=["x11"])
    with pytest.raises(TypeError, match="did you mean 'threshold'"):
        Anchors(CellModel(), treshold=0.9)
    with pytest.raises(ValueError, match="fit"):
        Anchors(CellModel(), kind="table")(data)


def test_kl_bounds_are_the_conservative_ends_of_the_kl_confidence_interval():
    from xaikit.rules.bandit import kl_bernoulli, kl_bounds

    g = torch.Generator().manual_seed(0)
    mean = torch.rand(200, generator=g, dtype=torch.float64)
    mean[:5], mean[5:10] = 0.0, 1.0
    n = torch.randint(1, 5000, (200,), generator=g).double()
    level = 4.2
    lower, upper = kl_bounds(mean, n, level)
    budget = level / n
    width = 2.0 ** -15
    assert bool((lower <= mean).all() and (upper >= mean).all())
    # outside (or on the boundary of) the interval n·KL ≤ β, and within 2⁻¹⁵ of it (bisection width 2⁻¹⁶)
    assert bool(((kl_bernoulli(mean, lower) >= budget) | (lower == 0)).all())
    assert bool((kl_bernoulli(mean, (lower + width).clamp_max(mean)) <= budget + 1e-12).all())
    assert bool(((kl_bernoulli(mean, upper) >= budget) | (upper == 1)).all())
    assert bool((kl_bernoulli(mean, (upper - width).clamp_min(mean)) <= budget + 1e-12).all())


def test_kl_lucb_with_doubling_pulls_finds_the_best_arms():
    from xaikit.rules.bandit import kl_lucb

    means = torch.tensor([0.9, 0.5, 0.1, 0.8, 0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    sizes = []

    def pull(arms, n):
        sizes.append(n)
        return (torch.rand(len(arms), n, generator=g, dtype=torch.float64) < means[arms, None]).sum(1).double()

    hits, draws = pull(torch.arange(5), 16), torch.full((5,), 16.0, dtype=torch.float64)
    chosen = kl_lucb(pull, hits, draws, 2, delta=0.05, epsilon=0.05, batch=16, max_draws=1 << 14)
    assert sorted(chosen.tolist()) == [0, 3]
    assert max(sizes) > 16 and draws.max() <= 2 * (1 << 14)  # the pulls grew; no arm far beyond max_draws


class SumModel(nn.Module):
    """Class 1 iff x0 + x1 > 1 (soft), x2 ignored."""

    def forward(self, x):
        s = (x[:, 0] + x[:, 1] - 1) * 8
        return torch.stack([-s, s], 1)


def test_rows_explained_together_alone_or_in_other_chunks_get_the_same_rule():
    g = torch.Generator().manual_seed(0)
    data = torch.rand(300, 3, generator=g, dtype=torch.float64)
    rows = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.5], [0.7, 0.6, 0.9]], dtype=torch.float64)
    model = SumModel().double().eval()
    before = snapshot(model)
    together = Anchors(model, data=data, seed=0)(rows)
    alone = Anchors(model, data=data, seed=0)(rows[1:2])
    chunked = Anchors(model, data=data, seed=0, batch_size=7)(rows)
    assert_unchanged(model, before)
    assert together.rules[1].text == alone.rules[0].text and together.rules[1].samples == alone.rules[0].samples
    assert [r.text for r in together.rules] == [r.text for r in chunked.rules]
    assert torch.equal(together.precision, chunked.precision)
    assert all("x2" not in " ".join(r.text) for r in together.rules)  # the ignored column is never needed


def test_image_anchor_regions_are_the_pixels_of_the_deciding_part():
    """A model that decides by the top-left quadrant only (class 1 iff its mean exceeds 0.25, absent parts show
    0): the anchor is that quadrant, and ``regions`` marks exactly its pixels; the viz section shows it."""
    class TopLeft(nn.Module):
        def forward(self, v):
            s = v[:, :, :4, :4].mean((1, 2, 3)) - 0.25
            return torch.stack([-s, s], 1) * 10

    model = TopLeft().eval()
    x = torch.full((2, 1, 8, 8), 0.5)
    anchors = xk.rules.Anchors(model, features="grid:2", baseline=0.0, samples=32, max_samples=512, seed=0)
    result = anchors(x)
    assert result.valid.all() and (result.target == 1).all()
    regions = anchors.regions(x, result)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = True
    assert regions.shape == (2, 8, 8) and (regions == expected).all()
    with pytest.raises(ValueError, match="give the x"):
        anchors.regions(x[:1], result)


class ThreeSum(nn.Module):
    """Class 1 iff x0 + x1 + x2 > 1.5 (soft); x3 … x5 ignored."""

    def forward(self, x):
        s = (x[:, 0] + x[:, 1] + x[:, 2] - 1.5) * 6
        return torch.stack([-s, s], 1)


def test_evaluations_are_counted_and_fewer_than_the_anytime_rate_and_the_previous_search():
    g = torch.Generator().manual_seed(0)
    data = torch.rand(400, 6, generator=g, dtype=torch.float64)
    rows = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.5, 0.5], [0.1, 0.2, 0.3, 0.9, 0.1, 0.4]], dtype=torch.float64)
    model = ThreeSum().double().eval()
    seen = []

    def counting(z):
        seen.append(z.shape[0])
        return model(z)

    union = Anchors(counting, data=data, seed=0)
    result = union(rows)
    assert sum(seen) == result.info["evaluations"] + rows.shape[0]  # + the forward that reads the targets
    assert len(seen) >= result.info["rounds"] + 1 and result.info["rounds"] > 0
    anytime = Anchors(model, data=data, seed=0, exploration="kl-lucb")(rows)
    assert result.valid.all() and anytime.valid.all()
    assert result.info["evaluations"] < anytime.info["evaluations"]
    # the search before the fresh-draw verification and the union rate (commit 4e6e907: samples=128, the
    # anytime rate, every ambiguous arm pulled) spent 9,856 evaluations on this seeded case
    assert result.info["evaluations"] < 9856
    held_out = union.precision(rows, result, samples=4000, seed=5)
    assert bool((held_out >= TAU).all()), held_out
    with pytest.raises(ValueError, match="exploration"):
        Anchors(model, exploration="fast")


def drive(steps, precision, g):
    """Run a verification generator, answering each pull with Bernoulli(precision) hits per rule."""
    try:
        rules, n = next(steps)
        while True:
            hits = (torch.rand(rules.shape[0], n, generator=g, dtype=torch.float64) < precision).sum(1).double()
            rules, n = steps.send(hits)
    except StopIteration as stop:
        return stop.value


def test_verification_accepts_a_rule_below_tau_with_probability_at_most_delta_and_a_good_one_mostly():
    anchors = Anchors(CellModel(), threshold=TAU, delta=0.1, samples=32, max_samples=4096, beam_size=2)
    looks = anchors._looks()
    assert looks == 1 + 7  # 32, 64, …, 4096
    level = anchors._verification_level(5)
    assert level == pytest.approx(np.log((1 + 2 * 5) * looks / 0.1))
    g = torch.Generator().manual_seed(0)
    rule, cover = torch.ones(1, 5, dtype=torch.bool), torch.ones(1, dtype=torch.float64)
    wrong = good = 0
    runs = 200
    for _ in range(runs):
        _, lower, draws = drive(anchors._verify_steps(rule, cover, level), TAU - 0.01, g)
        wrong += bool(lower[0] >= TAU)
        _, lower, draws = drive(anchors._verify_steps(rule, cover, level), 0.99, g)
        good += bool(lower[0] >= TAU)
        assert draws[0] <= 4096
    assert wrong <= 0.1 * runs / 2  # δ = 0.1, and the level is a union over 11 rules and 8 looks
    assert good >= 0.9 * runs


def test_table_samples_satisfy_their_rule_and_keep_the_data_rows_elsewhere():
    from xaikit.rules.spaces import TableSpace

    g = torch.Generator().manual_seed(0)
    data = torch.rand(200, 5, generator=g, dtype=torch.float64)
    anchors = Anchors(CellModel(), data=data)
    space = TableSpace(data[0], anchors.data_, anchors.edges, anchors.columns)
    rules = torch.rand(6, space.count, generator=g) < 0.4
    rules[0] = False
    z = space.sample(rules, 300, g).view(6, 300, 5)
    for k in range(6):
        assert bool(space.holds(z[k])[:, rules[k]].all())
        free = sorted(set(range(5)) - {space.feature[p] for p in rules[k].nonzero().flatten().tolist()})
        # the unconstrained columns of every sample are those of one data row
        match = (z[k][:, None, free] == data[None, :, free]).all(2).any(1)
        assert bool(match.all())
        assert bool(torch.isin(z[k], data).all())  # every value is a value of the data
