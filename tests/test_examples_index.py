"""Explanation by example: the feature index (exact k-NN), its cache, the BiLRP similarity heatmaps, bad input."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import xaikit as xk
from examples_helpers import shapes_case, snapshot, unchanged
from models import vgg_like
from xaikit.examples import FeatureIndex, LayerFeatures
from xaikit.examples.search import pairwise, topk


def test_neighbours_share_the_class_on_shapes():
    model, train, test = shapes_case()
    before = snapshot(model)
    index = FeatureIndex(model).fit(train)                     # default: the input of the head (last layer)
    assert index.features.label == "input of head"
    neighbours = index.neighbours(test.x, k=5)
    share = neighbours.agreement(test.y).mean().item()
    assert share >= 0.95, share
    assert unchanged(model, before)
    assert torch.equal(neighbours.label, train.y[neighbours.index])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_exact_top_k_equals_brute_force(metric):
    g = torch.Generator().manual_seed(3)
    vectors, queries = torch.randn(1000, 12, generator=g), torch.randn(7, 12, generator=g)
    index = FeatureIndex.from_vectors(vectors, metric=metric)
    xk.set_memory_budget(7 * 4 * 8 * 37)                       # forces chunks of 37 candidates
    try:
        found = index.search(queries, k=9)
    finally:
        xk.set_memory_budget(None)
    if metric == "cosine":
        full = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(vectors, dim=1).T
        values, expected = full.topk(9, dim=1)
        assert torch.allclose(found.similarity, values, atol=1e-6)
    elif metric == "euclidean":
        full = torch.cdist(queries, vectors)
        values, expected = full.topk(9, dim=1, largest=False)
        assert torch.allclose(found.distance, values, atol=1e-4)
    else:
        values, expected = (queries @ vectors.T).topk(9, dim=1)
        assert torch.allclose(found.similarity, values, atol=1e-5)
    assert torch.equal(found.index, expected)


def test_topk_merges_chunks_exactly_and_breaks_ties_by_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0, 5.0]])
    values, index = topk(lambda a, b: scores[:, a:b], 7, 4, chunk=2)
    assert index.tolist() == [[6, 1, 2, 4]] and values.tolist() == [[5.0, 3.0, 3.0, 3.0]]
    values, index = topk(lambda a, b: scores[:, a:b], 7, 2, largest=False, chunk=3)
    assert index.tolist() == [[3, 0]]


def test_pairwise_euclidean_is_minus_squared_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    assert torch.allclose(pairwise(a, b, "euclidean"), -torch.cdist(a, b) ** 2, atol=1e-5)


def test_streamed_loader_equals_tensor_and_reads_samples_back():
    model, train, test = shapes_case()
    data = train[:100]
    from_tensor = FeatureIndex(model, layer="pool").fit((data.x, data.y))
    loader = DataLoader(TensorDataset(data.x, data.y), batch_size=32, shuffle=False)
    streamed = FeatureIndex(model, layer="pool", batch_size=7).fit(loader)
    assert torch.allclose(from_tensor.vectors, streamed.vectors, atol=1e-6)
    assert torch.equal(from_tensor.labels, streamed.labels)
    nb = streamed.neighbours(test.x[:3], k=2)
    assert torch.equal(streamed.samples(nb.index), data.x[nb.index])
    generated = FeatureIndex(model, layer="pool").fit(((data.x[i:i + 10], data.y[i:i + 10]) for i in range(0, 100, 10)))
    assert torch.allclose(generated.vectors, from_tensor.vectors, atol=1e-6)
    with pytest.raises(TypeError, match="without random access"):
        generated.samples(nb.index)
    with pytest.raises(ValueError, match="read only once"):
        FeatureIndex(model).fit((data.x[i:i + 10] for i in range(0, 100, 10)), cache="unused.pt")
    with pytest.raises(ValueError, match="shuffle"):
        FeatureIndex(model).fit(DataLoader(TensorDataset(data.x, data.y), batch_size=8, shuffle=True))


def test_cache_is_written_reused_and_replaced_when_stale(tmp_path, monkeypatch):
    model, train, _ = shapes_case()
    data, path = train[:64], tmp_path / "index.pt"
    first = FeatureIndex(model, layer="pool").fit(data, cache=path)
    assert path.exists()
    calls = []
    original = FeatureIndex._compute
    monkeypatch.setattr(FeatureIndex, "_compute", lambda self: calls.append(1) or original(self))
    again = FeatureIndex(model, layer="pool").fit(data, cache=path)
    assert not calls and torch.equal(first.vectors, again.vectors) and again.input_shape == first.input_shape
    with pytest.warns(UserWarning, match="rebuilding"):
        other = FeatureIndex(model, layer="features.6").fit(data, cache=path)    # another layer: rebuilt
    assert calls and other.vectors.shape == first.vectors.shape
    with pytest.warns(UserWarning, match="rebuilding"):
        FeatureIndex(model, layer="pool").fit(train[64:128], cache=path)          # other data: rebuilt


def test_cache_keys_on_every_value_of_the_data_and_on_the_buffers(tmp_path):
    """Issue 30 (2): data held in memory is keyed on every value (not only its first batch and length), the model
    on its parameters and its buffers (BatchNorm statistics change the features)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "index.pt"
    FeatureIndex(model, layer="2").fit(x, cache=path)
    late = x.clone()
    late[299] += 1                                           # beyond the first batch of 256
    with pytest.warns(UserWarning, match="rebuilding"):
        index = FeatureIndex(model, layer="2").fit(late, cache=path)
    assert torch.equal(index.vectors, FeatureIndex(model, layer="2").fit(late).vectors)
    model[1].running_mean += 1                               # a buffer, no parameter
    with pytest.warns(UserWarning, match="rebuilding"):
        index = FeatureIndex(model, layer="2").fit(late, cache=path)
    assert torch.equal(index.vectors, FeatureIndex(model, layer="2").fit(late).vectors)


def test_a_model_that_is_one_layer_is_indexed_at_its_input():
    """Issue 30 (3): the default layer of a model that is one nn.Linear is the model itself (its input)."""
    model = nn.Linear(4, 3).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    index = FeatureIndex(model).fit(x)
    assert index.features.label == "input of the model" and torch.equal(index.vectors, x)


def test_similarity_heatmaps_conserve_the_dot_product_of_a_bias_free_relu_net():
    torch.manual_seed(1)
    model = vgg_like(bias=False).eval()
    x = torch.rand(12, 3, 16, 16)
    before = snapshot(model)
    index = FeatureIndex(model, layer="9", metric="dot").fit(x)                 # the 32 ReLU features
    nb = index.neighbours(x[:2], k=3)
    maps = index.heatmaps(x[:2], nb, method="lrp:composite=zero")
    assert maps.query.shape == (2, 3, 3, 16, 16) and maps.neighbour.shape == (2, 3, 3, 16, 16)
    dots = (index.represent(x[:2])[:, None] * index.vectors[nb.index]).sum(-1)
    assert torch.allclose(maps.score, dots, rtol=1e-5)
    # LRP-0 on a bias-free ReLU network conserves: Σ of either marginal = the similarity
    assert torch.allclose(maps.query.flatten(2).sum(2), maps.score, rtol=1e-3)
    assert torch.allclose(maps.neighbour.flatten(2).sum(2), maps.score, rtol=1e-3)
    assert nb.index[:, 0].tolist() != [] and unchanged(model, before)


def test_similarity_heatmaps_of_cosine_equal_the_pairwise_bilrp_marginals():
    model, train, test = shapes_case()
    index = FeatureIndex(model).fit(train[:64])
    nb = index.neighbours(test.x[:1], k=2)
    maps = index.heatmaps(test.x[:1], nb, method="lrp:composite=epsilon")
    phi = index.represent(test.x[:1])
    cos = torch.nn.functional.cosine_similarity(phi, index.vectors[nb.index[0]])
    assert torch.allclose(maps.score[0], cos, atol=1e-5)
    # the pairwise matrix R_ab = Σ_m R_m(q)_a R_m(n)_b / (‖φq‖‖φn‖), summed over b, is the query map
    bilrp = xk.BiLRP(index.features, method="lrp:composite=epsilon", similarity="cosine")
    _, r_q = bilrp.first_order(test.x[:1], {})
    phi_n, r_n = bilrp.first_order(index.samples(nb.index[0]), {})
    pair = torch.einsum("ea,keb->kab", r_q[0], r_n) / (phi.norm() * phi_n.norm(dim=1))[:, None, None]
    assert torch.allclose(pair.sum(2), maps.query[0].flatten(1), atol=1e-6)
    assert torch.allclose(pair.sum(1), maps.neighbour[0].flatten(1), atol=1e-6)
    assert torch.allclose(maps.info["residual"], maps.score - maps.query.flatten(2).sum(2))  # biases, BN absorb


def test_bad_input_is_named():
    model, train, test = shapes_case()
    index = FeatureIndex(model).fit(train[:32])
    with pytest.raises(ValueError, match=r"shape \(3, 16, 16\).*\(3, 32, 32\)"):
        index.neighbours(torch.zeros(2, 3, 16, 16), k=3)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be a positive int"):
            index.neighbours(test.x[:2], k=k)
    with pytest.raises(ValueError, match="larger than the 32 samples"):
        index.neighbours(test.x[:2], k=33)
    with pytest.raises(ValueError, match="no samples"):
        FeatureIndex(model).fit(torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="empty"):
        FeatureIndex.from_vectors(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="empty; call fit"):
        FeatureIndex(model).neighbours(test.x[:1])
    with pytest.raises(ValueError, match="did you mean 'pool'"):
        FeatureIndex(model, layer="pol")
    with pytest.raises(ValueError, match="unknown metric"):
        FeatureIndex(model, metric="manhattan")
    with pytest.raises(TypeError, match="unknown setting 'k'"):
        FeatureIndex(model, k=5)
    with pytest.raises(ValueError, match=r"query vectors must be \(Q, 16\)"):
        index.search(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        index.neighbours(torch.full((1, 3, 32, 32), float("nan")))


def test_layer_features_stop_at_the_layer_and_leave_no_hook():
    model, _, test = shapes_case()
    features = LayerFeatures(model, "features.6", pool="flatten")
    out = features(test.x[:2])
    assert out.shape == (2, 16 * 16 * 16)
    assert torch.allclose(out, model.features[:7](test.x[:2]).flatten(1))
    assert all(not m._forward_hooks for m in model.modules())
    assert not features.training and features.training == model.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LayerFeatures(model)(test.x[:2]).shape == (2, 16)
    with pytest.raises(ValueError, match="not used"):
        LayerFeatures(_Unused(), "extra")(torch.zeros(1, 4))


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.extra = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)
