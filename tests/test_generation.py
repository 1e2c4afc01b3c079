"""Explaining what a causal LM generates: the tokens × generated matrix in one call, multi-token targets,
padding on either side, per-sample targets through chunking, the CLI on a model folder, clear errors."""
import json

import numpy as np
import pytest
import torch

import xaikit as xk
from llm_models import llm, padded_prompts
from models import assert_unchanged, snapshot
from text_models import VOCAB
from xaikit.generation import (TokenLogits, explain_answer, explain_generation, greedy_continuation, repad,
                               sequence_inputs)
from xaikit.targets import resolve_target, slice_target

LENGTHS = (6, 3, 5)
STEPS = 4


def prompts(side: str = "right"):
    return padded_prompts(LENGTHS, side)


@pytest.fixture(scope="module")
def model():
    return llm("llama", "sdpa", seed=3).double()


def _count_calls(method):
    calls = []
    explain = method.explain

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return explain(*args, **kwargs)

    method.explain = counted
    return calls


def _count_forwards(model):
    """The batch shapes of the model's forward passes (a hook, removed by the caller)."""
    calls = []
    return calls, model.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))


def test_every_generated_token_explained_on_one_forward_pass(model):
    ids, mask = prompts()
    before = snapshot(model)
    lrp = xk.LRP(model, composite="attnlrp")
    calls, hook = _count_forwards(model)
    try:
        g = explain_generation(lrp, ids, mask, max_new_tokens=STEPS)
    finally:
        hook.remove()
    assert_unchanged(model, before)
    # greedy decoding on the key/value cache (the prompts, then one token per step), then ONE explained forward
    # pass over the whole sequences shared by the STEPS targets
    n, length = ids.shape
    assert calls == [(n, length)] + [(n, 1)] * (STEPS - 1) + [(n, length + STEPS)]
    assert g.info["shared_forward"] is True
    n, length = ids.shape
    assert g.relevance.shape == (n, length + STEPS, STEPS) and g.prompt_length == length
    # the sequences: each prompt, left-padded, then its continuation
    left, left_mask = repad(ids, mask, "left")
    torch.testing.assert_close(g.sequences[:, :length], left)
    torch.testing.assert_close(g.attention_mask[:, :length], left_mask)
    # the continuation is greedy and the explained values are the logits that chose it
    with torch.no_grad():
        logits = model(g.sequences, **sequence_inputs(model, g.attention_mask)).logits
    chosen = logits[:, length - 1:-1]
    torch.testing.assert_close(g.generated, chosen.argmax(-1))
    torch.testing.assert_close(g.scores, chosen.gather(-1, g.generated[..., None])[..., 0])
    c = g.info["conservation"]
    assert c["residual"].shape == (n, STEPS) and (c["residual"].abs() <= 1e-4 * c["start"].abs()).all()
    # causal: no relevance for the generated token itself or later ones; padding gets none
    later = torch.arange(length + STEPS)[:, None] >= length + torch.arange(STEPS)[None, :]
    assert (g.relevance[:, later] == 0).all()
    assert (g.relevance[g.attention_mask == 0] == 0).all()
    assert (g.relevance[:, :length][left_mask == 1] != 0).all()


def test_greedy_continuation_equals_hugging_face_generate(model):
    ids, mask = prompts("left")
    new, explained = greedy_continuation(model, ids, mask, STEPS)
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
                                   pad_token_id=0, eos_token_id=None)
    torch.testing.assert_close(new, reference[:, ids.shape[1]:])
    assert (explained == 1).all()


def test_answer_target_is_the_sum_of_the_per_token_relevances(model):
    """The rules are linear in the starting relevance: explaining the sum of the answer's logits in one pass
    gives the row sums of the tokens × generated matrix."""
    ids, mask = prompts()
    for composite in ("attnlrp", "cp_lrp"):
        lrp = xk.LRP(model, composite=composite)
        g = explain_generation(lrp, ids, mask, max_new_tokens=STEPS)
        answer = explain_answer(lrp, ids, g.generated, mask)
        assert answer.relevance.shape == (len(LENGTHS), ids.shape[1] + STEPS, 1)
        torch.testing.assert_close(answer.scores[:, 0], g.scores.sum(1))
        torch.testing.assert_close(answer.relevance[..., 0], g.answer(), rtol=1e-6, atol=1e-9)


def test_answers_of_different_lengths(model):
    """answer_mask: a shorter answer's padding is neither explained nor counted."""
    ids, mask = prompts()
    lrp = xk.LRP(model, composite="cp_lrp")
    answer = torch.randint(3, VOCAB, (len(LENGTHS), 3), generator=torch.Generator().manual_seed(5))
    answer_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    both = explain_answer(lrp, ids, answer, mask, answer_mask)
    for i in range(len(LENGTHS)):
        keep = int(answer_mask[i].sum())
        alone = explain_answer(lrp, ids[i:i + 1, :LENGTHS[i]], answer[i:i + 1, :keep])
        real = both.attention_mask[i] == 1
        torch.testing.assert_close(both.relevance[i, real, 0], alone.relevance[0, :, 0], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(both.scores[i], alone.scores[0])


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_padding_side_and_batch_do_not_change_the_matrix(model, composite):
    """Right- or left-padded prompts in a batch give each real token the relevance it has when its prompt is
    explained alone (the mask and position ids over the real tokens make padding invisible)."""
    lrp = xk.LRP(model, composite=composite)
    right = explain_generation(lrp, *prompts("right"), max_new_tokens=STEPS)
    left = explain_generation(lrp, *prompts("left"), max_new_tokens=STEPS)
    torch.testing.assert_close(right.relevance, left.relevance)
    ids, mask = prompts("right")
    for i, n in enumerate(LENGTHS):
        alone = explain_generation(lrp, ids[i:i + 1, :n], max_new_tokens=STEPS)
        torch.testing.assert_close(right.generated[i], alone.generated[0])
        real = right.attention_mask[i] == 1
        torch.testing.assert_close(right.relevance[i, real], alone.relevance[0], rtol=1e-5, atol=1e-8)


def test_per_sample_targets_survive_chunking_and_report_their_token(model):
    ids, mask = prompts()
    g = explain_generation(xk.LRP(model, composite="cp_lrp", batch_size=1), ids, mask, max_new_tokens=STEPS)
    h = explain_generation(xk.LRP(model, composite="cp_lrp", batch_size=5), ids, mask, max_new_tokens=STEPS)
    torch.testing.assert_close(g.relevance, h.relevance)
    torch.testing.assert_close(g.info["conservation"]["absorbed"], h.info["conservation"]["absorbed"])
    target = TokenLogits([[1], [2], [0]], [[7], [8], [9]])
    expl = xk.InputXGradient(model)(ids, target, forward_kwargs=sequence_inputs(model, mask))
    assert expl.target.tolist() == [7, 8, 9]
    resolved = resolve_target(target, expl.output)
    torch.testing.assert_close(resolved.select(torch.tensor([2, 0])).score(expl.output[[2, 0]]),
                               expl.output[[2, 0], [0, 1], [9, 7]])
    repeated = resolved.repeat_interleave(2)
    torch.testing.assert_close(repeated.score(expl.output.repeat_interleave(2, 0)),
                               target(expl.output).repeat_interleave(2))
    assert slice_target(target, 1, 3, 3).tokens.tolist() == [[8], [9]]
    shared = TokenLogits([-2, -1], [4, 5])  # the same slots for every sample: a two-token sum, reported as −1
    expl = xk.InputXGradient(model)(ids, shared, forward_kwargs=sequence_inputs(model, mask))
    assert expl.target.tolist() == [-1, -1, -1]
    torch.testing.assert_close(expl.info["score"], expl.output[:, -2, 4] + expl.output[:, -1, 5])


def test_end_of_sequence_stops_a_sequence(model):
    ids, mask = prompts()
    first = explain_generation(xk.InputXGradient(model), ids, mask, max_new_tokens=STEPS)
    eos = int(first.generated[0, 1])  # sequence 0 ends at its second token (others may too)
    g = explain_generation(xk.LRP(model, composite="cp_lrp"), ids, mask, max_new_tokens=STEPS, eos_token_id=eos)
    ended = (g.generated == eos).long().cumsum(1)
    stopped = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1) > 0  # tokens after the end
    assert g.generated_mask[0].tolist() == [1, 1, 0, 0]
    torch.testing.assert_close(g.generated_mask, (~stopped).long())
    assert (g.relevance[..., :][stopped[:, None, :].expand_as(g.relevance)] == 0).all()
    assert (g.scores[stopped] == 0).all()


def test_clear_errors(model):
    ids, mask = prompts()
    lrp = xk.LRP(model, composite="cp_lrp")
    with pytest.raises(TypeError, match="method must be an xaikit method"):
        explain_generation(model, ids, mask)
    with pytest.raises(ValueError, match="for decoder-only language models"):
        explain_generation(xk.LRP(llm("t5")), ids, mask)
    with pytest.raises(TypeError, match="does not explain token ids"):
        explain_generation(xk.DeepLift(model), ids, mask)
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        explain_generation(lrp, ids.float(), mask)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 5\)"):
        explain_generation(lrp, ids, mask[:, :5])
    with pytest.raises(ValueError, match="a sequence without any token"):
        explain_generation(lrp, ids, mask * 0)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        explain_generation(lrp, ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"forward_kwargs\['position_ids'\] is built by explain_generation"):
        explain_generation(lrp, ids, mask, forward_kwargs={"position_ids": mask})
    with pytest.raises(ValueError, match="continuation has 2 sequences, ids has 3"):
        explain_generation(lrp, ids, mask, continuation=ids[:2])
    with pytest.raises(ValueError, match="answer_mask must mark each answer's tokens first"):
        explain_answer(lrp, ids, ids[:, :2], mask, torch.tensor([[0, 1], [1, 1], [1, 1]]))
    with pytest.raises(ValueError, match="TokenLogits positions, tokens and mask must have the same shape"):
        TokenLogits([[1, 2]], [[1], [2]])
    with pytest.raises(TypeError, match="TokenLogits tokens must hold integers"):
        TokenLogits([1], [0.5])
    with pytest.raises(ValueError, match="target position 9 is beyond the sequence of length 6"):
        lrp(ids, TokenLogits([9], [1]))
    with pytest.raises(ValueError, match="target token 99 is outside the vocabulary"):
        lrp(ids, TokenLogits([1], [99]))
    with pytest.raises(ValueError, match="target has 2 rows but the batch has 3 samples"):
        lrp(ids, TokenLogits([[1], [2]], [[1], [2]]))


# -- the command line -----------------------------------------------------------------------------------------
WORDS = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 4)]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny Llama and a word-level tokenizer of its vocabulary, saved as a Hugging Face model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    llm("llama", seed=4).save_pretrained(folder)
    return folder


def test_cli_explains_the_generated_answer(capsys, tmp_path, model_folder):
    from transformers import AutoModelForCausalLM

    from xaikit.cli import main

    out = tmp_path / "out"
    texts = ["w1 w2 w3 w4", "w9 w8"]
    code = main(["explain", "-m", str(model_folder), "--text", texts[0], "--text", texts[1], "--max-new-tokens",
                 "3", "--methods", "lrp:composite=attnlrp", "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    arrays = np.load(out / "attributions.npz")
    matrix = arrays["LRP(attnlrp)"]
    assert matrix.shape == (2, 4 + 3, 3)
    model = AutoModelForCausalLM.from_pretrained(model_folder).eval()
    ids = torch.tensor([[5, 6, 7, 8], [13, 12, 0, 0]])
    mask = (ids != 0).long()
    expected = explain_generation(xk.LRP(model, composite="attnlrp"), ids, mask, max_new_tokens=3,
                                  eos_token_id=2)
    np.testing.assert_allclose(matrix, expected.relevance.numpy(), rtol=1e-5, atol=1e-8)
    summary = json.loads((out / "summary.json").read_text())
    words = [WORDS[i] for i in expected.generated[0][expected.generated_mask[0] == 1].tolist()]
    assert summary["inputs"][0] == {"name": "text0", "prompt": texts[0], "answer": " ".join(words)}
    page = (out / "index.html").read_text()
    lines = len(texts) + int(expected.generated_mask.sum())  # per prompt: the whole answer, each token
    assert "whole answer" in page and page.count('class="seq"') == lines
    assert f"→ {words[0]}: " in page
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    code = main(["explain", "-m", str(model_folder), "--inputs", str(tmp_path / "x.npy"), "-o",
                 str(tmp_path / "bad"), "--quiet"])
    assert code == 2 and "explains text prompts" in capsys.readouterr().err


# -- one forward pass for all columns, the key/value cache, generate outputs, log-probabilities ----------------
@pytest.mark.parametrize("name", ["attnlrp", "input_x_gradient"])
def test_each_column_equals_its_target_explained_alone(model, name):
    """The shared forward pass with one backward pass per generated token gives each column (and, for LRP, its
    absorbed relevance) exactly what the method gives for that token's target alone."""
    ids, mask = prompts()
    method = xk.LRP(model, composite=name) if name == "attnlrp" else xk.InputXGradient(model)
    g = explain_generation(method, ids, mask, max_new_tokens=STEPS)
    length = ids.shape[1]
    for j in range(STEPS):
        target = TokenLogits(torch.full((len(LENGTHS), 1), length - 1 + j), g.generated[:, j:j + 1])
        alone = method(g.sequences, target, forward_kwargs=sequence_inputs(model, g.attention_mask))
        torch.testing.assert_close(g.relevance[..., j], alone.attribution, rtol=1e-7, atol=1e-10)
        if name == "attnlrp":
            for key in ("start", "absorbed", "residual"):
                torch.testing.assert_close(g.info["conservation"][key][:, j], alone.info["conservation"][key])


def test_cached_and_uncached_decoding_agree(model):
    ids, mask = prompts("left")
    eos = int(greedy_continuation(model, ids, mask, 2)[0][0, 1])
    cached = greedy_continuation(model, ids, mask, STEPS, eos_token_id=eos)
    plain = greedy_continuation(model, ids, mask, STEPS, eos_token_id=eos, cache=False)
    torch.testing.assert_close(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1])
    assert cached[1][0].tolist() == [1, 1, 0, 0]


def test_hugging_face_generate_outputs_as_they_are(model):
    """model.generate's tensor and its return_dict_in_generate output give the matrix of the new tokens; the
    padding generate puts after an end-of-sequence token is not explained."""
    ids, mask = prompts("left")
    lrp = xk.LRP(model, composite="cp_lrp")
    kwargs = dict(attention_mask=mask, max_new_tokens=STEPS, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = model.generate(ids, eos_token_id=None, **kwargs)
        first = int(plain[0, ids.shape[1] + 1])
        ended = model.generate(ids, eos_token_id=first, return_dict_in_generate=True, **kwargs)
    reference = explain_generation(lrp, ids, mask, continuation=plain[:, ids.shape[1]:])
    given = explain_generation(lrp, ids, mask, continuation=plain)
    torch.testing.assert_close(given.relevance, reference.relevance)
    g = explain_generation(lrp, ids, mask, continuation=ended, eos_token_id=first)
    greedy = explain_generation(lrp, ids, mask, max_new_tokens=STEPS, eos_token_id=first)
    torch.testing.assert_close(g.generated_mask, greedy.generated_mask)
    assert g.generated_mask[0].tolist() == [1, 1, 0, 0]
    real = g.generated_mask.bool()
    torch.testing.assert_close(g.generated[real], greedy.generated[real])
    torch.testing.assert_close(g.relevance[:, :, :2], greedy.relevance[:, :, :2])
    with pytest.raises(ValueError, match="generate_output of shape .* does not start with the prompts"):
        from xaikit.generation import split_generate_output
        split_generate_output(plain, ids.flip(1))


def test_answer_log_likelihood_in_one_pass(model):
    """score='log_prob': the explained value is the answer's log-likelihood (brute force), gradient × input is
    that of the log-likelihood, LRP books the log-softmax's bias (minus the entropies) so that nothing is
    residual, and the answer's relevance is the row sum of the per-token matrix."""
    ids, mask = prompts()
    answer = torch.randint(3, VOCAB, (len(LENGTHS), 3), generator=torch.Generator().manual_seed(7))
    ixg = explain_answer(xk.InputXGradient(model), ids, answer, mask, score="log_prob")
    with torch.no_grad():
        logits = model(ixg.sequences, **sequence_inputs(model, ixg.attention_mask)).logits
    p = ids.shape[1]
    logp = logits[:, p - 1:-1].log_softmax(-1)
    torch.testing.assert_close(ixg.scores[:, 0], logp.gather(-1, answer[..., None])[..., 0].sum(1))
    vectors = model.get_input_embeddings()(ixg.sequences).detach().requires_grad_(True)
    out = model(inputs_embeds=vectors, **sequence_inputs(model, ixg.attention_mask)).logits
    total = out[:, p - 1:-1].log_softmax(-1).gather(-1, answer[..., None]).sum()
    (grad,) = torch.autograd.grad(total, vectors)
    torch.testing.assert_close(ixg.relevance[..., 0], (grad * vectors).sum(-1).detach())
    lrp = xk.LRP(model, composite="cp_lrp")
    a = explain_answer(lrp, ids, answer, mask, score="log_prob")
    c = a.info["conservation"]
    entropy = -(logp.exp() * logp).sum(-1).sum(1)
    torch.testing.assert_close(c["absorbed_by"]["log_softmax:taylor"][:, 0], -entropy)
    assert (c["residual"].abs() <= 1e-8 * c["start"].abs()).all()
    g = explain_generation(lrp, ids, mask, continuation=answer, score="log_prob")
    torch.testing.assert_close(a.relevance[..., 0], g.answer(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(a.scores[:, 0], g.scores.sum(1))


def test_bad_answers_and_scores_are_named(model):
    ids, mask = prompts()
    lrp = xk.LRP(model, composite="cp_lrp")
    with pytest.raises(ValueError, match=rf"answer holds token id {VOCAB + 5}, outside the model's vocabulary"):
        explain_answer(lrp, ids, torch.full((3, 2), VOCAB + 5), mask)
    with pytest.raises(ValueError, match=r"continuation holds token id -1, outside the model's vocabulary"):
        explain_generation(lrp, ids, mask, continuation=torch.full((3, 2), -1))
    with pytest.raises(ValueError, match=r"ids holds token id 99, outside"):
        explain_generation(lrp, ids.masked_fill(mask == 1, 99), mask)
    with pytest.raises(ValueError, match="score must be one of 'logit', 'log_prob'"):
        explain_answer(lrp, ids, ids[:, :1], mask, score="prob")


@pytest.mark.parametrize("score", ["logit", "log_prob"])
def test_generated_answer_as_a_whole_in_one_backward_pass(model, score, monkeypatch):
    """per_token=False: the greedy continuation explained as one answer, one forward and ONE backward pass after
    the generation; it equals the sum of the matrix's columns (float64) and explain_answer of the same tokens."""
    ids, mask = prompts()
    lrp = xk.LRP(model, composite="attnlrp")
    grad, backwards = torch.autograd.grad, []
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or grad(*a, **k))
    matrix = explain_generation(lrp, ids, mask, max_new_tokens=STEPS, score=score)
    assert len(backwards) == STEPS
    before = snapshot(model)
    with torch.no_grad():
        decoded = greedy_continuation(model, *repad(ids, mask, "left"), STEPS)
    forwards, hook = _count_forwards(model)
    try:
        whole = explain_generation(lrp, ids, mask, max_new_tokens=STEPS, score=score, per_token=False)
    finally:
        hook.remove()
    assert_unchanged(model, before)
    # the generation on the cache (as greedy_continuation alone), then one forward and one backward pass
    assert len(forwards) == STEPS + 1 and len(backwards) == STEPS + 1, (forwards, backwards)
    assert whole.info["per_token"] is False and matrix.info["per_token"] is True
    torch.testing.assert_close(whole.generated, decoded[0])
    assert whole.relevance.shape == (len(LENGTHS), ids.shape[1] + STEPS, 1)
    torch.testing.assert_close(whole.generated, matrix.generated)
    torch.testing.assert_close(whole.relevance[..., 0], matrix.relevance.sum(-1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(whole.scores[:, 0], matrix.scores.sum(1), rtol=1e-10, atol=1e-10)
    answer = explain_answer(lrp, ids, matrix.generated, mask, score=score)
    torch.testing.assert_close(whole.relevance, answer.relevance, rtol=1e-10, atol=1e-12)
    c = whole.info["conservation"]
    torch.testing.assert_close(c["start"], c["input"] + c["absorbed"] + c["residual"])
    assert len(whole.to_pandas()) == len(LENGTHS)  # one row per answer
    with pytest.raises(TypeError, match="per_token must be True .* or False"):
        explain_generation(lrp, ids, mask, per_token="no")


def test_contexts_beyond_the_position_limit_are_refused_before_generating(model):
    limit = model.config.max_position_embeddings
    ids, mask = prompts()
    lrp = xk.LRP(model, composite="cp_lrp")
    calls, hook = _count_forwards(model)
    try:
        with pytest.raises(ValueError, match=rf"longest prompt of ids has 6 tokens and max_new_tokens adds "
                                             rf"{limit - 5}: {limit + 1} tokens, more than the model's position "
                                             rf"limit \({limit}"):
            explain_generation(lrp, ids, mask, max_new_tokens=limit - 5)
        with pytest.raises(ValueError, match=r"and answer adds .* position limit"):
            explain_answer(lrp, ids, torch.ones(3, limit - 5, dtype=torch.long), mask)
        with pytest.raises(ValueError, match=r"and continuation adds .* position limit"):
            explain_generation(lrp, ids, mask, continuation=torch.ones(3, limit, dtype=torch.long))
    finally:
        hook.remove()
    assert calls == []  # refused before any forward pass
    # the limit counts real tokens: the padded prompts plus limit − 6 new tokens still fit
    g = explain_generation(xk.InputXGradient(model), ids, mask, continuation=torch.ones(3, limit - 6, dtype=torch.long),
                           per_token=False)
    assert g.relevance.shape == (3, ids.shape[1] + limit - 6, 1)


@pytest.mark.parametrize("name", ["attnlrp", "input_x_gradient"])
def test_the_answer_as_a_whole_rematerialises_like_the_methods(model, name, monkeypatch):
    """remat=True on the method: the one-column pass (explain_answer, per_token=False) recomputes the model's
    blocks in its backward pass and gives the plain pass's relevance and conservation; the per-token matrix
    (one backward pass per token on one forward pass) cannot, and says so."""
    ids, mask = prompts()
    build = (lambda remat: xk.LRP(model, composite="attnlrp", remat=remat)) if name == "attnlrp" else \
        (lambda remat: xk.InputXGradient(model, remat=remat))
    before = snapshot(model)
    from xaikit.propagation import remat as remat_module
    recomputed, backward = [], remat_module._Call.backward
    monkeypatch.setattr(remat_module._Call, "backward", lambda *a: recomputed.append(1) or backward(*a))
    plain = explain_generation(build(False), ids, mask, max_new_tokens=STEPS, per_token=False)
    assert recomputed == []
    remat = explain_generation(build(True), ids, mask, max_new_tokens=STEPS, per_token=False)
    assert len(recomputed) == model.config.num_hidden_layers  # each block recomputed once
    assert_unchanged(model, before)
    assert remat.info["remat"] is True and plain.info["remat"] is False
    torch.testing.assert_close(remat.relevance, plain.relevance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(remat.scores, plain.scores, rtol=1e-12, atol=1e-12)
    if name == "attnlrp":
        for key in ("absorbed", "residual"):
            torch.testing.assert_close(remat.info["conservation"][key], plain.info["conservation"][key],
                                       rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"remat=True, but the per-token matrix .*\(per_token=False"):
        explain_generation(build(True), ids, mask, max_new_tokens=STEPS)
    assert_unchanged(model, before)


@pytest.mark.filterwarnings("ignore:model is in training mode")
def test_a_model_in_training_mode_is_left_unchanged_and_explained_as_in_eval_mode(model):
    """explain_generation (the matrix and the answer as a whole) and explain_answer on a model in training mode
    (mixed flags: one decoder layer in eval mode): parameters, buffers, hooks and every module's flag come back
    as they were, and the relevance equals that of the same model in eval mode."""
    ids, mask = prompts()
    trained = llm("llama", "sdpa", seed=3).double().train()
    trained.model.layers[0].eval()
    lrp, reference = xk.LRP(trained, composite="attnlrp"), xk.LRP(model, composite="attnlrp")
    answer = torch.tensor([[5, 7], [8, 9], [10, 11]])
    before = snapshot(trained)
    calls = {"matrix": lambda method: explain_generation(method, ids, mask, max_new_tokens=2),
             "whole": lambda method: explain_generation(method, ids, mask, max_new_tokens=2, per_token=False),
             "answer": lambda method: explain_answer(method, ids, answer, mask)}
    for name, call in calls.items():
        got = call(lrp)
        assert_unchanged(trained, before)
        assert torch.allclose(got.relevance, call(reference).relevance, rtol=1e-10, atol=1e-12), name
