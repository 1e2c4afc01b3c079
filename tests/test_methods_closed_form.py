"""Closed-form answers: linear models, brute-force Shapley values, efficiency and completeness."""
import itertools
import math

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.methods.machinery.baselines import resolve_baseline


class Interacting(nn.Module):
    """A random non-linear function of 8 features with pairwise and higher-order interactions."""

    def __init__(self, d: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(d, generator=g), requires_grad=False)
        self.pairs = nn.Parameter(torch.randn(d, d, generator=g) / d, requires_grad=False)
        self.hidden = nn.Linear(d, 6)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.randn(6, d, generator=g))
            self.hidden.bias.copy_(torch.randn(6, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.a + ((x @ self.pairs) * x).sum(1) + torch.tanh(self.hidden(x)).prod(1) + torch.sin(x[:, 0] * x[:, 3])
        return torch.stack([y, -0.5 * y + x[:, 1]], 1)


def brute_force_shapley(f, x, baselines, groups):
    """φ_j = Σ_S |S|!(d-|S|-1)!/d! (v(S ∪ j) - v(S)), v(S) = mean_b f(x_S, b_rest), straight from the definition."""
    d = len(groups)

    def v(coalition):
        values = []
        for b in baselines:
            z = b.clone()
            for j in coalition:
                z[groups[j]] = x[groups[j]]
            values.append(f(z[None])[0])
        return torch.stack(values).double().mean()

    phi = torch.zeros(d, dtype=torch.float64)
    for j in range(d):
        others = [k for k in range(d) if k != j]
        for size in range(d):
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            for coalition in itertools.combinations(others, size):
                phi[j] += weight * (v(coalition + (j,)) - v(coalition))
    return phi


@pytest.fixture
def linear():
    torch.manual_seed(1)
    model = nn.Linear(8, 3).eval()
    x = torch.randn(4, 8)
    baseline = torch.randn(8)
    expected = (model.weight[2] * (x - baseline)).detach()  # gradient × (x - baseline) for target 2
    return model, x, baseline, expected


def test_linear_model_all_methods_agree_with_gradient_times_delta(linear):
    """IG = exact Shapley = KernelSHAP = permutation Shapley = LIME = Occlusion(window 1) = w ⊙ (x - b).

    LIME's interpretable features are binary (feature j present = x_j, absent = b_j), so on a linear model its
    surrogate is exact: the coefficient of feature j is w_j (x_j - b_j), i.e. the linear coefficient times
    (x - baseline). The fit is exact for ANY kernel once the ridge penalty is 0 (the weighted least-squares
    problem has a zero-residual solution), which is the setting tested here.
    """
    model, x, baseline, expected = linear
    methods = [
        xk.IntegratedGradients(model, baseline=baseline, steps=4),
        xk.ExactShapley(model, baseline=baseline),
        xk.KernelSHAP(model, baseline=baseline, samples=64, seed=0),
        xk.KernelSHAP(model, baseline=baseline, samples=64, paired=False, seed=0),
        xk.PermutationShapley(model, baseline=baseline, permutations=2, seed=0),
        xk.LIME(model, baseline=baseline, samples=64, ridge=0.0, seed=0),
        xk.LIME(model, baseline=baseline, samples=64, ridge=0.0, kernel="euclidean", seed=0),
        xk.Occlusion(model, baseline=baseline, window=1),
    ]
    for method in methods:
        expl = method(x, target=2)
        torch.testing.assert_close(expl.attribution, expected, atol=1e-5, rtol=1e-5, msg=method.name)
        assert expl.target.tolist() == [2] * 4


def test_lime_ridge_shrinks_and_reports_fit(linear):
    model, x, baseline, expected = linear
    expl = xk.LIME(model, baseline=baseline, samples=64, ridge=10.0, seed=0)(x, target=2)
    assert (expl.attribution.abs().sum(1) < expected.abs().sum(1)).all()  # ridge shrinks the coefficients
    exact = xk.LIME(model, baseline=baseline, samples=64, ridge=0.0, seed=0)(x, target=2)
    torch.testing.assert_close(exact.info["score"], torch.ones(4, dtype=torch.float64))  # R² = 1: exact fit
    intercept = model(baseline[None])[0, 2].detach().double().expand(4)  # g(0) = f(baseline)
    torch.testing.assert_close(exact.info["intercept"], intercept, atol=1e-5, rtol=1e-5)


def test_exact_shapley_equals_brute_force_on_nonlinear_function():
    model = Interacting().eval()
    x = torch.randn(2, 8)
    baseline = torch.randn(8)
    expl = xk.ExactShapley(model, baseline=baseline)(x, target=0)
    for i in range(2):
        phi = brute_force_shapley(lambda z: model(z)[:, 0], x[i], [baseline], [[j] for j in range(8)])
        torch.testing.assert_close(expl.info["feature_attribution"][i].double(), phi, atol=2e-5, rtol=1e-5)


def test_exact_shapley_with_background_and_grouped_features():
    model = Interacting(seed=3).eval()
    x = torch.randn(1, 8)
    background = torch.randn(3, 8)
    mask = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1])  # 4 groups of columns
    expl = xk.ExactShapley(model, features=mask, background=background)(x, target=1)
    groups = [[j for j in range(8) if mask[j] == g] for g in range(4)]
    phi = brute_force_shapley(lambda z: model(z)[:, 1], x[0], list(background), groups)
    torch.testing.assert_close(expl.info["feature_attribution"][0].double(), phi, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(expl.attribution[0], phi.float()[mask])  # each column gets its group's value
    empty = model(background)[:, 1].double().mean()
    torch.testing.assert_close(expl.info["value_empty"][0], empty, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "kernel", "kernel_unpaired", "permutation", "permutation_plain"])
def test_shapley_efficiency(method):
    model = Interacting(seed=5).eval()
    x = torch.randn(3, 8)
    make = {
        "exact": lambda: xk.ExactShapley(model),
        "kernel": lambda: xk.KernelSHAP(model, samples=40, seed=1),
        "kernel_unpaired": lambda: xk.KernelSHAP(model, samples=40, paired=False, seed=1),
        "permutation": lambda: xk.PermutationShapley(model, permutations=4, seed=1),
        "permutation_plain": lambda: xk.PermutationShapley(model, permutations=3, antithetic=False, seed=1),
    }[method]
    expl = make()(x, target=0)
    gap = (model(x)[:, 0] - model(torch.zeros(1, 8))[:, 0]).detach().double()
    total = expl.info["feature_attribution"].double().sum(1)
    torch.testing.assert_close(total, gap, atol=1e-5, rtol=1e-5)
    assert expl.info["convergence_delta"].abs().max() < 1e-5
    torch.testing.assert_close(expl.attribution.sum(1).double(), gap, atol=1e-5, rtol=1e-5)  # one column per feature


def test_integrated_gradients_quadrature_rules_closed_form():
    """f(x) = (w·x)², baseline 0: IG = 2 (w·x) (w ⊙ x) ∫ α dα; each rule's ∫ α dα is known in closed form."""
    w = torch.randn(6)

    class Square(nn.Module):
        def forward(self, x):
            return ((x @ w) ** 2)[:, None]

    x = torch.randn(3, 6)
    base = 2 * (x @ w)[:, None] * w * x  # IG × (1 / ∫α dα) = IG × 2
    m = 5
    integral = {"riemann_left": (m - 1) / (2 * m), "riemann_right": (m + 1) / (2 * m), "riemann_middle": 0.5,
                "riemann_trapezoid": 0.5, "gauss_legendre": 0.5}
    for rule, value in integral.items():
        expl = xk.IntegratedGradients(Square().eval(), steps=m, rule=rule)(x, target=0)
        torch.testing.assert_close(expl.attribution, base * value, atol=1e-5, rtol=1e-5, msg=rule)
        exact_gap = (x @ w) ** 2
        torch.testing.assert_close(expl.info["convergence_delta"], exact_gap * (2 * value - 1), atol=1e-4, rtol=1e-4)


def test_integrated_gradients_gauss_legendre_exact_on_cubic_and_completeness():
    """Along the path a cubic f gives a quadratic integrand: 2-point Gauss-Legendre is exact, midpoint is not."""
    # float64: the identity below is checked to rounding, and the outputs (~10) make float32 rounding 1e-5
    w = torch.randn(5, dtype=torch.float64)

    class Cube(nn.Module):
        def forward(self, x):
            return ((x @ w) ** 3 + x.sum(1))[:, None]

    x, b = torch.randn(2, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    gl = xk.IntegratedGradients(Cube().eval(), steps=2, rule="gauss_legendre", baseline=b)(x, target=0)
    assert gl.info["convergence_delta"].abs().max() < 1e-4
    mid = xk.IntegratedGradients(Cube().eval(), steps=2, rule="riemann_middle", baseline=b)(x, target=0)
    assert mid.info["convergence_delta"].abs().min() > 1e-3
    # the reported delta is exactly Σ IG - (f(x) - f(b))
    gap = (Cube().eval()(x) - Cube().eval()(b[None]))[:, 0]
    torch.testing.assert_close(mid.info["convergence_delta"], mid.attribution.sum(1) - gap)


def test_integrated_gradients_baselines():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 64, 2)).eval()
    x = torch.randn(2, 3, 8, 8)
    for baseline in (0.5, "zero", "mean", "blur", "blur:2", torch.zeros(3, 1, 1)):
        expl = xk.IntegratedGradients(model, steps=64, baseline=baseline)(x, target=1)
        assert expl.info["convergence_delta"].abs().max() < 1e-3 * expl.attribution.abs().sum()
    mean = resolve_baseline("mean", x)
    torch.testing.assert_close(mean[:, :, 0, 0], x.mean((2, 3)))
    blurred = resolve_baseline("blur:1", x)
    assert blurred.std() < x.std()
    torch.testing.assert_close(blurred.mean((2, 3)), x.mean((2, 3)), atol=0.15, rtol=0)  # blur keeps the mean roughly


def test_contrast_target_is_difference_for_methods_linear_in_the_score():
    model = Interacting(seed=2).eval()
    x = torch.randn(2, 8)
    for method in (xk.Occlusion(model), xk.ExactShapley(model), xk.IntegratedGradients(model, steps=8)):
        a, b = method(x, target=0).attribution, method(x, target=1).attribution
        c = method(x, target=xk.Contrast(0, 1)).attribution
        torch.testing.assert_close(c, a - b, atol=1e-5, rtol=1e-5)
        d = method(x, target=lambda out: out[:, 0] - out[:, 1]).attribution
        torch.testing.assert_close(d, a - b, atol=1e-5, rtol=1e-5)
