"""Few-shot pieces: the glyph set (deterministic, disjoint splits), the episode sampler, prototypical episodes,
and explanation-guided training on an episode equal to its formula ``(1 + R) ⊙ f`` with a brute-force ``R``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import assert_unchanged, snapshot
from xaikit.improve import ExplanationGuidedLoss, layer_relevance
from xaikit.improve.fewshot import (PrototypicalEpisode, conv4, episode_accuracy, episode_loss, episodes_accuracy,
                                    mean_ci, prototype_logits, prototypes)
from xaikit.zoo.glyphs import FONTS, SPLITS, EpisodeSampler, _charmaps, make_glyphs

SCRIPTS = ("GREEK", "ARMENIAN", "HEBREW")  # a few hundred glyph renders: fast


@pytest.fixture(scope="module")
def glyphs():
    return make_glyphs(samples_per_class=8, size=16, seed=3, scripts=SCRIPTS)


def test_glyphs_deterministic_from_the_seed(glyphs):
    again = make_glyphs(samples_per_class=8, size=16, seed=3, scripts=SCRIPTS)
    other = make_glyphs(samples_per_class=8, size=16, seed=4, scripts=SCRIPTS)
    assert torch.equal(glyphs.x, again.x) and torch.equal(glyphs.font, again.font)
    assert glyphs.characters == again.characters and glyphs.split == again.split
    assert not torch.equal(glyphs.x, other.x)
    assert glyphs.split == other.split  # the class split depends on split_seed only


def test_glyphs_shapes_fonts_and_distinct_samples(glyphs):
    c, m = glyphs.n_classes, glyphs.samples_per_class
    assert c >= 60 and glyphs.x.shape == (c * m, 1, 16, 16) and len(glyphs) == c * m
    assert float(glyphs.x.min()) >= 0 and float(glyphs.x.max()) <= 1
    assert torch.equal(glyphs.y, torch.arange(c).repeat_interleave(m))
    maps = _charmaps()
    for n in range(0, len(glyphs), 37):  # every sample's font covers its character
        assert ord(glyphs.characters[int(glyphs.y[n])]) in maps[int(glyphs.font[n])]
    assert 0 <= int(glyphs.font.min()) and int(glyphs.font.max()) < len(FONTS)
    ink = glyphs.x.flatten(1).sum(1)
    assert float(ink.min()) > 1.0  # no empty images
    first = glyphs.of_class(0).flatten(1)
    assert torch.cdist(first, first)[~torch.eye(m, dtype=torch.bool)].min() > 0  # augmented: all distinct


def test_glyph_splits_partition_the_classes(glyphs):
    parts = [set(glyphs.classes(s).tolist()) for s in SPLITS]
    assert sum(len(p) for p in parts) == glyphs.n_classes and set().union(*parts) == set(range(glyphs.n_classes))
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert abs(len(parts[0]) - 0.6 * glyphs.n_classes) <= 1
    with pytest.raises(ValueError, match="split"):
        glyphs.classes("meta-train")


def test_sampler_sizes_labels_and_disjoint_classes(glyphs):
    seen = {s: set() for s in SPLITS}
    for split in SPLITS:
        sampler = EpisodeSampler(glyphs, split, n_way=3, k_shot=2, n_query=4, seed=0)
        allowed = set(glyphs.classes(split).tolist())
        for _ in range(20):
            classes, rows = sampler.sample_rows()
            assert rows.shape == (3, 6) and len(set(classes.tolist())) == 3
            assert set(glyphs.y[rows.flatten()].tolist()) <= allowed
            assert torch.equal(glyphs.y[rows], classes[:, None].expand(3, 6))
            assert len(set(rows.flatten().tolist())) == 18  # support and queries are distinct samples
            seen[split] |= set(classes.tolist())
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    ep = EpisodeSampler(glyphs, "test", n_way=5, k_shot=1, n_query=3, seed=1).sample()
    assert ep.support.shape == (5, 1, 16, 16) and ep.query.shape == (15, 1, 16, 16)
    assert torch.equal(ep.support_y, torch.arange(5)) and torch.equal(ep.query_y, torch.arange(5).repeat_interleave(3))
    for k in range(5):  # relabelled 0 … N−1 in the order of ep.classes
        rows = glyphs.y == ep.classes[k]
        assert any(torch.equal(ep.support[k], img) for img in glyphs.x[rows])
    a = EpisodeSampler(glyphs, "val", 4, 1, 2, seed=7).take(3)
    b = EpisodeSampler(glyphs, "val", 4, 1, 2, seed=7).take(3)
    assert all(torch.equal(p.query, q.query) and torch.equal(p.classes, q.classes) for p, q in zip(a, b))


def test_sampler_bad_input(glyphs):
    with pytest.raises(ValueError, match="n_way"):
        EpisodeSampler(glyphs, "test", n_way=glyphs.n_classes, k_shot=1, n_query=1)
    with pytest.raises(ValueError, match="samples_per_class"):
        EpisodeSampler(glyphs, "train", n_way=2, k_shot=5, n_query=5)
    with pytest.raises(ValueError, match="split"):
        EpisodeSampler(glyphs, "testing")


# -- prototypical episodes ---------------------------------------------------------------------------------
def _encoder(seed: int = 0) -> nn.Module:
    """No BatchNorm: the training forward and the explained one (eval semantics) give the same features."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 6), nn.ReLU()).double()


def _episode(seed: int = 1, n_way: int = 3, shot: int = 2, queries: int = 3):
    g = torch.Generator().manual_seed(seed)
    support = torch.rand(n_way * shot, 1, 8, 8, generator=g, dtype=torch.float64)
    query = torch.rand(n_way * queries, 1, 8, 8, generator=g, dtype=torch.float64)
    return (support, torch.arange(n_way).repeat_interleave(shot), query,
            torch.arange(n_way).repeat_interleave(queries))


def test_prototype_logits_are_negative_distances_up_to_a_per_query_constant():
    support, sy, query, qy = _episode()
    encoder = _encoder()
    logits = PrototypicalEpisode(encoder, support, sy)(query)
    f, c = encoder(query), prototypes(encoder(support), sy, 3)
    assert torch.allclose(c[1], encoder(support)[sy == 1].mean(0))
    distance = -torch.cdist(f, c).pow(2)
    assert torch.allclose(logits - distance, f.pow(2).sum(1, keepdim=True).expand(-1, 3), atol=1e-10)
    assert torch.allclose(PrototypicalEpisode(encoder, support, sy).classifier()(query), logits, atol=1e-12)


def test_guided_episode_loss_equals_the_formula_with_brute_force_relevance():
    support, sy, query, qy = _episode()
    encoder, lam = _encoder(), 0.7
    loss_fn = ExplanationGuidedLoss("features", lam)  # LRP epsilon_plus: ε rule (ε = 1e-6) on the prototype head
    loss, logits = episode_loss(encoder, support, sy, query, qy, loss_fn)
    # brute force: the ε-rule relevance of the true-class logit z = 2cᵀf − ‖c‖² at the query embedding f
    with torch.no_grad():
        f, c = encoder(query), prototypes(encoder(support), sy, 3)
        z = prototype_logits(f, c).gather(1, qy[:, None])
        relevance = f * 2 * c[qy] * z / (z + 1e-6 * z.sign())
        r = torch.stack([row / row.abs().max() for row in relevance])  # per query, by its largest magnitude
        assert float(r.min()) >= -1 and float(r.max()) <= 1
        assert torch.allclose(r.abs().amax(1), torch.ones(9, dtype=r.dtype))
        expected = (F.cross_entropy(prototype_logits(f, c), qy)
                    + lam * F.cross_entropy(prototype_logits((1 + r) * f, c), qy))
    assert torch.allclose(loss, expected, rtol=1e-10, atol=0)
    assert torch.allclose(logits, prototype_logits(f, c), atol=1e-12)
    episode = PrototypicalEpisode(encoder, support, sy)
    recorded = layer_relevance(episode.classifier(), query, qy, "features")
    assert torch.allclose(recorded, relevance, rtol=1e-9, atol=1e-12)
    exact = layer_relevance(episode.classifier(), query, qy, "features", "input_x_gradient")
    assert torch.allclose(exact, f * 2 * c[qy], atol=1e-12)  # gradient × input of a linear head: closed form
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_guided_episode_lam_zero_is_plain_and_explaining_changes_nothing():
    support, sy, query, qy = _episode(seed=2)
    torch.manual_seed(0)
    encoder = conv4(4, blocks=2).double().train()
    encoder[1].running_mean.uniform_(-0.2, 0.2)  # statistics a write would change
    before = snapshot(encoder)
    episode = PrototypicalEpisode(encoder, support, sy)
    classifier = episode.classifier()
    layer_relevance(classifier, query, qy, "features")
    episode_accuracy(encoder, support, sy, query, qy, transductive=True)
    with pytest.raises(RuntimeError):
        episode_accuracy(encoder, support, sy, query[:, :, :3], qy, transductive=True)  # raised inside
    assert_unchanged(encoder, before)
    plain, _ = episode_loss(encoder, support, sy, query, qy)
    encoder.load_state_dict(before["state"])
    zero, _ = episode_loss(encoder, support, sy, query, qy, ExplanationGuidedLoss("features", 0.0))
    assert torch.allclose(plain, zero, atol=1e-12)


def test_batched_episode_accuracy_equals_the_loop():
    torch.manual_seed(0)
    encoder = conv4(4, blocks=2).double().eval()
    episodes = [_episode(seed=s) for s in range(4)]
    loop = [episode_accuracy(encoder, *e) for e in episodes]
    with torch.no_grad():
        support_z, query_z = (torch.stack([encoder(e[i]) for e in episodes]) for i in (0, 2))
        support_y, query_y = (torch.stack([e[i] for e in episodes]) for i in (1, 3))
        batched = episodes_accuracy(support_z, support_y, query_z, query_y)
    assert batched.tolist() == pytest.approx(loop)


def test_mean_ci_and_bad_input():
    values = [0.2, 0.4, 0.9, 0.5]
    mean, half = mean_ci(values)
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 3)
    assert mean == pytest.approx(0.5) and half == pytest.approx(1.959964 * sd / 2, rel=1e-6)
    support, sy, query, qy = _episode()
    with pytest.raises(ValueError, match="support_y"):
        PrototypicalEpisode(_encoder(), support, torch.zeros_like(sy), n_way=3)(query)
    with pytest.raises(ValueError, match="same length"):
        PrototypicalEpisode(_encoder(), support, sy[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([0.5])
    with pytest.raises(ValueError, match="layer"):  # the explained module must have the layer
        ExplanationGuidedLoss("features", 0.5)(PrototypicalEpisode(_encoder(), support, sy), query, qy,
                                               explain_with=_encoder())
