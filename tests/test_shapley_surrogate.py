"""The network surrogate of the Shapley estimators (regression-adjusted Monte Carlo)."""
import itertools
import math

import pytest
import torch

import xaikit as xk
from xaikit.methods.machinery.kernel_design import coalitions, kernel_design
from xaikit.methods.machinery.shapley_surrogate import additive, feature_deviation, feature_scale, fit_surrogate
from xaikit.methods.machinery.features import resolve_features


def brute_force_shapley(game, d):
    """Shapley values from the definition: the mean marginal contribution over all d! orders."""
    phi = torch.zeros(d, dtype=torch.float64)
    for order in itertools.permutations(range(d)):
        z = torch.zeros(d, dtype=torch.bool)
        before = game(z.clone())
        for j in order:
            z[j] = True
            after = game(z.clone())
            phi[j] += after - before
            before = after
    return phi / math.factorial(d)


def small_fit(d=5, games=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = coalitions(torch.arange(2**d), d)
    values = torch.randn((games, 2**d), generator=generator, dtype=torch.float64)
    scale = torch.rand((games, d), generator=generator, dtype=torch.float64) + 0.5
    return z, values, scale


def test_surrogate_shapley_is_exact_for_few_features():
    z, values, scale = small_fit()
    surrogate = fit_surrogate(z, values, scale, seed=1)
    phi = surrogate.shapley(seed=0)
    for b in range(values.shape[0]):
        expected = brute_force_shapley(lambda c: surrogate(c[None])[b, 0], 5)
        torch.testing.assert_close(phi[b], expected, atol=1e-10, rtol=1e-10)


def test_surrogate_shapley_estimate_above_sixteen_features_is_close():
    """d = 18 > 16: estimated from 2^16 coalitions of the network; compared with all 2^18."""
    d = 18
    generator = torch.Generator().manual_seed(0)
    z = kernel_design(d, 512, True, generator).z
    mixing = torch.randn((d, 2), generator=generator, dtype=torch.float64)
    values = torch.tanh(z.double() @ mixing).T.prod(0, keepdim=True)
    surrogate = fit_surrogate(z, values, torch.ones((1, d), dtype=torch.float64), seed=0)
    everything = coalitions(torch.arange(2**d), d)
    from xaikit.methods.machinery.kernel_design import shapley_weights

    exact = surrogate(everything) @ shapley_weights(everything)
    estimate = surrogate.shapley(seed=3)
    assert float((estimate - exact).norm() / exact.norm()) < 0.02


def test_fitting_a_game_does_not_depend_on_the_other_games_in_the_batch():
    z, values, scale = small_fit(games=4)
    together = fit_surrogate(z, values, scale, seed=2)
    alone = fit_surrogate(z, values[2:3], scale[2:3], seed=2)
    torch.testing.assert_close(together(z)[2:3], alone(z), atol=1e-8, rtol=1e-8)


def test_surrogate_follows_the_game_it_was_fitted_to():
    z, _, scale = small_fit()
    smooth = torch.tanh(z.double() @ torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0], dtype=torch.float64) - 0.3)
    surrogate = fit_surrogate(z, smooth[None], scale[:1], seed=0)
    assert float((surrogate(z)[0] - smooth).abs().max()) < 0.05 * float(smooth.abs().max())


def test_additive_games_are_recognised_up_to_rounding():
    z, _, _ = small_fit()
    linear = 0.3 + z.double() @ torch.tensor([1.0, -2.0, 0.5, 1.5, -1.0], dtype=torch.float64)
    rounded = linear.float().double()
    interacting = linear + 0.01 * (z[:, 0] & z[:, 1]).double()
    result = additive(z, torch.stack([linear, rounded, interacting]), torch.finfo(torch.float32).eps)
    assert result.tolist() == [True, True, False]


def test_feature_scale_follows_the_size_of_each_features_change():
    x = torch.tensor([[1.0, -2.0, 0.0, 4.0]])
    features = resolve_features(torch.tensor([[0, 0, 1, 2]]), x)
    deviation = feature_deviation(x, torch.zeros((1, 1, 4)), features)
    torch.testing.assert_close(deviation, torch.tensor([[5.0 ** 0.5, 0.0, 4.0]], dtype=torch.float64))
    scale = feature_scale(deviation)
    torch.testing.assert_close(scale.pow(2).mean(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(scale[0, 2] / scale[0, 0], torch.tensor((4.0 / 5.0 ** 0.5) ** 0.5, dtype=torch.float64))
    assert scale[0, 1] == 0
    assert feature_scale(torch.zeros((1, 3), dtype=torch.float64)).tolist() == [[1.0, 1.0, 1.0]]


@pytest.fixture(scope="module")
def wine():
    from xaikit.zoo import train_wine_mlp

    model, x_all, _ = train_wine_mlp()
    x = x_all[::20][:8]
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731 - a plain function, as a user would pass
    target = fn(x).argmax(1)
    exact = xk.ExactShapley(fn)(x, target=target).info["feature_attribution"].double()
    return fn, x, target, exact


def median_error(method, x, target, exact) -> float:
    phi = method(x, target=target).info["feature_attribution"].double()
    return float(((phi - exact).norm(dim=1) / exact.norm(dim=1)).median())


@pytest.mark.parametrize("name", ["kernel", "permutation"])
def test_the_surrogate_lowers_the_error_and_keeps_efficiency(name, wine):
    fn, x, target, exact = wine
    make = {"kernel": lambda e, s: xk.KernelSHAP(fn, samples=480, estimator=e, seed=s),
            "permutation": lambda e, s: xk.PermutationShapley(fn, permutations=40, estimator=e, seed=s)}[name]
    plain, adjusted = make("plain", 0), make("surrogate", 0)
    assert median_error(adjusted, x, target, exact) < 0.5 * median_error(plain, x, target, exact)
    expl = adjusted(x, target=target)
    assert expl.info["estimator"] == "surrogate"
    assert expl.info["convergence_delta"].abs().max() < 1e-9


def test_every_coalition_evaluated_gives_the_exact_values_with_the_surrogate_on(wine):
    fn, x, target, exact = wine
    phi = xk.KernelSHAP(fn, samples=2**13 - 2, seed=0)(x, target=target).info["feature_attribution"].double()
    torch.testing.assert_close(phi, exact, atol=1e-6, rtol=1e-5)


def test_the_surrogate_handles_several_targets_and_feature_counts_like_single_calls():
    """Batch and targets do not change the coalitions or the fit; the model's own float32 outputs differ in the
    last bits between batch sizes, and the network fit carries that on (here up to 2e-6 in absolute terms,
    1.6e-4 of an element; up to 1.3e-3 of φ on wine at 128 evaluations), so the comparison is at 1e-3 of the
    norm; the plain estimator agrees to rounding."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    x = torch.randn(3, 12)
    mask = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], list(range(12)), [0, 1, 2] * 4])  # 6, 12, 3 features
    for estimator, tolerance in (("surrogate", 1e-3), ("plain", 1e-6)):
        both = xk.KernelSHAP(model, features=mask, samples=100, estimator=estimator, seed=0).explain_targets(x, [0, 2])
        for i in range(3):
            for k, target in enumerate([0, 2]):
                alone = xk.KernelSHAP(model, features=mask[i:i + 1], samples=100, estimator=estimator, seed=0)
                expected = alone(x[i:i + 1], target=target).info["feature_attribution"]
                got = both[k].info["feature_attribution"][i:i + 1, :expected.shape[1]]
                assert float((got - expected).norm()) <= tolerance * float(expected.norm()), (estimator, i, target)


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="estimator.*'surogate'.*did you mean 'surrogate'"):
        xk.KernelSHAP(torch.nn.Linear(3, 2), estimator="surogate")
    with pytest.raises(ValueError, match="estimator"):
        xk.PermutationShapley(torch.nn.Linear(3, 2), estimator="regression")
