"""The needle test, small: a transformer trained in seconds on the key–value retrieval task of
xaikit.zoo.needle; for the answer explained with AttnLRP (explain_answer, one pass), the top token of the
context is the needle (its value or its key) in ≥ 90 % of prompts longer than any seen in training, while the
same count on the untrained model is near chance (so the check can fail)."""
import torch

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.generation import explain_answer
from xaikit.zoo.needle import NeedleTransformer, make_needle, needle_accuracy, needle_vocabulary, train_needle_model

KEYS = 8


def _hits(model, data) -> tuple[float, float]:
    """Share of prompts whose top relevance over the context (the pairs, without the query) is the needle's
    value, and its value or key."""
    before = snapshot(model)
    result = explain_answer(xk.LRP(model, composite="attnlrp"), data.ids, data.answer[:, None])
    assert_unchanged(model, before)
    top = result.relevance[:, :data.ids.shape[1] - 2, 0].argmax(1)
    value = top == data.value_position
    return float(value.float().mean()), float((value | (top == data.key_position)).float().mean())


def test_attnlrp_finds_the_needle_beyond_the_training_length():
    model = train_needle_model(steps=300, lengths=(8, 24), width=32, keys=KEYS, values=KEYS, lr=1e-2, seed=0)
    data = make_needle(40, 96, KEYS, KEYS, torch.Generator().manual_seed(1))  # 4x the longest training prompt
    assert needle_accuracy(model, data) >= 0.95  # the model retrieves (a precondition of the check)
    value, either = _hits(model, data)
    assert either >= 0.9 and value >= 0.5
    torch.manual_seed(0)
    untrained = NeedleTransformer(needle_vocabulary(KEYS, KEYS), width=32).eval()
    assert _hits(untrained, data)[1] <= 0.25  # 2 of 94 context tokens: chance is about 2 %


def test_padding_is_invisible_to_the_needle_model():
    torch.manual_seed(0)
    model = NeedleTransformer(needle_vocabulary(KEYS, KEYS), width=16).eval()
    data = make_needle(2, 10, KEYS, KEYS, torch.Generator().manual_seed(2))
    ids = torch.cat([torch.zeros(2, 3, dtype=torch.long), data.ids], 1)
    mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones_like(data.ids)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask)[:, 3:], model(data.ids), rtol=1e-5, atol=1e-6)
