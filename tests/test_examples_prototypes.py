"""Prototypes with known answers (clusters at known centres), the outlier score, concept-relevance vectors."""
from __future__ import annotations

import pytest
import torch

import xaikit as xk
from examples_helpers import shapes_case
from models import vgg_like
from xaikit.examples import FeatureIndex, Prototypes, channel_relevance, kmedoids

CENTRES = torch.tensor([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 10.0], [10.0, 10.0]], [[20.0, 0.0], [20.0, 10.0]]])


def _blobs(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three classes, each two tight clusters around known centres: vectors, labels and which centre."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.arange(n) % 3
    which = (torch.arange(n) // 3) % 2
    x = CENTRES[cls, which] + 0.3 * torch.randn(n, 2, generator=g)
    return x, cls, which


@pytest.mark.parametrize("clustering", ["kmeans", "kmedoids"])
def test_prototypes_find_the_known_centres(clustering):
    x, y, which = _blobs()
    protos = Prototypes(per_class=2, clustering=clustering, samples=4, seed=0).fit(x, y)
    p = protos.prototypes
    assert p.classes.tolist() == [0, 0, 1, 1, 2, 2]
    for c in range(3):
        found = p.centres[p.classes == c]
        # each true centre has a prototype near it: a mean within 0.3 (noise 0.3 per coordinate, 10 samples), a
        # medoid (a sample) within 0.6
        assert torch.cdist(CENTRES[c], found).amin(1).max() < (0.3 if clustering == "kmeans" else 0.6)
    if clustering == "kmedoids":  # medoids are real samples
        assert (p.centres[:, None] == x[None]).all(-1).any(1).all()
    # the closest real samples belong to the prototype's class and cluster
    assert (y[p.closest] == p.classes[:, None]).all()
    nearest_centre = torch.cdist(p.centres, CENTRES.reshape(-1, 2)).argmin(1)
    assert (which[p.closest] == (nearest_centre % 2)[:, None]).all()
    assert p.size.sum() == len(x) and (p.size == 10).all()


def test_kmedoids_minimises_the_summed_distance_on_a_line():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0], [13.0]])
    medoids = sorted(x[kmedoids(x, 2, seed=0)].flatten().tolist())
    assert medoids[0] == 1.0 and medoids[1] in (11.0, 12.0)


def test_outlier_score_separates_shifted_samples():
    x, y, _ = _blobs()
    protos = Prototypes(per_class=2, seed=0).fit(x, y)
    fresh, fresh_y, _ = _blobs(30, seed=1)
    shifted = fresh + torch.tensor([3.0, 3.0])
    inside, inside_pct = protos.outlier_score(fresh, fresh_y)
    outside, outside_pct = protos.outlier_score(shifted, fresh_y)
    assert outside.min() > inside.max()
    assert (outside_pct == 1).all() and 0.2 < inside_pct.median() < 0.8
    with pytest.raises(ValueError, match="no prototypes"):
        protos.outlier_score(fresh[:2], torch.tensor([0, 7]))


def test_prototypes_on_shapes_features_and_concept_relevances():
    model, train, test = shapes_case()
    index = FeatureIndex(model).fit(train)
    protos = Prototypes(per_class=2).fit(index.vectors, index.labels)
    assert (train.y[protos.prototypes.closest] == protos.prototypes.classes[:, None]).all()
    clean, _ = protos.outlier_score(index.represent(test.x[:32]), test.y[:32])
    noisy, _ = protos.outlier_score(index.represent((test.x[:32] + torch.randn(32, 3, 32, 32,
                                    generator=torch.Generator().manual_seed(0))).clamp(-1, 1)), test.y[:32])
    assert noisy.median() > clean.median()
    relevance = channel_relevance(model, train.x[:64], "features.9", target=train.y[:64])
    assert relevance.shape == (64, 16) and torch.allclose(relevance.abs().sum(1), torch.ones(64))
    Prototypes(per_class=2, metric="cosine").fit(relevance, train.y[:64])


def test_channel_relevance_conserves_on_a_bias_free_net():
    torch.manual_seed(2)
    model = vgg_like(bias=False).eval()
    x = torch.rand(3, 3, 16, 16)
    relevance = channel_relevance(model, x, "4", normalise=False, method="lrp:composite=zero", batch_size=2)
    logit = model(x).max(1).values
    assert relevance.shape == (3, 8) and torch.allclose(relevance.sum(1), logit, rtol=1e-4)
    expl = xk.LRP(model, "zero")(x)
    assert torch.allclose(expl.attribution.flatten(1).sum(1), relevance.sum(1), rtol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown clustering"):
        Prototypes(clustering="gmm")
    with pytest.raises(ValueError, match="per_class must be"):
        Prototypes(per_class=0)
    with pytest.raises(ValueError, match="empty"):
        Prototypes().fit(torch.zeros(0, 2), torch.zeros(0))
    with pytest.raises(ValueError, match="labels has 3 entries"):
        Prototypes().fit(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="call fit"):
        Prototypes().outlier_score(torch.zeros(1, 2), torch.zeros(1))
