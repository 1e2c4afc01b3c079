"""The pieces of issue 31's reproductions: pruning in Yeom et al.'s setting (global ranking, per-layer
normalisation, reference samples per class) and the captioning relevance split / LRP-IFT (Sun et al. 2022)."""
import pytest
import torch
import torch.nn.functional as F

from models import assert_unchanged, snapshot
from xaikit.improve import layer_normalised, prune_plan, reference_samples
from xaikit.improve.captioning import LRPInferenceLoss, hallucinated, text_dominated, word_relevance
from xaikit.zoo.captions import EOS, CaptionModel, make_caption_shapes


# -- pruning --------------------------------------------------------------------------------------------------
def test_global_plan_prunes_the_smallest_of_all_layers_with_ties_in_layer_order():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(7, generator=g), "b": torch.randn(5, generator=g), "c": torch.tensor([0.0, 0.0])}
    for fraction in (0.0, 0.25, 0.5, 0.9):
        plan = prune_plan(scores, fraction, scope="global")
        flat = [(float(v), layer, i) for layer, s in scores.items() for i, v in enumerate(s)]
        order = {"a": 0, "b": 1, "c": 2}
        flat.sort(key=lambda t: (t[0], order[t[1]], t[2]))  # brute force: value, then layer order, then index
        removed = {(layer, i) for _, layer, i in flat[:round(fraction * 14)]}
        got = {(layer, i) for layer, keep in plan.items() for i in torch.nonzero(~keep).flatten().tolist()}
        assert got == removed
    one = {"a": scores["a"]}
    assert torch.equal(prune_plan(one, 0.4, scope="global")["a"], prune_plan(one, 0.4)["a"])
    with pytest.raises(ValueError, match="scope"):
        prune_plan(scores, 0.5, scope="network")


def test_layer_normalised_scales_each_layer_as_the_paper():
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.randn(6, generator=g) + 0.5, "b": 10 * torch.rand(4, generator=g), "z": torch.zeros(3)}
    lrp = layer_normalised(scores, "lrp")
    for name in ("a", "b"):
        torch.testing.assert_close(lrp[name].sum().abs(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(layer_normalised(scores, "weight")[name].abs().sum(),
                                   torch.tensor(1.0, dtype=torch.float64))
        for criterion in ("taylor", "gradient"):
            torch.testing.assert_close(layer_normalised(scores, criterion)[name].norm(),
                                       torch.tensor(1.0, dtype=torch.float64))
        # a positive rescaling: the order inside a layer is kept
        assert torch.equal(torch.argsort(lrp[name]), torch.argsort(scores[name].double()))
    assert torch.equal(lrp["z"], torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="criterion"):
        layer_normalised(scores, "random")


def test_reference_samples_per_class():
    y = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 2, 1, 0, 3])
    idx = reference_samples(y, 2, seed=3)
    counts = torch.bincount(y[idx], minlength=4)
    assert counts.tolist() == [2, 2, 2, 1]  # class 3 has one sample only
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == idx.numel()
    assert torch.equal(idx, reference_samples(y, 2, seed=3))
    assert any(not torch.equal(idx, reference_samples(y, 2, seed=s)) for s in range(4, 10))
    with pytest.raises(ValueError, match="per_class"):
        reference_samples(y, 0)
    with pytest.raises(ValueError, match="y must be"):
        reference_samples(y.float(), 1)


# -- captioning -----------------------------------------------------------------------------------------------
def _model(seed: int = 0, bias_free: bool = True) -> CaptionModel:
    torch.manual_seed(seed)
    model = CaptionModel(dim=6).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if bias_free and "bias" in name:  # Linear biases and the LSTM's bias_ih / bias_hh
                p.zero_()
            elif p.ndim > 1:
                p.mul_(2.0)  # logits of order one, so that ε = 1e-6 is small against them
    return model


def test_caption_data_matches_its_objects_and_bias():
    data = make_caption_shapes(300, cooccur=1.0, pair=(1, 4), seed=2)
    assert data.images.shape == (300, 1, 16, 16)
    count = data.objects.sum(1)
    assert ((count >= 1) & (count <= 3)).all() and torch.equal(data.lengths, count + 1)
    for i in range(300):
        words = (torch.nonzero(data.objects[i]).flatten() + 2).tolist()
        assert data.captions[i].tolist() == words + [EOS] * (4 - len(words))
    assert data.objects[data.objects[:, 1], 4].all()  # cooccur = 1: object 1 always comes with object 4
    free = make_caption_shapes(300, cooccur=None, seed=2)
    assert not free.objects[free.objects[:, 0], 1].all()
    assert torch.equal(make_caption_shapes(20, seed=5).images, make_caption_shapes(20, seed=5).images)
    with pytest.raises(ValueError, match="pair"):
        make_caption_shapes(10, pair=(2, 2))


def test_relevance_split_sums_to_the_word_logit_in_a_bias_free_model():
    model, data = _model(), make_caption_shapes(5, seed=0)
    x, words = data.images.double(), data.captions
    before = snapshot(model)
    rel = word_relevance(model, x, words)
    assert_unchanged(model, before)
    with torch.no_grad():  # brute force: the teacher-forced logits of the words
        previous = torch.cat([torch.zeros_like(words[:, :1]), words[:, :-1]], 1)
        logits = model(x, previous).gather(2, words[..., None]).squeeze(-1)
    torch.testing.assert_close(rel.logit, logits)
    assert logits.abs().min() > 1e-3
    torch.testing.assert_close(rel.image + rel.text, logits, rtol=1e-4, atol=1e-5)
    assert (rel.text.abs() > 1e-4).any() and (rel.image.abs() > 1e-4).any()
    assert ((rel.text_share >= -1) & (rel.text_share <= 1)).all()


def test_text_relevance_is_zero_when_the_words_do_not_enter_the_lstm():
    model, data = _model(1), make_caption_shapes(4, seed=1)
    with torch.no_grad():
        model.lstm.weight_ih_l0[:, :model.dim] = 0  # the embedding half of the LSTM input
    rel = word_relevance(model, data.images.double(), data.captions)
    assert rel.text.abs().max() < 1e-12
    torch.testing.assert_close(rel.image, rel.logit, rtol=1e-4, atol=1e-5)
    assert torch.equal(rel.text_share, -torch.sign(rel.image))  # no text: the image's sign alone decides
    assert torch.equal(text_dominated(rel), rel.image < 0)


def test_hallucinated_words_and_bad_input():
    objects = torch.tensor([[True, False, True], [False, True, False]])
    words = torch.tensor([[2, 3, 4, EOS], [3, 4, EOS, 0]])
    assert hallucinated(words, objects).tolist() == [[False, True, False, False], [False, True, False, False]]
    model, data = _model(), make_caption_shapes(2, seed=0)
    with pytest.raises(ValueError, match="words"):
        word_relevance(model, data.images.double(), data.captions.double())
    with pytest.raises(ValueError, match="words"):
        word_relevance(model, data.images.double(), data.captions[:1])
    with pytest.raises(ValueError, match="lam"):
        LRPInferenceLoss(1.5)
    with pytest.raises(TypeError, match="images"):
        LRPInferenceLoss()(model, data.images.numpy(), data.captions, data.captions, data.captions > 0)


def test_lrp_ift_weights_and_loss_in_closed_form():
    model, data = _model(2, bias_free=False), make_caption_shapes(6, seed=3)
    x = data.images.double()
    previous = torch.cat([torch.zeros_like(data.captions[:, :1]), data.captions[:, :-1]], 1)
    mask = torch.arange(4) < data.lengths[:, None]
    before = snapshot(model)
    loss_fn = LRPInferenceLoss(0.3)
    loss = loss_fn(model, x, previous, data.captions, mask)
    assert_unchanged(model, before)
    with torch.no_grad():
        logits, c, h = model.decode(model.encode(x), model.embed(previous), parts=True)
        y = data.captions[mask]
        c, h = c[mask], h[mask]
        w_y = model.out.weight[y]
        r = torch.stack([c * w_y, h * w_y], 1)  # LRP-ε through a linear predictor of c + h: a ⊙ w_y
        weights = 1 + r / r.abs().amax(-1, keepdim=True)
        torch.testing.assert_close(loss_fn.weights(model, c, h, y), weights, rtol=1e-4, atol=1e-6)
        assert ((weights >= 0) & (weights <= 2)).all()
        expected = 0.3 * F.cross_entropy(logits[mask], y) + 0.7 * F.cross_entropy(
            model.out(weights[:, 0] * c + weights[:, 1] * h), y)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    plain = LRPInferenceLoss(1.0)(model, x, previous, data.captions, mask)
    torch.testing.assert_close(plain.detach(), F.cross_entropy(logits[mask], y))
    loss.backward()  # the weighting is a constant: the gradient reaches the model's parameters only
    assert all(p.grad is not None for p in model.parameters())
