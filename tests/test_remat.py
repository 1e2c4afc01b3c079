"""Rematerialised relevance (xaikit.propagation.remat): each decoder layer recomputed in the backward pass under
the same rules gives the relevance of the plain engine, conserves as it does, and leaves the model as it was."""
from __future__ import annotations

import pytest
import torch

import xaikit as xk
from llm_models import _config
from models import assert_unchanged, snapshot
from text_models import _quiet
from xaikit.propagation import remat as remat_module
from xaikit.propagation.remat import find_blocks

LENGTH = 256


def long_llm(family: str, dtype: torch.dtype = torch.float32, layers: int = 2):
    """A tiny model of ``family`` (tests/llm_models.py) whose position limit admits LENGTH tokens, SDPA attention."""
    cls, config = _config(family, "sdpa")
    config.max_position_embeddings, config.num_hidden_layers = 2 * LENGTH, layers
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = _quiet(lambda: cls(config).eval())
    with torch.no_grad():  # norm weights away from 1, so that a wrong norm rule would show
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(torch.rand_like(p) * 0.5)
    return model.to(dtype)


def ids_for(model, n: int = 2, length: int = LENGTH) -> torch.Tensor:
    return torch.randint(3, model.config.vocab_size, (n, length), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def llama():
    return long_llm("llama", layers=3)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


METHODS = {
    "attnlrp": lambda model, remat: xk.LRP(model, composite="attnlrp", remat=remat),
    "cp_lrp": lambda model, remat: xk.LRP(model, composite="cp_lrp", remat=remat),
    "input_x_gradient": lambda model, remat: xk.InputXGradient(model, remat=remat),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_remat_equals_the_plain_engine(llama, method):
    ids = ids_for(llama)
    calls = []
    backward = remat_module._Call.backward

    def counting(self, acts, grads):  # each layer is recomputed once per chunk of the batch
        calls.append(self)
        return backward(self, acts, grads)

    before = snapshot(llama)
    kwargs = {"use_cache": False}  # (a rematerialised pass runs without cache: the same operations then)
    plain = METHODS[method](llama, False)(ids, target=xk.NextToken(-1), forward_kwargs=kwargs)
    remat_module._Call.backward = counting
    try:
        remat = METHODS[method](llama, True)(ids, target=xk.NextToken(-1), forward_kwargs=kwargs)
    finally:
        remat_module._Call.backward = backward
    assert_unchanged(llama, before)
    assert not any("forward" in vars(block) for block in find_blocks(llama))
    assert remat.info["remat"] and not plain.info["remat"]
    assert len(calls) >= 3 and len(calls) % 3 == 0
    assert remat.attribution.shape == (2, LENGTH)
    assert rel_l2(remat.attribution, plain.attribution) <= 1e-5
    assert torch.equal(remat.target, plain.target)
    assert remat.output.shape == (2, 1, llama.config.vocab_size)  # logits at the explained position only
    torch.testing.assert_close(remat.output[:, -1], plain.output[:, -1], rtol=1e-5, atol=1e-6)
    if method != "input_x_gradient":
        assert remat.info["coverage"] == plain.info["coverage"]  # every operation of every layer met its rule
        assert not remat.info["coverage"]["unknown"]
        a, b = remat.info["conservation"], plain.info["conservation"]
        torch.testing.assert_close(a["absorbed"], b["absorbed"], rtol=1e-4, atol=1e-6)
        assert a["absorbed_by"].keys() == b["absorbed_by"].keys()


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
def test_remat_conserves(composite):
    """float64: Σ relevance + absorbed = the logit (AttnLRP books the softmax's Taylor bias as absorbed);
    CP-LRP, whose rules conserve, absorbs only ε's share."""
    model = long_llm("llama", torch.float64)
    ids = ids_for(model, 1)
    expl = xk.LRP(model, composite=composite, remat=True)(ids, target=xk.NextToken(-1))
    c = expl.info["conservation"]
    assert expl.info["remat"]
    assert float(c["residual"].abs().max()) <= 1e-6 * float(c["start"].abs().max())  # (plain engine: the same)
    if composite == "cp_lrp":
        assert float(c["absorbed"].abs().max()) <= 1e-4 * float(c["start"].abs().max())
        torch.testing.assert_close(expl.attribution.sum(1), c["start"], rtol=1e-4, atol=1e-8)


def test_other_architecture_matches():
    """GPT-NeoX (LayerNorm with biases, partial rotary, parallel residual) and Qwen2 (q, k, v biases)."""
    for family in ("gpt_neox", "qwen2"):
        model = long_llm(family)
        ids = ids_for(model, 1)
        before = snapshot(model)
        kwargs = {"use_cache": False}
        plain = xk.LRP(model, composite="attnlrp", remat=False)(ids, target=xk.NextToken(-1), forward_kwargs=kwargs)
        remat = xk.LRP(model, composite="attnlrp", remat=True)(ids, target=xk.NextToken(-1), forward_kwargs=kwargs)
        assert_unchanged(model, before)
        assert remat.info["remat"]
        assert rel_l2(remat.attribution, plain.attribution) <= 1e-5, family
        assert remat.info["coverage"] == plain.info["coverage"], family


def test_model_unchanged_after_an_error(llama):
    ids = ids_for(llama, 1, 64)
    before = snapshot(llama)
    with pytest.raises(ValueError, match="target token"):
        xk.LRP(llama, composite="attnlrp", remat=True)(ids, target=xk.NextToken(-1, token=10**6))
    with pytest.raises(ValueError, match="target token"):
        xk.InputXGradient(llama, remat=True)(ids, target=xk.NextToken(-1, token=10**6))
    assert_unchanged(llama, before)
    assert not any("forward" in vars(block) for block in find_blocks(llama))


def test_bad_input(llama):
    too_long = torch.zeros(1, 2 * LENGTH + 1, dtype=torch.long)
    for method in (xk.LRP(llama, composite="attnlrp"), xk.InputXGradient(llama)):
        with pytest.raises(ValueError, match=r"x has 513 tokens.*position limit \(512"):
            method(too_long, target=xk.NextToken(-1))
    with pytest.raises(ValueError, match="remat must be True, False or 'auto'"):
        xk.LRP(llama, composite="attnlrp", remat="yes")
    with pytest.raises(ValueError, match="remat must be"):
        xk.InputXGradient(llama, remat=1)
    no_blocks = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="no repeated blocks"):
        xk.LRP(no_blocks, composite="epsilon", remat=True)(torch.randn(2, 4), target=0)


def test_auto(llama, monkeypatch):
    """``remat="auto"``: on for token ids from AUTO_LENGTH tokens, off below and for vectors."""
    monkeypatch.setattr(remat_module, "AUTO_LENGTH", 48)
    lrp = xk.LRP(llama, composite="cp_lrp")
    assert lrp(ids_for(llama, 1, 48), target=xk.NextToken(-1)).info["remat"]
    assert not lrp(ids_for(llama, 1, 47), target=xk.NextToken(-1)).info["remat"]
    assert [type(b).__name__ for b in find_blocks(llama)] == ["LlamaDecoderLayer"] * 3


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_low_precision_models(dtype, tolerance):
    """A bfloat16/float16 model: ε-ratios, bookkeeping and the sum over the embedding in float32, so the
    relevance is the float32 model's up to the forward pass's rounding (float16 overflowed to NaN before:
    g/(|z| + ε) with ε = 1e-6)."""
    reference_model = long_llm("llama")
    model = long_llm("llama").to(dtype)
    ids = ids_for(model, 1, 64)
    for composite in ("attnlrp", "cp_lrp"):
        reference = xk.LRP(reference_model, composite=composite, remat=False)(ids, target=xk.NextToken(-1))
        expl = xk.LRP(model, composite=composite, remat=True)(ids, target=xk.NextToken(-1))
        assert expl.attribution.dtype == torch.float32 and expl.info["conservation"]["absorbed"].dtype == torch.float32
        assert torch.isfinite(expl.attribution).all()
        assert rel_l2(expl.attribution, reference.attribution) <= tolerance, composite


@pytest.mark.filterwarnings(r"ignore:LRP\(attnlrp\). the rules absorbed more than")  # (random tiny models)
def test_every_llm_family_and_encoders_match():
    """Short sequences on every decoder family of tests/llm_models.py (sliding windows, soft-capping, fused
    projections, parallel residuals), GPT-2 (Conv1D, absolute positions) and BERT (an encoder, class target):
    the rematerialised relevance and coverage are the plain engine's."""
    from llm_models import FAMILIES, SDPA_FAMILIES, llm
    from text_models import bert, gpt2

    ids = torch.randint(3, 40, (2, 24), generator=torch.Generator().manual_seed(0))
    models = [(f, llm(f, "sdpa" if f in SDPA_FAMILIES else "eager"), xk.NextToken(-1)) for f in FAMILIES if f != "t5"]
    models += [("gpt2", gpt2(), xk.NextToken(-1)), ("bert", bert(), 0)]
    for name, model, target in models:
        kwargs = {"use_cache": False} if name != "bert" else {}
        plain = xk.LRP(model, composite="attnlrp", remat=False)(ids, target=target, forward_kwargs=kwargs)
        remat = xk.LRP(model, composite="attnlrp", remat=True)(ids, target=target, forward_kwargs=kwargs)
        assert remat.info["remat"], name
        assert rel_l2(remat.attribution, plain.attribution) <= 1e-5, name
        assert remat.info["coverage"] == plain.info["coverage"], name
