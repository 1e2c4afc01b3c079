"""Segments of a prompt: relevance summed per segment (against a sum written here), Shapley values and
leave-one-out over segments (against brute force over all orders), the log-probability scorer against the
one-pass answer explanation, clear errors for segment lists that do not fit the text."""
import itertools
import math

import pytest
import torch

import xaikit as xk
from llm_models import llm
from models import assert_unchanged, snapshot
from text_models import VOCAB
from xaikit.generation import explain_answer, explain_generation
from xaikit.generation.segments import (EXACT_LIMIT, AnswerLogProb, Segments, SegmentShapley, segment_relevance)

WORDS = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 4)]
TEXT = "w5 w6 w7. w8 w9 w10. w11 w12"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))  # ".": <unk>
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def model():
    return llm("llama", "sdpa", seed=5).double()


def _shapley_by_orders(value, s):
    """Shapley values by averaging marginal gains over all s! orders (the definition)."""
    phi = [0.0] * s
    orders = list(itertools.permutations(range(s)))
    for order in orders:
        kept = set()
        for k in order:
            before = value(frozenset(kept))
            kept.add(k)
            phi[k] += (value(frozenset(kept)) - before) / len(orders)
    return torch.tensor(phi, dtype=torch.float64)


def _random_game(segments, seed):
    """A score with interactions of every order: a random value per set of present segments (read from the text)."""
    table = torch.randn(2 ** len(segments), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    marks = [segments.text[s:e] for s, e in segments.spans]

    def present(text):
        return frozenset(k for k, m in enumerate(marks) if m in text)

    def value(kept):
        return float(table[sum(2 ** k for k in kept)])

    return (lambda texts: torch.tensor([value(present(t)) for t in texts])), value


def test_exact_shapley_and_leave_one_out_against_brute_force():
    text = "alpha one. beta two. gamma three. delta four."
    segments = Segments(text, ["alpha one.", "beta two.", "gamma three.", "delta four."])
    score, value = _random_game(segments, 0)
    result = SegmentShapley(score, batch_size=5)(segments)
    torch.testing.assert_close(result.values, _shapley_by_orders(value, 4))
    assert result.evaluations == 2 ** 4 and result.info["exact"]
    assert math.isclose(result.values.sum().item(), result.full - result.empty, abs_tol=1e-12)
    loo = SegmentShapley(score, method="leave_one_out")(segments)
    every = frozenset(range(4))
    torch.testing.assert_close(loo.values, torch.tensor([value(every) - value(every - {k}) for k in range(4)],
                                                        dtype=torch.float64))
    assert loo.evaluations == 4 + 2
    assert [row["segment"] for row in result._rows()] == segments.names


def test_sampled_shapley_is_efficient_and_exact_for_additive_scores():
    words = [f"word{i}" for i in range(EXACT_LIMIT + 2)]
    segments = Segments(" ".join(words), words)
    weights = torch.randn(len(words), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def additive(texts):
        return torch.stack([sum((w for word, w in zip(words, weights) if f"{word} " in t + " "),
                                torch.zeros((), dtype=torch.float64)) for t in texts])

    result = SegmentShapley(additive, permutations=8, seed=3)(segments)
    assert not result.info["exact"] and result.info["permutations"] == 8
    torch.testing.assert_close(result.values, weights)  # every order gives an additive score's exact gains
    score, _ = _random_game(segments, 2)
    sampled = SegmentShapley(score, permutations=6)(segments)
    assert math.isclose(sampled.values.sum().item(), sampled.full - sampled.empty, abs_tol=1e-9)
    again = SegmentShapley(score, permutations=6)(segments)
    torch.testing.assert_close(sampled.values, again.values)  # seeded


def test_segment_relevance_sums_tokens_by_their_segment(tokenizer, model):
    encoded = tokenizer([TEXT, "w9 w10. w11"], return_offsets_mapping=True)
    seg = [Segments(TEXT, {"first": "w5 w6 w7.", "second": "w8 w9 w10.", "third": "w11 w12"}),
           Segments("w9 w10. w11", {"a": "w9 w10.", "b": "w11"})]
    width = max(len(ids) for ids in encoded["input_ids"])
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(encoded["input_ids"]):
        ids[i, width - len(row):], mask[i, width - len(row):] = torch.tensor(row), 1
    before = snapshot(model)
    g = explain_generation(xk.LRP(model, composite="cp_lrp"), ids, mask, max_new_tokens=3)
    assert_unchanged(model, before)
    result = segment_relevance(g, seg, encoded["offset_mapping"])
    assert result.relevance.shape == (2, 3, 3) and result.row_names[1] == ["a", "b"]
    # by hand: the tokens of each segment (words and the period after them), at their left-padded columns
    first = g.relevance[0, width - 10:width]
    torch.testing.assert_close(result.relevance[0, 0], first[0:4].sum(0))
    torch.testing.assert_close(result.relevance[0, 1], first[4:8].sum(0))
    torch.testing.assert_close(result.relevance[0, 2], first[8:10].sum(0))
    second = g.relevance[1, width - 4:width]
    torch.testing.assert_close(result.relevance[1, :2], torch.stack([second[0:3].sum(0), second[3:4].sum(0)]))
    assert (result.relevance[1, 2] == 0).all()  # a segment the row does not have
    torch.testing.assert_close(result.relevance.sum(1) + result.rest, g.relevance.sum(1))  # nothing lost
    assert result.top(1)[0][0][0] in seg[0].names
    plain = segment_relevance(g.answer()[:, :width], seg, encoded["offset_mapping"], mask)
    torch.testing.assert_close(plain.relevance, result.relevance.sum(-1))


def test_answer_log_prob_scores_texts_as_the_one_pass_explanation(tokenizer, model):
    texts = [TEXT, "w9 w10. w11", "w7"]
    score = AnswerLogProb(model, tokenizer, "w20 w21")
    values = score(texts)
    for text, v in zip(texts, values):  # each text alone, by explain_answer's score
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        a = explain_answer(xk.InputXGradient(model), ids, torch.tensor([[24, 25]]), score="log_prob")
        assert math.isclose(float(v), float(a.scores[0, 0]), rel_tol=1e-6)
    segments = Segments(TEXT, ["w5 w6 w7.", "w8 w9 w10.", "w11 w12"])
    result = SegmentShapley(score)(segments)
    assert math.isclose(result.full, float(values[0]), rel_tol=1e-6)
    assert math.isclose(result.values.sum().item(), result.full - result.empty, rel_tol=1e-9, abs_tol=1e-9)


def test_segment_lists_that_do_not_fit_the_text_are_refused():
    with pytest.raises(ValueError, match=r"segments do not cover the text: characters 21..28 \('w11 w12'\)"):
        Segments(TEXT, ["w5 w6 w7.", "w8 w9 w10."])
    covered = Segments(TEXT, ["w5 w6 w7.", "w8 w9 w10."], uncovered="other")
    assert covered.names[-1] == "(other)" and covered.parts[-1] == [(21, 28)]
    with pytest.raises(ValueError, match=r"segments 'segment 0' \(0, 12\) and 'segment 1' \(10, 20\) overlap"):
        Segments(TEXT, [(0, 12), (10, 20), (20, 28)])
    with pytest.raises(ValueError, match=r"segments\['b'\] = 'w99' is not found in the text"):
        Segments(TEXT, {"a": TEXT, "b": "w99"})
    with pytest.raises(ValueError, match=r"segments\['segment 1'\] = \(5, 99\) is not a span of the text"):
        Segments(TEXT, [(0, 5), (5, 99)])
    with pytest.raises(TypeError, match="segments must be a non-empty list"):
        Segments(TEXT, "w5")
    with pytest.raises(ValueError, match="offsets\\[0\\] has 2 token spans, but sequence 0 has 3 prompt tokens"):
        segment_relevance(torch.zeros(1, 3), Segments("a b c", ["a b c"]), [[(0, 1), (2, 3)]])
    with pytest.raises(ValueError, match="score returned 1 values for 4 texts"):
        SegmentShapley(lambda texts: torch.zeros(1))(Segments("a b", ["a", "b"]))
