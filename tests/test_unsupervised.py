"""NEON (Kauffmann et al. 2020, 2022): neuralized k-means and kernel-density outlier scores, explained."""
import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans as SKMeans  # noqa: E402
from sklearn.neighbors import KernelDensity  # noqa: E402

INFORMATIVE = [0, 1, 2]


@pytest.fixture(scope="module")
def clusters():
    """Three clusters that differ only in dimensions 0-2 of 10 (the others: the same noise)."""
    rng = np.random.default_rng(0)
    centers = np.zeros((3, 10))
    centers[:, INFORMATIVE] = rng.normal(0, 4, (3, 3))
    x = np.concatenate([c + rng.normal(0, 1, (100, 10)) for c in centers])
    return x, SKMeans(3, n_init=4, random_state=0).fit(x)


def test_neuralized_kmeans_reproduces_the_assignments_and_conserves(clusters):
    x, fitted = clusters
    tool = xk.unsupervised.KMeans(fitted)
    assert np.array_equal(tool.predict(torch.tensor(x)).numpy(), fitted.predict(x))
    expl = tool(torch.tensor(x))
    assert np.array_equal(expl.target.numpy(), fitted.predict(x))
    assert expl.info["conservation_gap"].abs().max() < 1e-10  # Σ_i R_i = f_c(x)
    assert (expl.info["evidence"] > 0).all()  # every sample's own cluster has positive evidence
    positive = expl.attribution.clamp_min(0)
    share = positive[:, INFORMATIVE].sum() / positive.sum()
    print(f"\nNEON k-means: {share:.1%} of the positive relevance in the 3 informative of 10 dimensions")
    assert share >= 0.9


def test_neon_ranks_dimensions_like_exact_shapley_values(capsys):
    """On 5-dimensional inputs, NEON's ranking of the dimensions agrees with the exact Shapley values of the
    assignment score f_c (baseline: the data mean)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2, (3, 5))
    x = np.concatenate([c + rng.normal(0, 1, (50, 5)) for c in centers])
    tool = xk.unsupervised.KMeans(SKMeans(3, n_init=4, random_state=0).fit(x))
    queries = torch.tensor(x[::5])
    expl = tool(queries)
    exact = xk.ExactShapley(tool.network, baseline=torch.tensor(x.mean(0)))(queries, expl.target)
    rho = np.mean([spearmanr(a, b).correlation for a, b in zip(expl.attribution.numpy(), exact.attribution.numpy())])
    with capsys.disabled():
        print(f"\nNEON vs exact Shapley of f_c: mean Spearman {rho:.2f} over {len(queries)} samples")
    assert rho >= 0.8


def test_deep_clustering_is_explained_down_to_the_input(clusters):
    x, _ = clusters
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8, bias=False), nn.ReLU(), nn.Linear(8, 4, bias=False)).double().eval()
    inputs = torch.tensor(x[::15])
    with torch.no_grad():
        features = net(torch.tensor(x))
    fitted = SKMeans(3, n_init=4, random_state=0).fit(features.numpy())
    before = snapshot(net)
    tool = xk.unsupervised.KMeans(fitted, features=net, method="lrp:composite=zero")
    expl = tool(inputs)
    assert np.array_equal(expl.target.numpy(), fitted.predict(net(inputs).detach().numpy()))
    # LRP-0 without biases conserves: the input relevance sums to the features' NEON relevance, i.e. f_c
    torch.testing.assert_close(expl.attribution.sum(1), expl.info["evidence"], atol=1e-9, rtol=1e-9)
    assert expl.attribution.shape == inputs.shape
    assert_unchanged(net, before)


def test_kernel_density_outlier_score():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (200, 4))
    kde = KernelDensity(bandwidth=0.8).fit(data)
    queries = np.concatenate([rng.normal(0, 1, (5, 4)), [[0, 0, 6, 0]]])  # the last: an outlier in dim 2
    expl = xk.unsupervised.OutlierScore(kde)(torch.tensor(queries))
    gamma = 1 / (2 * 0.8 ** 2)
    # o(x) = -log p(x) / γ up to the kernel's normalising constant (the same for every x)
    offset = expl.info["score"].numpy() + kde.score_samples(queries) / gamma
    assert np.ptp(offset) < 1e-6  # scikit-learn's tree sums the kernels in its own order
    assert expl.info["conservation_gap"].abs().max() < 1e-10
    assert expl.attribution[-1].argmax() == 2 and expl.attribution[-1, 2] > 0.5 * expl.attribution[-1].sum()


def test_unfitted_estimators_are_named():
    with pytest.raises(ValueError, match="estimator: the KMeans is not fitted"):
        xk.unsupervised.KMeans(SKMeans(3))
    with pytest.raises(ValueError, match="estimator: the KernelDensity is not fitted"):
        xk.unsupervised.OutlierScore(KernelDensity())
    with pytest.raises(TypeError, match="did you mean 'beta'"):
        xk.unsupervised.KMeans(torch.eye(3), betta=1.0)
