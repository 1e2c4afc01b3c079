"""Gates through element-wise operations, sigmoid gates under AttnLRP, and ``F.normalize`` (issue 29, items 1,
5 and 6), with the model-matrix entries: an attention masked after its softmax, CPM-Ant, Swin-V2, ConvNeXt-V2.

A gate (a sigmoid or softmax output) stays a gate through masks, constant scalings, renormalisation by its own
sum, clamping and top-k; products with a sigmoid-type gate give all relevance to the gated signal under every
composite, also AttnLRP, whose attention weights keep the uniform rule. Properties checked: conservation
without additive constants (input relevance = logit), and equality with the same model written out by hand.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from engine_matrix import check_bias_free, check_model, quiet
from models import SENet
from text_models import CpmAntOnVectors, RecurrentClassifier, bias_free
from xaikit.propagation import Composite, make_composite

COMPOSITES = ("epsilon", "cp_lrp", "attnlrp")


def _lrp(model, x, composite, target=0, **kwargs):
    return xk.LRP(model, composite=composite, epsilon=1e-9)(x, target=target, forward_kwargs=kwargs)


def _relative(expl, with_absorbed: bool = False) -> torch.Tensor:
    """Largest relative gap between the input relevance (+ absorbed) and the logit."""
    c = expl.info["conservation"]
    total = c["input"] + c["absorbed"] if with_absorbed else c["input"]
    return ((total - c["start"]).abs() / c["start"].abs()).max()


# -- item 1: a gate keeps its tag through element-wise masks and scalings ---------------------------------------
class MaskedAttention(nn.Module):
    """One attention head whose weights pass through ``after`` between the softmax and ``A·V``, on a padded
    batch. ``rows=True`` also masks the padded queries before the softmax (their rows are all −inf, so NaN,
    and the mask after the softmax sets them to 0: what CPM-Ant does)."""

    def __init__(self, after: str = "masked_fill", rows: bool = False, bias: bool = True, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=bias) for _ in range(4))
        self.head = nn.Linear(dim, 3, bias=bias)
        self.after, self.rows = after, rows

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        keep = mask[:, None, :] & mask[:, :, None]
        scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~(keep if self.rows else mask[:, None, :]),
                                                                   float("-inf"))
        a = scores.softmax(-1)
        if self.after == "masked_fill":
            a = a.masked_fill(~keep, 0.0)
        elif self.after == "where":
            a = torch.where(keep, a, 0.0)
        elif self.after == "mask_product":
            a = a * keep
        elif self.after == "constant":
            a = a * 0.5
        elif self.after == "renormalised":
            a = a.masked_fill(~keep, 0.0)
            a = a / (a.sum(-1, keepdim=True) + 1e-9)
        elif self.after == "clamped":
            a = a.clamp(min=0.0)
        elif self.after == "sigmoid_where":  # a sigmoid gate instead of the softmax
            a = torch.where(keep, torch.sigmoid(scores.masked_fill(~keep, 0.0)), 0.0)
        return self.head((self.o(a @ v) * mask[..., None]).sum(1))


def _padded(n: int = 3, length: int = 5, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, length, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, 1:] = False
    return x, mask


@pytest.mark.parametrize("after", ["masked_fill", "where", "mask_product", "constant", "renormalised", "clamped",
                                   "sigmoid_where"])
def test_a_gate_masked_or_scaled_after_its_softmax_is_still_a_gate(after):
    """Before: the product after the mask got the uniform rule, half of the relevance went to the weights (ε:
    bias-free error 0.39–0.74; the sigmoid gate 0.2–0.49 also under CP-LRP)."""
    model = MaskedAttention(after, bias=False).double().eval()
    x, mask = _padded()
    for composite in ("epsilon", "cp_lrp"):
        assert _relative(_lrp(model, x, composite, mask=mask)) <= 1e-6, composite
    expl = _lrp(model, x, "attnlrp", mask=mask)  # softmax weights: uniform rule, the Taylor rule's share absorbed
    assert _relative(expl, with_absorbed=True) <= 1e-9
    if after == "sigmoid_where":  # a sigmoid gate gives all to the signal: nothing absorbed
        assert _relative(expl) <= 1e-6


def test_top_k_weights_of_a_softmax_router_are_gates():
    """``softmax(router(x)).topk(k)`` values weighting expert outputs: signal takes all under ε."""

    class Experts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.router = nn.Linear(6, 4, bias=False)
            self.experts = nn.ModuleList(nn.Linear(6, 6, bias=False) for _ in range(4))
            self.head = nn.Linear(6, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            weights, chosen = self.router(x).softmax(-1).topk(2, -1)
            outputs = torch.stack([expert(x) for expert in self.experts], 1)  # (N, experts, 6)
            picked = outputs.gather(1, chosen[..., None].expand(-1, -1, 6))
            return self.head((weights[..., None] * picked).sum(1))

    model = Experts().double().eval()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expl = _lrp(model, x, "epsilon")
    assert "mul:signal_takes_all" in expl.info["coverage"]["handled"]
    assert _relative(expl) <= 1e-6


def test_a_gate_divided_by_a_statistic_of_a_signal_is_no_gate():
    """Only a statistic of gates keeps the tag: ``σ(a) / ‖h‖ · h`` is a product of two signals (uniform rule)."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b, self.head = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.b(x)
            return self.head(torch.sigmoid(self.a(x)) / h.norm(dim=-1, keepdim=True) * h)

    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    handled = _lrp(Scaled().double().eval(), x, "epsilon").info["coverage"]["handled"]
    assert "mul:signal_takes_all" not in handled and "mul:uniform" in handled


def test_fully_masked_rows_give_finite_bookkeeping_on_a_padded_sample():
    """CPM-Ant's pattern: rows of padded queries are all −inf before the softmax (NaN), 0 after the mask.
    Before: ε and AttnLRP booked NaN as absorbed (and residual) for the padded sample."""
    model = MaskedAttention("masked_fill", rows=True, bias=False).double().eval()
    x, mask = _padded()
    for composite in COMPOSITES:
        expl = _lrp(model, x, composite, mask=mask)
        c = expl.info["conservation"]
        assert torch.isfinite(c["absorbed"]).all() and torch.isfinite(c["residual"]).all(), (composite, c)
        assert _relative(expl, with_absorbed=composite == "attnlrp") <= 1e-6, composite


# -- item 5: F.normalize ---------------------------------------------------------------------------------------
class CosineAttention(nn.Module):
    """Swin-V2's cosine attention: ``normalize(q) · normalize(k)ᵀ``, either by ``F.normalize`` or written out."""

    def __init__(self, written: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = (nn.Linear(8, 8, bias=False) for _ in range(3))
        self.head = nn.Linear(8, 3, bias=False)
        self.written = written

    def unit(self, t: torch.Tensor) -> torch.Tensor:
        if self.written:
            return t / t.norm(2, -1, keepdim=True).clamp_min(1e-12)
        return F.normalize(t, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = (self.unit(self.q(x)) @ self.unit(self.k(x)).transpose(-1, -2) * 10).softmax(-1)
        return self.head((a @ self.v(x)).mean(1))


def test_normalize_gets_the_norm_rule_of_the_division_written_out():
    """Before: ``normalize`` was one unknown operation (its plain gradient), AttnLRP's residual 8 %–440 % of the
    logit on Swin-V2."""
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    functional, written = CosineAttention(False).double().eval(), CosineAttention(True).double().eval()
    for composite in COMPOSITES:
        a, b = _lrp(functional, x, composite), _lrp(written, x, composite)
        assert a.info["coverage"]["unknown"] == {}, (composite, a.info["coverage"])
        torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-10, atol=1e-12)
        assert _relative(a, with_absorbed=composite == "attnlrp") <= 1e-6, composite


# -- item 6: sigmoid gates under AttnLRP -----------------------------------------------------------------------
def test_attnlrp_gives_a_sigmoid_gated_signal_all_its_relevance_se_block():
    """SE blocks: before, AttnLRP's input relevance was 0.249 of the logit (the rest absorbed by σ(0)·g at the
    gate's identity rule and the half the uniform rule sent to the gate); now 1."""
    model = bias_free(SENet().double().eval())
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expl = _lrp(model, x, "attnlrp")
    assert "mul:signal_takes_all" in expl.info["coverage"]["handled"]
    assert _relative(expl) <= 1e-3


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
def test_attnlrp_gives_recurrent_gated_signals_all_their_relevance(cell):
    """GRU/LSTM gates: before, AttnLRP's input relevance was −0.12 to 0.17 of the logit; now 1."""
    model = RecurrentClassifier(cell, bias=False).double().eval()
    ids = torch.randint(0, 40, (3, 5), generator=torch.Generator().manual_seed(5))
    assert _relative(_lrp(model, ids, "attnlrp")) <= 1e-3


def test_glu_is_a_sigmoid_gate_like_its_written_out_form():
    """``F.glu(x) = a ⊙ σ(b)``: the product gets the gate rule (before: one unknown operation)."""

    class Glu(nn.Module):
        def __init__(self, written: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.up, self.head, self.written = nn.Linear(6, 12, bias=False), nn.Linear(6, 3, bias=False), written

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.up(x)
            a, b = h.chunk(2, -1)
            return self.head(a * torch.sigmoid(b) if self.written else F.glu(h, -1))

    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for composite in COMPOSITES:
        a, b = _lrp(Glu(False).double().eval(), x, composite), _lrp(Glu(True).double().eval(), x, composite)
        assert a.info["coverage"]["unknown"] == {}
        torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-10, atol=1e-12)
        assert _relative(a) <= 1e-6, composite


def test_attnlrp_keeps_the_uniform_rule_on_attention_weights():
    """Only sigmoid-type gates changed: AttnLRP's attention weights still take half of ``A·V``'s relevance and
    pass it to Q and K (the softmax Taylor rule's share is absorbed)."""
    model = MaskedAttention("masked_fill", bias=False).double().eval()
    x, mask = _padded()
    expl = _lrp(model, x, "attnlrp", mask=mask)
    handled = expl.info["coverage"]["handled"]
    assert "matmul:signal_takes_all" not in handled and handled.get("matmul:uniform") == 2
    assert expl.info["conservation"]["absorbed"].abs().max() > 1e-3


def test_the_attention_rule_follows_the_gate_rule_unless_set():
    old = Composite.from_dict({"name": "saved", "ops": {"gate": "uniform"}})  # written before the two kinds
    assert old.op_rule("attention") == "uniform"
    assert Composite("plain").op_rule("attention") == "signal_takes_all"
    attnlrp = make_composite("attnlrp")
    assert (attnlrp.op_rule("gate"), attnlrp.op_rule("attention")) == ("signal_takes_all", "uniform")
    assert Composite.from_json(attnlrp.to_json()).op_rule("attention") == "uniform"
    with pytest.raises(ValueError, match="attention"):
        Composite("bad", ops={"attention": "taylor"})


# -- the model matrix (issue 29) -------------------------------------------------------------------------------
def test_matrix_attention_masked_after_its_softmax():
    x, mask = _padded()
    check_model(MaskedAttention("masked_fill", rows=True).double().eval(), x, kwargs={"mask": mask})
    check_bias_free(MaskedAttention("masked_fill", rows=True, bias=False).double().eval(), x,
                    kwargs={"mask": mask}, composites=COMPOSITES)


def test_matrix_cpmant():
    from transformers import CpmAntConfig, CpmAntForCausalLM

    torch.manual_seed(0)
    config = CpmAntConfig(vocab_size=48, hidden_size=16, num_attention_heads=2, dim_head=8, dim_ff=32,
                          num_hidden_layers=2, prompt_length=2, position_bias_num_buckets=8,
                          position_bias_max_distance=16, segment_types=4)
    model = CpmAntOnVectors(quiet(lambda: CpmAntForCausalLM(config))).double().eval()
    ids = torch.randint(3, 48, (2, 6), generator=torch.Generator().manual_seed(1))
    ids[1, :2] = 0  # left padding: those queries see no key
    x = model.model.cpmant.input_embedding(ids).detach()
    check_model(model, x, target=7, kwargs={"input_ids": ids})
    with torch.no_grad():
        bias_free(model)
        model.zero_constants()
    check_bias_free(model, x, target=7, kwargs={"input_ids": ids}, composites=COMPOSITES)


def test_cpmant_is_explained_from_its_token_ids():
    """CPM-Ant embeds its prompt ids together with the ids: the ids' positions are explained (the prompt's
    vectors are constants), the same relevance as at the ids' vectors, nothing unknown, the balance closed."""
    from transformers import CpmAntConfig, CpmAntForCausalLM

    torch.manual_seed(0)
    config = CpmAntConfig(vocab_size=48, hidden_size=16, num_attention_heads=2, dim_head=8, dim_ff=32,
                          num_hidden_layers=2, prompt_length=2, position_bias_num_buckets=8,
                          position_bias_max_distance=16, segment_types=4)
    model = quiet(lambda: CpmAntForCausalLM(config)).double().eval()
    ids = torch.randint(3, 48, (2, 6), generator=torch.Generator().manual_seed(1))
    reports = check_model(model, ids, target=xk.NextToken(-1), kwargs={"use_cache": False})
    on_ids = xk.LRP(model, composite="epsilon")(ids, target=xk.NextToken(-1), forward_kwargs={"use_cache": False})
    x = model.cpmant.input_embedding(ids).detach()
    on_vectors = xk.LRP(CpmAntOnVectors(model), composite="epsilon")(
        x, target=on_ids.target.tolist(), forward_kwargs={"input_ids": ids})
    torch.testing.assert_close(on_ids.attribution, on_vectors.attribution.sum(-1))
    assert set(reports) == {"epsilon", "cp_lrp", "attnlrp"}


def test_matrix_swinv2():
    from transformers import Swinv2Config, Swinv2ForImageClassification

    torch.manual_seed(0)
    config = Swinv2Config(image_size=16, patch_size=2, num_channels=3, embed_dim=8, depths=[1, 1],
                          num_heads=[2, 2], window_size=4, num_labels=3)
    model = quiet(lambda: Swinv2ForImageClassification(config)).double().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    check_model(model, x)
    check_bias_free(bias_free(model), x, composites=COMPOSITES)


def test_matrix_convnextv2():
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

    torch.manual_seed(0)
    config = ConvNextV2Config(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3,
                              image_size=16, patch_size=2)
    model = quiet(lambda: ConvNextV2ForImageClassification(config)).double().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    check_model(model, x)
    check_bias_free(bias_free(model), x, composites=COMPOSITES)
