"""Training-data attribution: per-sample gradients, seeded projections, TRAK against its closed form on a logistic
model, influence functions' iterative iHVP against the exact one, and the model left unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit as xk
from tests.models import assert_unchanged, snapshot
from xaikit.examples.gradients import (RandomProjection, flat, per_sample_gradients, stack_states,
                                      stacked_per_sample_gradients)
from xaikit.metrics.data_attribution import margin


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double().eval()


def _data(n: int = 30, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_per_sample_gradients_equal_the_loop_of_single_sample_gradients():
    model, (x, y) = _mlp(), _data(9)
    names = [n for n, _ in model.named_parameters()]
    batched = flat(per_sample_gradients(model, dict(model.state_dict()), names, margin, x, y), names)
    for i in range(x.shape[0]):
        model.zero_grad()
        margin(model(x[i:i + 1]), y[i:i + 1]).sum().backward()
        single = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.testing.assert_close(batched[i], single, atol=1e-6, rtol=0)
    model.zero_grad(set_to_none=True)


def test_stacked_per_sample_gradients_equal_each_member_alone_with_its_own_batchnorm_statistics():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3)).double()
              .eval() for _ in range(3)]
    for m in models:  # running statistics of their own: the buffers must be vmapped with the weights
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    x, y = torch.randn(5, 2, 4, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    names = [n for n, _ in models[0].named_parameters()]
    grads, values = stacked_per_sample_gradients(models[0], stack_states([m.state_dict() for m in models]), names,
                                                 margin, x, y)
    for i, m in enumerate(models):
        alone = per_sample_gradients(m, m.state_dict(), names, margin, x, y)
        for n in names:
            torch.testing.assert_close(grads[n][i], alone[n], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(values[i], margin(m(x), y), rtol=1e-12, atol=1e-12)
    # TRAK's ensemble featurised in groups of one member (a small memory budget) or all at once: the same scores
    xd, yd = _data(12)
    ensemble = [_mlp(seed).state_dict() for seed in range(3)]
    together = xk.examples.TRAK(_mlp(), checkpoints=ensemble, projection=8).fit((xd, yd))
    xk.set_memory_budget(2 * 12 * 66 * 8)  # a quarter of it holds less than one member: groups of one
    try:
        apart = xk.examples.TRAK(_mlp(), checkpoints=ensemble, projection=8)
        assert [len(next(iter(g.values()))) for g in apart._groups(12)] == [1, 1, 1]
        apart.fit((xd, yd))
    finally:
        xk.set_memory_budget(None)
    torch.testing.assert_close(apart.scores(xd[:4], yd[:4]), together.scores(xd[:4], yd[:4]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_projection_is_reproducible_from_the_seed_and_is_a_matrix_product(kind):
    shapes = {"a": (6000,), "b": (3, 4)}  # "a" spans two generated blocks
    g = {"a": torch.randn(4, 6000, dtype=torch.float64), "b": torch.randn(4, 3, 4, dtype=torch.float64)}
    p1, p2 = RandomProjection(shapes, 16, kind, seed=3), RandomProjection(shapes, 16, kind, seed=3, cache=False)
    out = p1(g)
    torch.testing.assert_close(out, p2(g), rtol=0, atol=0)
    assert not torch.allclose(out, RandomProjection(shapes, 16, kind, seed=4)(g))
    torch.testing.assert_close(out, flat(g, ["a", "b"]) @ p1.matrix(), rtol=1e-12, atol=1e-10)
    if kind == "rademacher":
        assert torch.allclose(p1.matrix().abs(), torch.full((6012, 16), 0.25, dtype=torch.float64))


def _logistic(d: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, 1, bias=False).double().eval()


def _closed_form(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
    """TRAK of logistic regression ``f = s wᵀx`` (s = ±1): ∇f = s x, Φ = diag(s) X, Q = σ(−f):
    τ(z') = s' x'ᵀ (XᵀX)⁻¹ Xᵀ diag(s) σ(−s Xw) (Park et al. eq. 16 with the exact gradients)."""
    s, sq = 2.0 * y - 1, 2.0 * yq - 1
    q = torch.sigmoid(-s * (x @ w))
    return (sq[:, None] * xq) @ torch.linalg.inv(x.T @ x) @ (x * s[:, None]).T * q[None]


def test_trak_on_a_logistic_model_equals_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(25, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (25,), generator=g)
    xq, yq = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1])
    models = [_logistic(seed=s) for s in (0, 1)]
    expected = [_closed_form(m.weight[0].detach(), x, y, xq, yq) for m in models]
    single = xk.examples.TRAK(models[0], projection=None, batch_size=7).fit((x, y))
    torch.testing.assert_close(single.scores(xq, yq), expected[0], rtol=1e-9, atol=1e-12)
    # a square (invertible) projection cancels in φ(z)ᵀ(ΦᵀΦ)⁻¹Φᵀ: the same scores
    square = xk.examples.TRAK(models[0], projection=4, seed=5).fit((x, y))
    torch.testing.assert_close(square.scores(xq, yq), expected[0], rtol=1e-7, atol=1e-10)
    # the ensemble: mean of the members' kernels times the mean of their Q (Park et al. Algorithm 1)
    both = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=None).fit((x, y))
    qs = [torch.sigmoid(-(2.0 * y - 1) * (x @ m.weight[0].detach())) for m in models]
    kernels = [e / q[None] for e, q in zip(expected, qs)]
    torch.testing.assert_close(both.scores(xq, yq), sum(kernels) / 2 * (sum(qs) / 2)[None], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("delta", [0.3, 1.0])
def test_trak_shrinkage_equals_the_shrunk_closed_form_and_is_free_of_the_output_scale(delta):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(25, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (25,), generator=g)
    xq, yq = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.tensor([1, 0, 1])
    model = _logistic(seed=3)
    w, s, sq = model.weight[0].detach(), 2.0 * y - 1, 2.0 * yq - 1
    gram = x.T @ x  # Φ = diag(s) X: ΦᵀΦ = XᵀX, its mean eigenvalue tr/d
    shrunk = (1 - delta) * gram + (delta * gram.trace() / 4 + 0.2) * torch.eye(4, dtype=torch.float64)
    expected = (sq[:, None] * xq) @ torch.linalg.inv(shrunk) @ (x * s[:, None]).T * torch.sigmoid(-s * (x @ w))[None]
    trak = xk.examples.TRAK(model, projection=None, shrinkage=delta, regularisation=0.2).fit((x, y))
    torch.testing.assert_close(trak.scores(xq, yq), expected, rtol=1e-9, atol=1e-12)
    # δ is relative to the kernel's own scale: an output function 3× larger gives the same scores (Q = 1 for both)
    scaled = [xk.examples.TRAK(model, projection=None, shrinkage=delta, output=lambda o, t, c=c: c * margin(o, t))
              .fit((x, y)).scores(xq, yq) for c in (1.0, 3.0)]
    torch.testing.assert_close(scaled[1], scaled[0], rtol=1e-9, atol=1e-12)
    if delta == 1.0:  # no kernel left: gradient dot products φ(z)ᵀφ_i / μ times Q
        mu = gram.trace() / 4
        torch.testing.assert_close(scaled[0], (sq[:, None] * xq) @ (x * s[:, None]).T / mu, rtol=1e-9, atol=1e-12)
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="shrinkage must be a number in"):
            xk.examples.TRAK(model, projection=None, shrinkage=bad)


def test_trak_pairs_indices_self_scores_top_and_batch_size_agree_and_leave_the_model_unchanged():
    model, (x, y) = _mlp(), _data()
    before = snapshot(model)
    trak = xk.examples.TRAK(model, projection=12, batch_size=8).fit((x, y))
    other = xk.examples.TRAK(model, projection=12, batch_size=30).fit((x, y))
    full = trak.scores(x[:5], y[:5])
    torch.testing.assert_close(other.scores(x[:5], y[:5]), full, rtol=1e-9, atol=1e-12)
    idx = torch.tensor([3, 0, 7, 7, 29])
    torch.testing.assert_close(trak.scores(x[:5], y[:5], indices=idx), full[:, idx])
    torch.testing.assert_close(trak.pairs(x[:5], y[:5], idx), full[torch.arange(5), idx])
    torch.testing.assert_close(trak.self_scores(), trak.scores(x, y).diagonal(), rtol=1e-9, atol=1e-12)
    found = trak.top(x[:5], y[:5], k=3)
    assert torch.equal(found.supporting, full.topk(3, 1).indices)
    assert len(found.to_pandas()) == 5 * 3 * 2
    with pytest.warns(UserWarning, match=r"singular \(rank 16 of 24\)"):  # margin gradients span (C-1)(d+1) dims
        last = xk.examples.TRAK(model, layer="last", projection=None).fit((x, y))
    assert last.features[0].shape == (30, 7 * 3 + 3)
    assert_unchanged(model, before)


def test_trak_refuses_bad_input_with_clear_errors_and_leaves_the_model_unchanged():
    model, (x, _) = _mlp(), _data()
    frozen = _mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        xk.examples.TRAK(frozen)
    with pytest.raises(ValueError, match=r"projection=100 is above the gradient size 66"):
        xk.examples.TRAK(model, projection=100)
    with pytest.raises(TypeError, match="did you mean 'projection'"):
        xk.examples.TRAK(model, projectio=10)
    before = snapshot(model)
    trak = xk.examples.TRAK(model, projection=8)
    with pytest.raises(ValueError, match="call fit"):
        trak.scores(x[:2])
    with pytest.raises(ValueError, match="labelled"):
        trak.fit(x)
    assert_unchanged(model, before)


def test_tracin_self_scores_are_the_diagonal_of_its_scores():
    model, (x, y) = _mlp(), _data()
    for layer in ("last", "all"):
        tracin = xk.examples.TracIn(model, layer=layer).fit((x, y))
        torch.testing.assert_close(tracin.self_scores(), tracin.scores(x, y).diagonal(), rtol=1e-9, atol=1e-12)


def test_influence_functions_lissa_approaches_the_exact_inverse_hvp():
    model, (x, y) = _mlp(), _data(40)
    before = snapshot(model)
    exact = xk.examples.InfluenceFunctions(model, layer="last", hessian="exact", damping=0.05).fit((x, y))
    # the exact Hessian: written out here with autograd over the flat last-layer parameters
    w0, b0 = model[2].weight.detach(), model[2].bias.detach()
    h = model[1](model[0](x)).detach()

    def mean_loss(theta: torch.Tensor) -> torch.Tensor:
        w, b = theta[:21].view(3, 7), theta[21:]
        return nn.functional.cross_entropy(h @ w.T + b, y)

    hessian = torch.autograd.functional.hessian(mean_loss, torch.cat([w0.flatten(), b0]))
    torch.testing.assert_close(exact.exact_hessian(), hessian, rtol=1e-9, atol=1e-12)
    v = torch.randn(3, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    truth = torch.linalg.solve(hessian + 0.05 * torch.eye(24, dtype=torch.float64), v.T).T
    torch.testing.assert_close(exact.inverse_hvp(v), truth, rtol=1e-8, atol=1e-10)
    errors = []
    for depth in (20, 400):  # full-batch LiSSA: the Neumann series converges geometrically
        lissa = xk.examples.InfluenceFunctions(model, hessian="lissa", damping=0.05, scale=2.0, depth=depth,
                                               hessian_batch_size=40).fit((x, y))
        errors.append(float((lissa.inverse_hvp(v) - truth).norm() / truth.norm()))
    assert errors[1] < errors[0] / 10 and errors[1] < 1e-3, errors
    scores = exact.scores(x[:4], y[:4])
    torch.testing.assert_close(scores, exact.inverse_hvp(exact.gradients[:4]) @ exact.gradients.T)
    assert exact.top(x[:4], y[:4], k=2).supporting.shape == (4, 2)
    assert_unchanged(model, before)


def test_trak_store_equals_memory_and_resumes_without_recomputing_finished_shards(tmp_path):
    pytest.importorskip("zarr")
    model, (x, y) = _mlp(), _data(30)
    memory = xk.examples.TRAK(model, projection=6, batch_size=4, shrinkage=0.5).fit((x, y))
    calls = []

    class Counting(xk.examples.TRAK):
        def _features(self, stacked, xb, yb):  # one vmap over a group of ensemble members: counted per member
            calls.append(xb.shape[0] * next(iter(stacked.values())).shape[0])
            return super()._features(stacked, xb, yb)

    def killed():  # the training set read in batches of 4; the run dies after 16 samples
        for s in range(0, 16, 4):
            yield x[s:s + 4], y[s:s + 4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Counting(model, projection=6, batch_size=4, shrinkage=0.5).fit(killed(), store=tmp_path / "s", shard_size=8)
    assert sum(calls) == 16  # two shards of 8 written
    calls.clear()
    stored = Counting(model, projection=6, batch_size=4, shrinkage=0.5).fit((x, y), store=tmp_path / "s",
                                                                             shard_size=8)
    assert sum(calls) == 14  # only the two shards still missing (8 + 6)
    for ours, theirs in ((stored.scores(x[:5], y[:5]), memory.scores(x[:5], y[:5])),
                         (stored.self_scores(), memory.self_scores()),
                         (stored.pairs(x[:3], y[:3], [29, 0, 9]), memory.pairs(x[:3], y[:3], [29, 0, 9]))):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)  # float32 on disk
    assert torch.equal(stored.top(x[:5], y[:5], k=4).supporting, memory.top(x[:5], y[:5], k=4).supporting)
    with pytest.raises(ValueError, match="other settings .*projection"):
        xk.examples.TRAK(model, projection=5).fit((x, y), store=tmp_path / "s", shard_size=8)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
def test_feature_index_ivf_backend_is_exact_when_every_cell_is_probed_and_reports_its_recall(metric):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(12, 8, generator=g) * 4
    vectors = centres[torch.randint(0, 12, (1500,), generator=g)] + torch.randn(1500, 8, generator=g)
    queries = centres[torch.randint(0, 12, (40,), generator=g)] + torch.randn(40, 8, generator=g)
    exact = xk.examples.FeatureIndex.from_vectors(vectors, metric=metric).search(queries, 10)
    every = xk.examples.FeatureIndex.from_vectors(vectors, metric=metric, backend="ivf", lists=16, probe=16)
    found = every.search(queries, 10)
    assert torch.equal(found.index.sort(1).values, exact.index.sort(1).values)
    torch.testing.assert_close(found.similarity, exact.similarity, rtol=1e-4, atol=1e-4)
    assert every.recall(queries, 10) == 1.0
    few = xk.examples.FeatureIndex.from_vectors(vectors, metric=metric, backend="ivf", lists=64, probe=2)
    recall = few.recall(queries, 10)
    direct = float((few.search(queries, 10).index[:, :, None] == exact.index[:, None, :]).any(1).float().mean())
    assert recall == direct and 0.3 < recall < 1.0, recall


def test_feature_index_faiss_backend_matches_the_exact_search_or_warns_where_faiss_is_missing():
    vectors = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    from xaikit.examples.ann import has_faiss
    if not has_faiss():
        with pytest.warns(UserWarning, match="faiss is not installed; using the exact search"):
            index = xk.examples.FeatureIndex.from_vectors(vectors, backend="faiss")
        assert index.backend == "exact"
        return
    index = xk.examples.FeatureIndex.from_vectors(vectors, backend="faiss", lists=8, probe=8)
    assert index.recall(vectors[:20], 5) == 1.0
