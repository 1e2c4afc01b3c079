"""Every method has a meaning on token ids (issue 18): embedding-space paths for the gradient methods, token
masking for the perturbation, surrogate and Shapley methods, a clear refusal for those that do not apply."""
import pytest
import torch

import xaikit as xk
from models import assert_unchanged, snapshot
from text_models import VOCAB, bert

IDS = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 5, 6, 3, 0, 0]])
MASK = (IDS != 0).long()
KW = {"attention_mask": MASK}


@pytest.fixture(scope="module")
def model():
    return bert(labels=3, seed=1)


def _score(model, ids, target=1):
    with torch.no_grad():
        return model(ids, attention_mask=MASK).logits[:, target]


def test_integrated_gradients_integrates_in_embedding_space_with_completeness(model):
    before = snapshot(model)
    expl = xk.IntegratedGradients(model, steps=64)(IDS, target=1, forward_kwargs=KW)
    assert expl.attribution.shape == IDS.shape
    # completeness: Σ_tokens R = f(e) − f(zero vectors), the baseline run through the same model
    embedding = model.get_input_embeddings()
    from xaikit.methods.machinery.tokens_ids import EmbeddingSpace
    from xaikit.tokens import TokenInput

    space = EmbeddingSpace(model, TokenInput(model))
    with torch.no_grad():
        start = space(torch.zeros_like(embedding(IDS)), attention_mask=MASK).logits[:, 1]
    torch.testing.assert_close(expl.attribution.sum(1), _score(model, IDS) - start, atol=2e-3, rtol=1e-2)
    assert "embedding space" in expl.info["tokens"]
    assert_unchanged(model, before)


def test_smoothgrad_on_ids_adds_noise_to_the_embedding(model):
    expl = xk.SmoothGrad(model, method="input_x_gradient", samples=4, sigma=0.1, seed=0)(IDS, 1, forward_kwargs=KW)
    assert expl.attribution.shape == IDS.shape and torch.isfinite(expl.attribution).all()
    noiseless = xk.SmoothGrad(model, method="input_x_gradient", samples=2, sigma=0.0, seed=0)(IDS, 1, forward_kwargs=KW)
    torch.testing.assert_close(noiseless.attribution,
                               xk.InputXGradient(model)(IDS, 1, forward_kwargs=KW).attribution, atol=1e-5, rtol=1e-4)


def test_occlusion_masks_tokens_with_the_pad_token_by_default_or_the_given_one(model):
    expl = xk.Occlusion(model, window=1)(IDS, target=1, forward_kwargs=KW)
    assert expl.attribution.shape == IDS.shape and "masked with token id 0" in expl.info["tokens"]
    # occluding token 2 of sample 0 by hand with the mask id 4 gives the drop of the score
    expl = xk.Occlusion(model, window=1, baseline=4)(IDS, target=1, forward_kwargs=KW)
    occluded = IDS.clone()
    occluded[0, 2] = 4
    drop = _score(model, IDS)[0] - _score(model, occluded)[0]
    torch.testing.assert_close(expl.attribution[0, 2], drop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", [
    lambda m: xk.KernelSHAP(m, samples=64, seed=0, baseline=4),
    lambda m: xk.LIME(m, samples=64, seed=0, baseline=4),
])
def test_shapley_and_lime_on_ids_attribute_per_token(model, method):
    expl = method(model)(IDS, target=1, forward_kwargs=KW)
    assert expl.attribution.shape == IDS.shape and torch.isfinite(expl.attribution).all()


def test_exact_shapley_on_ids_is_efficient(model):
    ids = IDS[:1, :4]
    kw = {"attention_mask": torch.ones_like(ids)}
    expl = xk.ExactShapley(model, baseline=4)(ids, target=1, forward_kwargs=kw)
    with torch.no_grad():
        full = model(ids, **kw).logits[0, 1]
        empty = model(torch.full_like(ids, 4), **kw).logits[0, 1]
    torch.testing.assert_close(expl.attribution.sum(), full - empty, atol=1e-4, rtol=1e-4)


def test_methods_that_do_not_apply_to_ids_say_so(model):
    with pytest.raises(TypeError, match="RISE does not apply to token ids: it blends"):
        xk.RISE(model, masks=8, seed=0)(IDS, target=1, forward_kwargs=KW)
    with pytest.raises(TypeError, match="if it holds token ids, this method does not apply"):
        xk.MeaningfulPerturbation(model, iterations=2)(IDS, target=1, forward_kwargs=KW)
    with pytest.raises(ValueError, match=r"baseline must be that token's id \(e.g. baseline=tokenizer.mask_token_id"):
        xk.Occlusion(model, window=1, baseline="blur")(IDS, target=1, forward_kwargs=KW)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        xk.IntegratedGradients(model, steps=4)(IDS + VOCAB, target=1, forward_kwargs=KW)


def test_metrics_that_only_read_attributions_score_token_ids_and_the_others_say_why_not(model):
    """Issue 18: every metric cell of `xaikit evaluate -m minilm` was n/a."""
    expl = xk.InputXGradient(model)(IDS, target=1, forward_kwargs=KW)
    sparseness = xk.metrics.Sparseness()(model, IDS, 1, expl, forward_kwargs=KW)
    assert sparseness.shape == (2,) and torch.isfinite(sparseness).all()
    truth = torch.zeros_like(IDS, dtype=torch.bool)
    truth[:, 1] = True  # one "relevant" token per sequence
    mass = xk.metrics.RelevanceMassAccuracy()(model, IDS, 1, expl, mask=truth, forward_kwargs=KW)
    assert ((mass >= -1) & (mass <= 1)).all()
    from xaikit.errors import NotApplicable

    with pytest.raises(NotApplicable, match="if it holds token ids"):
        xk.metrics.PixelFlipping()(model, IDS, 1, expl, forward_kwargs=KW)
