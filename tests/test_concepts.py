"""xaikit.concepts: CRP tools, channel discovery + ablation on the ground-truth shapes, reference samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit import concepts
from xaikit.propagation.record import Recorder
from xaikit.zoo import make_shapes, train_shapes_model


@pytest.fixture(scope="module")
def shapes():
    model = train_shapes_model(make_shapes(512, seed=0), epochs=6, seed=0)
    return model, make_shapes(256, seed=1)


def _bias_free(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 3, bias=False)).eval()


def test_top_k_ablation_collapses_accuracy_random_and_low_k_do_not(shapes):
    """Chandrasegaran et al. 2022, Table 2 ordering on the last conv layer: top-k ≪ random-k ≤ low-k ≈ baseline,
    per class with that class's own ranking (seeded model, data and draws)."""
    model, data = shapes
    scores = concepts.ChannelRelevance(model, layer="features.9")((data.x[:128], data.y[:128]))
    assert torch.all((scores.score >= 0) & (scores.score <= 1)) and scores.score.sum() > 0
    held_out = (data.x[128:], data.y[128:])
    rows = []
    for cls in range(4):
        table = concepts.Ablation(model, "features.9", k=3, draws=5, seed=0)(held_out, scores, cls=cls)
        assert table.rows == ["baseline", "top-3", "random-3", "low-3"]
        rows.append(table.mean[:, cls])
    baseline, top, random, low = torch.tensor(np.array(rows)).mean(0).tolist()
    assert baseline > 95
    assert top < random - 30, (top, random)
    assert low >= baseline - 5 and random <= low + 1, (random, low, baseline)


def test_composition_shares_and_heatmaps():
    model = _bias_free()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    full = xk.LRP(model, composite="epsilon", epsilon=1e-9)(x, target=1)
    settings = {"composite": "epsilon", "epsilon": 1e-9}
    every = concepts.ConditionalHeatmaps(model, layer="2", method_settings=settings)(x, target=1)
    assert len(every) == 16 and every.heatmaps.shape == (16, 3, 8, 8)
    # all channels: heatmaps sum to the unconditional one, relevance to the logit (bias-free, ε → 0)
    assert torch.allclose(every.heatmaps.view(2, 8, 3, 8, 8).sum(1), full.attribution, atol=1e-5)
    assert torch.allclose(every.relevance.view(2, 8).sum(1), full.output[:, 1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(every.share.view(2, 8).abs().sum(1), torch.full((2,), 100.0), atol=1e-3)
    top = concepts.Composition(model, layer="2", top=3, method_settings=settings)(x, target=1)
    assert len(top) == 6
    for i in range(2):
        shares = every.share.view(2, 8)[i]
        best = shares.argsort(descending=True)[:3]
        assert top.concepts[3 * i: 3 * i + 3] == best.tolist()
        assert torch.allclose(top.share[3 * i: 3 * i + 3], shares[best], atol=1e-4)
        assert torch.allclose(top.heatmaps[3 * i: 3 * i + 3], every.heatmaps.view(2, 8, 3, 8, 8)[i, best], atol=1e-6)
    assert "channel" in top.describe()[0] and "%" in top.describe()[0]


def test_hierarchy_splits_a_concept_over_lower_channels():
    model = _bias_free()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    settings = {"composite": "epsilon", "epsilon": 1e-9}
    splits = concepts.Hierarchy(model, layer="5", lower="2", top=8, method_settings=settings)(x, target=0,
                                                                                             concepts=[1, 4])
    for split in splits:
        # all lower channels: their conditioned relevance sums to the concept's (conserving, bias-free)
        assert torch.allclose(split.relevance.sum(), torch.tensor(split.total), rtol=1e-4, atol=1e-6)
        assert torch.allclose(split.share.abs().sum(), torch.tensor(100.0), atol=1e-3)
        one = concepts.ConditionalHeatmaps(model, layer="5", method_settings=settings)(x, 0, concepts=[split.concept])
        assert torch.allclose(split.heatmaps.sum(0), one.heatmaps[0], atol=1e-6)


class _Interrupted(Exception):
    pass


def _loader(data, batch: int, fail_after: int | None = None):
    for i, start in enumerate(range(0, len(data), batch)):
        if fail_after is not None and i == fail_after:
            raise _Interrupted
        yield data.x[start:start + batch], data.y[start:start + batch]


def test_reference_samples_resume_gives_the_same_result(shapes, tmp_path):
    model, data = shapes
    data = data[:96]
    tool = lambda cache: concepts.ReferenceSamples(model, layer="features.9", n=5, cache=cache,  # noqa: E731
                                                   progress=False)
    single = tool(None)(_loader(data, 16))
    with pytest.raises(_Interrupted):
        tool(tmp_path)(_loader(data, 16, fail_after=3))
    resumed = tool(tmp_path)(_loader(data, 16))
    assert resumed.seen == single.seen == 96
    for by in ("activation", "relevance"):
        assert torch.equal(resumed.ids[by], single.ids[by])
        assert torch.equal(resumed.values[by], single.values[by])
    # the references are the true top-n: compare with one recorded pass over all samples
    with Recorder(model, ["features.9"]) as rec:
        xk.LRP(model, composite="epsilon_plus_flat")(data.x, target=data.y)
    relevance = rec["features.9"].relevance.sum((2, 3))
    assert torch.allclose(single.values["relevance"], relevance.t().sort(1, descending=True).values[:, :5],
                          atol=1e-5)
    activation = rec["features.9"].activation.amax((2, 3))
    assert torch.equal(single.ids["activation"], activation.t().argsort(dim=1, descending=True, stable=True)[:, :5])
    crops, heatmaps = tool(None).crops(data.x, single, channel=2, size=16)
    assert crops.shape == (5, 3, 16, 16) and heatmaps.shape == (5, 3, 32, 32)
    field, _ = tool(None).crops(data.x, single, channel=2, by="activation", mode="receptive_field", size=16)
    assert field.shape == (5, 3, 16, 16)
    with pytest.warns(UserWarning, match="other settings.*rebuilding"):  # another setting, same cache: rebuilt
        four = concepts.ReferenceSamples(model, layer="features.9", n=4, cache=tmp_path, progress=False)(
            _loader(data, 16))
    assert torch.equal(four.ids["relevance"], single.ids["relevance"][:, :4])
    with pytest.raises(ValueError, match="other data .*batch 3 differs.*cannot be read again"):
        changed = data.x.clone()
        changed[50:] += 1  # the first batches equal, the fourth not: an iterator cannot be started again
        concepts.ReferenceSamples(model, layer="features.9", n=4, cache=tmp_path, progress=False)(
            (changed[i:i + 16], data.y[i:i + 16]) for i in range(0, 96, 16))


def test_bad_input_names_the_argument(shapes):
    model, data = shapes
    with pytest.raises(ValueError, match=r"layer 'features\.99' is not a module of the model "
                                         r"\(did you mean 'features\.9'.*valid names"):
        concepts.ConditionalHeatmaps(model, layer="features.99")
    with pytest.raises(ValueError, match="concepts: channel 16"):
        concepts.ConditionalHeatmaps(model, layer="features.9")(data.x[:1], concepts=[16])
    with pytest.raises(ValueError, match="k=17"):
        concepts.Ablation(model, "features.9", k=17)((data.x[:8], data.y[:8]), torch.rand(16))
    with pytest.raises(ValueError, match="top=17"):
        concepts.Composition(model, "features.9", top=17)(data.x[:1])
    with pytest.raises(ValueError, match="data is empty"):
        concepts.ReferenceSamples(model, "features.9", progress=False)([])
    with pytest.raises(ValueError, match="data is empty"):
        concepts.ChannelRelevance(model, "features.9")([])
    with pytest.raises(TypeError, match="unknown setting 'topk'"):
        concepts.Composition(model, "features.9", topk=3)
    with pytest.raises(ValueError, match="no relevance inside"):
        concepts.Composition(model, "features.9", method="occlusion")


def test_feature_visualisation_beats_real_images(shapes):
    from xaikit.concepts import FeatureVisualisation

    model, data = shapes
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for objective, layer, units in (("channel", "features.9", [3, 5]), ("class", None, [0, 2])):
        tool = FeatureVisualisation(model, layer, (3, 32, 32), objective=objective, steps=30, seed=0)
        result = tool(units)
        assert result.images.shape == (2, 3, 32, 32)
        assert result.images.min() >= -1 and result.images.max() <= 1
        final = tool.score(result.images, units)
        real = torch.stack([tool.score(data.x[i:i + 1].expand(2, -1, -1, -1), units) for i in range(32)]).amax(0)
        assert torch.all(final > real), (objective, final, real)
        assert torch.all(result.history[-1] > result.history[0])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # any size and channel count; starting from a real image reproduces it before any step
    grey = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 18, 2)).eval()
    tool = FeatureVisualisation(grey, "0", (1, 12, 20), steps=0)
    start = torch.rand(1, 1, 12, 20) * 1.6 - 0.8
    assert torch.allclose(tool([1], start=start).images, start, atol=1e-4)
    assert FeatureVisualisation(grey, "0", (1, 12, 20), steps=3, objective="direction")(
        [torch.ones(4)]).images.shape == (1, 1, 12, 20)


@pytest.mark.parametrize("reducer", ["pca", "tsne"])
def test_embedding_separates_the_classes(shapes, reducer):
    from sklearn.neighbors import KNeighborsClassifier

    model, data = shapes
    result = concepts.Embedding(model, "features.9", reducer=reducer, seed=0)((data.x[:128], data.y[:128]))
    assert result.points.shape == (128, 2) and result.features.shape == (128, 16)
    knn = KNeighborsClassifier(5).fit(result.points[:96], result.labels[:96])
    assert knn.score(result.points[96:], result.labels[96:]) > 0.7
    if reducer == "pca":
        rel = concepts.Embedding(model, "features.9", of="relevance")((data.x[:32], data.y[:32]))
        assert np.allclose(np.abs(rel.features).sum(1), 1.0, atol=1e-5)


def test_concepts_report_section(shapes, tmp_path):
    from xaikit import viz

    model, data = shapes
    x = data.x[:2]
    composition = concepts.Composition(model, "features.9", top=3)(x)
    tool = concepts.ReferenceSamples(model, "features.9", n=4, progress=False)
    refs = tool(_loader(data[:64], 32))
    images = viz.to_rgb(x, -1, 1)
    crops = {c: viz.to_rgb(tool.crops(data.x[:64], refs, c, size=16)[0], -1, 1)
             for c in set(composition.concepts)}
    section = viz.concepts_section(tmp_path, images, composition, ["a", "b"], crops)
    viz.write_report(tmp_path, [section])
    page = (tmp_path / "index.html").read_text()
    assert "Concepts" in page and " %" in page and "reference samples of" in page
    for src in __import__("re").findall(r'src="([^"]+)"', section.html):
        assert (tmp_path / src).exists()
    figure = viz.plot_composition(images[0], composition.heatmaps[:3], composition.concepts[:3],
                                  composition.share[:3].tolist(), crops)
    assert len(figure.axes) == 8
    assert viz.plot_embedding(np.random.default_rng(0).normal(size=(5, 2)), [0, 1, 0, 1, 0],
                              images[[0, 1, 0, 1, 0]], zoom=0.2) is not None


def test_integrated_gradients_at_a_layer_is_complete():
    model = _bias_free()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ig = xk.IntegratedGradients(model, steps=24)
    scores = concepts.ChannelRelevance(model, layer="3", method=ig)
    expl, rec = scores.record(x, 1)
    difference = expl.output[:, 1] - model(torch.zeros_like(x))[:, 1]
    assert torch.allclose(rec["3"].relevance.flatten(1).sum(1), difference.detach(), rtol=1e-3, atol=1e-4)
    # a ReLU network without biases is positively homogeneous: layer IG from a zero baseline is a ⊙ g
    with Recorder(model, ["3"]) as grads:
        xk.InputXGradient(model)(x, target=1)
    assert torch.allclose(rec["3"].relevance, grads["3"].relevance, atol=1e-4)
    with pytest.raises(ValueError, match="single-pass"):
        concepts.ConditionalHeatmaps(model, layer="3", method=ig)(x[:1], target=1)


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_transformers_hidden_units_and_tokens(kind):
    """The same calling convention on a BERT (token ids, hidden units of a layer) and a ViT (patch tokens)."""
    from models import assert_unchanged, snapshot
    from text_models import bert, vit

    if kind == "bert":
        model, layer = bert(), "bert.encoder.layer.0.output"
        x = torch.randint(1, 40, (1, 7), generator=torch.Generator().manual_seed(0))
    else:
        model, layer = vit(), "vit.layers.1"
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    settings = {"composite": "attnlrp"}
    full = xk.LRP(model, composite="attnlrp")(x, target=1).attribution
    for axis, units in ((-1, 16), (1, 7 if kind == "bert" else 17)):  # hidden units; tokens
        maps = concepts.ConditionalHeatmaps(model, layer=layer, method_settings=settings, axis=axis)(x, target=1)
        assert len(maps) == units
        assert torch.allclose(maps.heatmaps.sum(0, keepdim=True), full, atol=1e-5, rtol=1e-4), axis
    top = concepts.Composition(model, layer=layer, top=3, method_settings=settings)(x, target=1)
    assert top.heatmaps.shape == (3, *full.shape[1:]) and top.share[0] >= top.share[1]
    assert_unchanged(model, before)


def test_report_command_concepts_section(capsys, tmp_path):
    from skimage import io as skio

    from xaikit.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        skio.imsave(folder / f"{name}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), check_contrast=False)
    out = tmp_path / "report"
    code = main(["report", "-m", "models:vgg_like", "-i", str(folder), "--image-size", "16", "--sections",
                 "concepts", "--concept-layer", "5", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = (out / "index.html").read_text()
    assert "Concepts: models:vgg_like, layer 5" in page and page.count(" %</small>") == 3 * 3
    assert page.count('class="refs"') == 3 * 3
    code = main(["report", "-m", "models:vgg_like", "-i", str(folder), "--image-size", "16", "--sections",
                 "concepts", "--concept-layer", "nope", "--strict", "--out", str(out)])
    assert code != 0 and "--concept-layer" in capsys.readouterr().err


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _same(a, b) -> bool:
    return a.seen == b.seen and all(torch.equal(a.ids[k], b.ids[k]) and torch.equal(a.values[k], b.values[k])
                                    for k in ("activation", "relevance"))


def test_reference_samples_cache_keys_on_the_weights_the_data_and_the_settings(tmp_path, monkeypatch):
    """Issue 30 (2): a cache written for other weights, other data or other settings is never reused: the
    result equals a run without cache (with a warning that the cache is rebuilt); the same model, data and
    settings read it back without explaining anything."""
    model = _bias_free(1)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    other = torch.randn(10, 3, 8, 8, generator=g)
    tool = lambda cache, n=4: concepts.ReferenceSamples(model, layer="2", n=n, cache=cache, progress=False)  # noqa: E731
    first = tool(tmp_path)(_batches(x, y, 10))
    assert first.seen == 40
    calls = []
    original = concepts.ReferenceSamples.record
    monkeypatch.setattr(concepts.ReferenceSamples, "record", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    assert _same(tool(tmp_path)(_batches(x, y, 10)), first) and not calls        # same everything: read back
    for data in (_batches(other, y[:10], 10),                                    # other data (10 samples, not 40)
                 _batches(x[:10], y[:10], 10),                                   # the first batch only
                 _batches(x, (y + 1) % 3, 10)):                                  # other labels
        with pytest.warns(UserWarning, match="rebuilding"):
            cached = tool(tmp_path)(data)
        assert _same(cached, tool(None)(data))
    with pytest.warns(UserWarning, match="rebuilding"):
        tool(tmp_path)(_batches(x, y, 10))
    with pytest.warns(UserWarning, match="rebuilding"):                          # other settings
        before = tool(tmp_path, n=3)(_batches(x, y, 10))
    assert _same(before, tool(None, n=3)(_batches(x, y, 10)))
    with torch.no_grad():
        model[5].weight.mul_(-1)                                                 # other weights
    with pytest.warns(UserWarning, match="rebuilding"):
        cached = tool(tmp_path, n=3)(_batches(x, y, 10))
    assert _same(cached, tool(None, n=3)(_batches(x, y, 10))) and not _same(cached, before)
