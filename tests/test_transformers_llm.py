"""AttnLRP and CP-LRP on the LLM families people run (Llama, Mistral, Qwen2, Gemma, Gemma2, Phi-3, GPT-NeoX)
and T5, built from tiny `transformers` configs: every operation known, every share of relevance accounted
for, conservation when nothing is added, the fused attention equal to the eager one, padding irrelevant."""
import pytest
import torch

import xaikit as xk
from llm_models import FAMILIES, SDPA_FAMILIES, llm, padded_prompts, zero_constants
from models import assert_unchanged, snapshot
from text_models import VOCAB, gpt2
from xaikit.generation import TokenLogits, sequence_inputs

torch.manual_seed(0)
IDS = torch.randint(3, VOCAB, (2, 7))
DECODER_IDS = torch.randint(3, VOCAB, (2, 3))


def _inputs(family: str, model, zero_decoder: bool = False) -> dict:
    """T5 explains a decoder logit at the encoder's tokens; the decoder's own token embeddings are then
    constants (reported as absorbed), or zero vectors where nothing may be absorbed."""
    if family != "t5":
        return {}
    if zero_decoder:
        return {"decoder_inputs_embeds": torch.zeros(2, 3, model.config.d_model, dtype=model.dtype)}
    return {"decoder_input_ids": DECODER_IDS}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_operation_known_and_every_share_accounted_for(family):
    """Float64, biases and constants as built: input + absorbed = start within 1e-4 of the logit, no unknown
    operation, the model unchanged."""
    model = llm(family).double()
    before = snapshot(model)
    for composite in ("attnlrp", "cp_lrp"):
        expl = xk.LRP(model, composite=composite)(IDS, target=xk.NextToken(-1),
                                                  forward_kwargs=_inputs(family, model))
        assert expl.info["coverage"]["unknown"] == {}, (composite, expl.info["coverage"]["unknown"])
        c = expl.info["conservation"]
        assert (c["residual"].abs() <= 1e-4 * c["start"].abs()).all(), (composite, c)
        assert expl.attribution.abs().sum() > 0
    assert_unchanged(model, before)


@pytest.mark.parametrize("family", FAMILIES)
def test_cp_lrp_conserves_when_no_constant_is_added(family):
    """With every additive constant zeroed (biases, position embeddings, T5's position bias and decoder
    token embeddings) and ε → 0, CP-LRP's relevance at the token embeddings sums to the explained logit."""
    model = zero_constants(llm(family)).double()
    expl = xk.LRP(model, composite="cp_lrp", epsilon=1e-12)(
        IDS, target=xk.NextToken(-1), forward_kwargs=_inputs(family, model, zero_decoder=True))
    c = expl.info["conservation"]
    assert (c["start"].abs() > 1e-3).all()  # a logit worth conserving
    torch.testing.assert_close(c["input"], c["start"], rtol=1e-3, atol=0)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("family", SDPA_FAMILIES)
def test_sdpa_and_eager_attention_give_the_same_relevance(family, composite):
    """The fused scaled_dot_product_attention (closed-form backward of the rules) and the eager attention
    (Q·Kᵀ, softmax and A·V handled one by one) of the same weights: same relevance, same absorbed share."""
    fused, eager = (xk.LRP(llm(family, attn), composite=composite)(IDS, target=xk.NextToken(-1))
                    for attn in ("sdpa", "eager"))
    assert any(k.startswith("scaled_dot_product_attention") for k in fused.info["coverage"]["handled"])
    assert not any(k.startswith("scaled_dot_product_attention") for k in eager.info["coverage"]["handled"])
    torch.testing.assert_close(fused.attribution, eager.attribution, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fused.info["conservation"]["absorbed"], eager.info["conservation"]["absorbed"],
                               rtol=1e-4, atol=1e-7)


LENGTHS = (7, 4, 5)


def _padded(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    return padded_prompts(LENGTHS, side, seed=1)


def _answer_target(mask: torch.Tensor, ids: torch.Tensor) -> TokenLogits:
    """The sum of the logits of each sequence's last two tokens, read at the positions predicting them."""
    last = torch.stack([row.nonzero().max() for row in mask])  # index of each sequence's last token
    positions = torch.stack([last - 2, last - 1], 1)
    return TokenLogits(positions, ids.gather(1, positions + 1))


@pytest.mark.parametrize("build", [lambda: llm("llama"), lambda: llm("mistral", "sdpa"), gpt2],
                         ids=["llama", "mistral-sdpa", "gpt2"])
@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_right_and_left_padding_give_each_token_the_relevance_it_has_alone(build, composite):
    """A multi-token target on a padded batch: the attention mask and position ids over the real tokens
    (GPT-2 has absolute positions; Mistral a sliding window) make every real token's relevance what it is
    when its sequence is explained alone; padding gets exactly 0."""
    model = build()
    lrp = xk.LRP(model, composite=composite)
    by_side = {}
    for side in ("right", "left"):
        ids, mask = _padded(side)
        expl = lrp(ids, _answer_target(mask, ids), forward_kwargs=sequence_inputs(model, mask))
        assert (expl.attribution[mask == 0] == 0).all()
        by_side[side] = [expl.attribution[i][mask[i] == 1] for i in range(len(LENGTHS))]
    ids, mask = _padded("right")
    for i, n in enumerate(LENGTHS):
        alone = lrp(ids[i:i + 1, :n], _answer_target(mask[i:i + 1, :n], ids[i:i + 1, :n])).attribution[0]
        torch.testing.assert_close(by_side["right"][i], alone, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(by_side["left"][i], alone, rtol=1e-4, atol=1e-6)
