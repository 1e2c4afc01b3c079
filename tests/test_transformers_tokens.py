"""Token-id inputs (explained at the input embedding), sequence targets, clear errors, MiniLM."""
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, mlp, snapshot
from text_models import VOCAB, RecurrentClassifier, bert, bert_encoder, bias_free, gpt2
from xaikit.tokens import TokenInput
from xaikit.zoo.text import SentenceEncoder

torch.manual_seed(0)
IDS = torch.randint(1, VOCAB, (3, 7))
MASK = torch.ones_like(IDS)
MASK[1, 5:] = 0
MASK[2, 4:] = 0


class FromEmbeddings(nn.Module):
    """The same BERT fed with embedding vectors (the Hugging Face inputs_embeds path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, vectors, attention_mask=None):
        return self.model(inputs_embeds=vectors, attention_mask=attention_mask).logits


def test_token_ids_are_explained_at_the_embedding_output():
    """Relevance per token of ids = the embedding-vector relevance summed over the embedding dimension."""
    model = bert()
    kwargs = {"attention_mask": MASK}
    by_ids = xk.LRP(model, composite="attnlrp")(IDS, target=1, forward_kwargs=kwargs)
    vectors = model.get_input_embeddings()(IDS).detach()
    by_vectors = xk.LRP(FromEmbeddings(model).eval(), composite="attnlrp")(vectors, target=1, forward_kwargs=kwargs)
    assert by_ids.attribution.shape == IDS.shape and by_vectors.attribution.shape == vectors.shape
    torch.testing.assert_close(by_ids.attribution, by_vectors.attribution.sum(-1), rtol=1e-5, atol=1e-8)
    ixg = xk.InputXGradient(model)(IDS, target=1, forward_kwargs=kwargs)
    ixg_vectors = xk.InputXGradient(FromEmbeddings(model).eval())(vectors, target=1, forward_kwargs=kwargs)
    torch.testing.assert_close(ixg.attribution, ixg_vectors.attribution.sum(-1), rtol=1e-5, atol=1e-8)
    grad = xk.Gradient(model)(IDS, target=1, forward_kwargs=kwargs)
    grad_vectors = xk.Gradient(FromEmbeddings(model).eval())(vectors, target=1, forward_kwargs=kwargs)
    torch.testing.assert_close(grad.attribution, grad_vectors.attribution.norm(dim=-1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_batch_size_invariance_with_masks(composite):
    model = bert()
    kwargs = {"attention_mask": MASK}
    results = [xk.LRP(model, composite=composite, batch_size=b)(IDS, target=[0, 1, 2], forward_kwargs=kwargs)
               for b in (1, 3, "auto")]
    for other in results[1:]:
        torch.testing.assert_close(results[0].attribution, other.attribution, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(results[0].info["conservation"]["absorbed"],
                                   other.info["conservation"]["absorbed"], rtol=1e-5, atol=1e-8)


def test_padding_gets_no_relevance_under_mean_pooling():
    """A padded token is neither pooled nor attended to: its relevance is exactly zero."""
    encoder = SentenceEncoder(bert_encoder()).eval()
    for composite in ("attnlrp", "cp_lrp"):
        expl = xk.LRP(encoder, composite=composite)(IDS, target=3, forward_kwargs={"attention_mask": MASK})
        assert (expl.attribution[MASK == 0] == 0).all()
        assert (expl.attribution[MASK == 1] != 0).all()


def test_next_token_target_and_recurrent_model_on_ids():
    model = gpt2()
    expl = xk.LRP(model, composite="attnlrp")(IDS, target=xk.NextToken(3, token=5))
    with torch.no_grad():
        logits = model(IDS).logits
    torch.testing.assert_close(expl.info["conservation"]["start"], logits[:, 3, 5])
    assert (expl.attribution[:, 4:] == 0).all()  # causal: later tokens cannot matter at position 3
    predicted = xk.LRP(model, composite="attnlrp")(IDS, target=xk.NextToken())
    torch.testing.assert_close(predicted.info["conservation"]["start"], logits[:, -1].max(-1).values)
    rnn = RecurrentClassifier(nn.GRU).eval()
    expl = xk.LRP(rnn, composite="epsilon")(IDS, target=0)
    assert expl.attribution.shape == IDS.shape  # the only nn.Embedding is found without get_input_embeddings


def test_callable_target():
    model = bert()
    expl = xk.LRP(model, composite="cp_lrp")(IDS, target=lambda out: out[:, 0] - out[:, 2])
    assert expl.target.tolist() == [-1, -1, -1]
    with torch.no_grad():
        logits = model(IDS).logits
    torch.testing.assert_close(expl.info["conservation"]["start"], logits[:, 0] - logits[:, 2])


def test_clear_errors_and_model_unchanged():
    model = bert()
    before = snapshot(model)
    lrp = xk.LRP(model, composite="attnlrp")
    bad = IDS.clone()
    bad[1, 2] = VOCAB + 3
    with pytest.raises(ValueError, match=rf"token id {VOCAB + 3}.*valid: 0..{VOCAB - 1}"):
        lrp(bad, target=0)
    with pytest.raises(ValueError, match="token id -1"):
        lrp(torch.full_like(IDS, -1), target=0)
    with pytest.raises(ValueError, match=r"attention_mask'\] has shape \(3, 5\).*shape \(3, 7\)"):
        lrp(IDS, target=0, forward_kwargs={"attention_mask": MASK[:, :5]})
    lm = gpt2()
    with pytest.raises(ValueError, match="position 7 is beyond the sequence of length 7"):
        xk.LRP(lm, composite="attnlrp")(IDS, target=xk.NextToken(7))
    with pytest.raises(ValueError, match="token 99 is outside the vocabulary"):
        xk.InputXGradient(lm)(IDS, target=xk.NextToken(-1, token=99))
    with pytest.raises(ValueError, match="NextToken needs a model output of shape"):
        lrp(IDS, target=xk.NextToken())
    with pytest.raises(ValueError, match="embedding 'bert.embedings' is not a module.*word_embeddings"):
        xk.LRP(model, embedding="bert.embedings")
    with pytest.raises(TypeError, match="x must be a floating-point tensor.*embedding="):
        xk.LRP(mlp().eval())(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids x must have shape"):
        lrp(IDS[0], target=0)
    assert_unchanged(model, before)


def test_explicit_embedding_module_and_double_call_error():
    model = bert()
    by_name = xk.LRP(model, composite="cp_lrp", embedding="bert.embeddings.word_embeddings")(IDS, target=0)
    auto = xk.LRP(model, composite="cp_lrp")(IDS, target=0)
    torch.testing.assert_close(by_name.attribution, auto.attribution)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids):
            return self.head(self.embed(ids).mean(1) + self.embed(ids).mean(1))

    model = Twice().eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match="calls its input embedding more than once"):
        xk.LRP(model, composite="epsilon")(IDS, target=0)
    assert_unchanged(model, before)
    assert TokenInput(model).dim() == 4


@pytest.fixture(scope="module")
def keyword_task():
    from xaikit.zoo.text import keyword_task

    return keyword_task(n_train=96, n_test=16)


def test_minilm_attnlrp_finds_the_keyword(keyword_task):
    """all-MiniLM-L6-v2 with a linear probe detecting keywords: the most relevant token of a positive
    sentence is its keyword; the model is unchanged; no unknown operation on the real BERT."""
    task = keyword_task
    assert task.accuracy >= 0.9
    model = task.model
    before = snapshot(model)
    expl = xk.LRP(model, composite="attnlrp")(task.input_ids, target=1,
                                              forward_kwargs={"attention_mask": task.attention_mask})
    assert_unchanged(model, before)
    assert expl.info["coverage"]["unknown"] == {}
    positive = task.labels == 1
    top = expl.attribution.masked_fill(task.attention_mask == 0, float("-inf")).argmax(1)
    hits = task.keyword_mask[torch.arange(len(top)), top][positive].float().mean()
    assert hits >= 0.9
    assert (expl.attribution[task.attention_mask == 0] == 0).all()
