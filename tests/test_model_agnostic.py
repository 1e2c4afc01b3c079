"""Model-agnostic methods and metrics on plain functions and NumPy models; clear errors on bad models/outputs."""
import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk


def tiny_mlp(d=5, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes)).eval()


X = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))

AGNOSTIC = {
    "exact_shapley": lambda m: xk.ExactShapley(m),
    # the estimator named: "auto" chooses by the measured time, once per model object, and the function and the
    # module below are two objects that could choose differently near the threshold
    "kernel_shap": lambda m: xk.KernelSHAP(m, samples=12, seed=0, estimator="plain"),
    "permutation_shapley": lambda m: xk.PermutationShapley(m, permutations=4, seed=0, estimator="plain"),
    "occlusion": lambda m: xk.Occlusion(m),
    "lime": lambda m: xk.LIME(m, samples=40, seed=0),
    "rise": lambda m: xk.RISE(m, masks=32, grid=2, seed=0),
}


class Softmaxed(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), -1)


@pytest.mark.parametrize("name", sorted(AGNOSTIC))
def test_a_plain_function_gives_what_the_same_module_gives(name):
    model = tiny_mlp()
    function = lambda x: torch.softmax(model(x), -1)  # noqa: E731 - not an nn.Module
    got = AGNOSTIC[name](function)(X, target=1)
    want = AGNOSTIC[name](Softmaxed(model).eval())(X, target=1)
    torch.testing.assert_close(got.attribution, want.attribution)
    assert repr(AGNOSTIC[name](function)).endswith("(function)")


def test_numpy_model_wraps_sklearn_predict_proba_with_dtype_and_exact_shapley():
    from sklearn.linear_model import LogisticRegression

    g = np.random.default_rng(0)
    data = g.normal(size=(60, 5))
    clf = LogisticRegression().fit(data, (data[:, 0] + data[:, 1] > 0).astype(int))
    wrapped = xk.NumpyModel(clf.predict_proba)
    out = wrapped(X)
    assert out.dtype == torch.float32 and out.shape == (4, 2)  # float64 from sklearn, back in x's dtype
    weight = torch.tensor(clf.coef_[0], dtype=torch.float32)
    bias = float(clf.intercept_[0])
    same = lambda x: torch.stack([1 - torch.sigmoid(x @ weight + bias), torch.sigmoid(x @ weight + bias)], 1)  # noqa: E731
    got = xk.ExactShapley(wrapped)(X, target=1)
    torch.testing.assert_close(got.attribution, xk.ExactShapley(same)(X, target=1).attribution, atol=1e-5, rtol=1e-4)
    assert got.info["convergence_delta"].abs().max() < 1e-5
    with pytest.raises(TypeError, match="real-valued scores"):  # class labels cannot be explained
        xk.KernelSHAP(xk.NumpyModel(clf.predict), samples=20)(X)
    with pytest.raises(TypeError, match="fn must be a callable"):
        xk.NumpyModel("predict_proba")
    pytest.importorskip("pandas")
    seen = []
    framed = xk.NumpyModel(lambda frame: seen.append(list(frame.columns)) or frame.to_numpy().sum(1), dtype="float64",
                           feature_names=list("abcde"))
    assert framed(X).dtype == torch.float32 and seen == [list("abcde")]
    with pytest.raises(ValueError, match="feature_names has 5 names"):
        framed(torch.zeros(2, 3))


@pytest.mark.parametrize("make", [xk.Gradient, xk.IntegratedGradients, xk.LRP, xk.GuidedBackprop,
                                  lambda m: xk.GradCAM(m, layer="0"), xk.MeaningfulPerturbation])
def test_gradient_and_propagation_methods_require_a_module_and_say_why(make):
    with pytest.raises(TypeError, match="must be a torch.nn.Module because .* model-agnostic methods"):
        make(lambda x: x)


def test_bad_model_outputs_get_clear_errors():
    model = tiny_mlp()
    with pytest.raises(TypeError, match="NumpyModel"):
        xk.Occlusion(lambda x: model(x).detach().numpy())(X)
    with pytest.raises(ValueError, match="one row of scores per input"):
        xk.KernelSHAP(lambda x: model(x)[:1], samples=12)(X)
    with pytest.raises(ValueError, match="one row of scores per input"):  # only the perturbed batches are wrong
        xk.ExactShapley(lambda x: model(x) if x.shape[0] == X.shape[0] else model(x)[1:])(X)
    with pytest.raises(TypeError, match="torch.nn.Module or a callable"):
        xk.Occlusion(42)


def test_output_only_metrics_take_functions_and_layer_metrics_say_why_not():
    model = tiny_mlp()
    function = lambda x: torch.softmax(model(x), -1)  # noqa: E731
    attribution = xk.ExactShapley(function)(X, target=0).attribution
    for metric in (xk.metrics.FaithfulnessCorrelation(samples=10), xk.metrics.Monotonicity(softmax=False)):
        got = metric(function, X, 0, attribution)
        torch.testing.assert_close(got, metric(Softmaxed(model).eval(), X, 0, attribution))
    reexplained = xk.metrics.MaxSensitivity(samples=3)(function, X, 0, xk.Occlusion(function))
    assert torch.isfinite(reexplained).all()
    with pytest.raises(TypeError, match="randomises the model's layers"):
        xk.metrics.MPRT()(function, X, 0, xk.Occlusion(function))


def test_softmax_metrics_refuse_a_single_output_instead_of_a_perfect_score():
    model = tiny_mlp(classes=1)
    attribution = torch.randn(4, 5)
    for metric in (xk.metrics.Deletion(), xk.metrics.Insertion(baseline="zero"), xk.metrics.Monotonicity()):
        with pytest.raises(ValueError, match="softmax of a single output is always 1"):
            metric(model, X, 0, attribution)
    assert torch.isfinite(xk.metrics.Deletion(softmax=False)(model, X, 0, attribution)).all()


def test_kernel_shap_budget_checks_and_exactness_at_full_budget():
    model = tiny_mlp()
    with pytest.raises(ValueError, match=r"samples=6 is too small for 5 features.*at least 7"):
        xk.KernelSHAP(model, samples=6)(X)
    exact = xk.ExactShapley(model)(X, target=2)
    full = xk.KernelSHAP(model, samples=30, seed=3)(X, target=2)  # 2^5 - 2 = 30: every coalition
    torch.testing.assert_close(full.attribution, exact.attribution, atol=1e-5, rtol=1e-5)
    part = xk.KernelSHAP(model, samples=7, seed=3)(X, target=2)  # the smallest budget: efficiency still exact
    assert part.info["convergence_delta"].abs().max() < 1e-5
    # coalitions depend on the seed and d only: one row alone gets what it gets in the batch
    torch.testing.assert_close(xk.KernelSHAP(model, samples=9, seed=3)(X[2:3], target=2).attribution[0],
                               xk.KernelSHAP(model, samples=9, seed=3)(X, target=2).attribution[2])


def test_kernel_shap_with_per_sample_feature_counts_is_exact_at_full_budget():
    """Samples with 3, 5 and 4 features get their own designs (padded together); 30 ≥ 2^5 - 2 covers all."""
    model = tiny_mlp()
    mask = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 2, 3, 4], [0, 1, 1, 2, 3]])
    got = xk.KernelSHAP(model, features=mask, samples=30, seed=0)(X[:3], target=1)
    want = xk.ExactShapley(model, features=mask)(X[:3], target=1)
    torch.testing.assert_close(got.attribution, want.attribution, atol=1e-5, rtol=1e-5)
    assert got.info["exact_sizes"][1] == [1, 4, 2, 3]
    few = xk.KernelSHAP(model, features=mask, samples=8, seed=0)(X[:3], target=1)
    assert few.info["convergence_delta"].abs().max() < 1e-5
