"""AttnLRP / CP-LRP / LSTM-LRP on transformer and recurrent models: conservation, coverage, closed forms."""
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from text_models import VOCAB, EncoderClassifier, RecurrentClassifier, bert, bias_free, gpt2, vit
from xaikit.propagation import Session, make_composite, with_rules

torch.manual_seed(0)
IDS = torch.randint(0, VOCAB, (3, 7))
MASK = torch.ones_like(IDS)
MASK[1, 5:] = 0


def _cases(free: bool):
    prepare = bias_free if free else (lambda m: m)
    return {
        "bert": (lambda: prepare(bert()), IDS, 0, {"attention_mask": MASK}),
        "gpt2": (lambda: prepare(gpt2()), IDS, xk.NextToken(-1), {}),
        "vit": (lambda: prepare(vit()), torch.randn(3, 3, 16, 16), 0, {}),
        "lstm": (lambda: RecurrentClassifier(nn.LSTM, bias=not free).eval(), IDS, 0, {}),
        "gru": (lambda: RecurrentClassifier(nn.GRU, bias=not free).eval(), IDS, 0, {}),
        "encoder": (lambda: EncoderClassifier(bias=not free).eval(), torch.randn(3, 7, 8), 0,
                    {"src_key_padding_mask": MASK == 0}),
    }


@pytest.fixture(scope="module")
def bias_free_models():
    torch.manual_seed(0)  # module-scoped: built before the per-test seed, so seed here (order-independent)
    return {name: (build(), x, t, kw) for name, (build, x, t, kw) in _cases(True).items()}


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "lstm", "gru", "encoder"])
def test_bias_free_models_conserve_relevance(bias_free_models, name):
    """Nothing input-independent is added anywhere, so with ε → 0 the relevance at the embeddings (pixels for
    ViT) is the starting logit. CP-LRP and LRP-ε (signal takes all in the LSTM/GRU) conserve it exactly;
    AttnLRP's Taylor rule on the softmax is not conservative by design (AttnLRP, Prop. 3.1: the expansion's
    bias term keeps a share), which the engine reports as absorbed: input + absorbed = start."""
    model, x, target, kwargs = bias_free_models[name]
    for composite in ("cp_lrp", "epsilon", "attnlrp"):
        before = snapshot(model)
        expl = xk.LRP(model, composite=composite, epsilon=1e-9)(x, target=target, forward_kwargs=kwargs)
        assert_unchanged(model, before)
        c = expl.info["conservation"]
        assert expl.info["coverage"]["unknown"] == {}
        assert c["start"].abs().min() > 1e-3  # a meaningful logit to conserve
        total = c["input"] if composite != "attnlrp" else c["input"] + c["absorbed"]
        assert torch.allclose(total, c["start"], rtol=1e-3, atol=0), (composite, total, c["start"])
        if name in ("lstm", "gru"):  # no softmax: AttnLRP's uniform gate split loses nothing either; the
            # identity rule on the sigmoid gates leaves σ(0)·g with the constant σ(0), reported as absorbed
            assert (c["residual"].abs() <= 1e-4 * c["start"].abs()).all(), (composite, c)


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "lstm", "gru", "encoder"])
def test_no_unknown_operation_with_biases(name):
    """Float64: with biases, input and absorbed relevance can be large and cancel to a small logit, so the
    bookkeeping is checked where rounding is far below the bound."""
    build, x, target, kwargs = _cases(False)[name]
    model = build().double()
    x = x.double() if x.is_floating_point() else x
    before = snapshot(model)
    for composite in ("attnlrp", "cp_lrp"):
        expl = xk.LRP(model, composite=composite)(x, target=target, forward_kwargs=kwargs)
        assert expl.info["coverage"]["unknown"] == {}
        c = expl.info["conservation"]  # every share is accounted for: biases, ε, position embeddings, CLS, softmax
        assert (c["residual"].abs() <= 1e-4 * c["start"].abs() + 1e-6).all(), c
    assert_unchanged(model, before)


@pytest.mark.parametrize("composite", ["attnlrp", "cp_lrp"])
@pytest.mark.parametrize("build", [bert, gpt2])
def test_fused_attention_equals_the_written_out_rules(build, composite):
    """The fused scaled_dot_product_attention with the closed-form backward (V: ½, Q, K: ¼ under AttnLRP; V
    only under CP-LRP) gives the same relevance as the eager implementation, whose Q·Kᵀ, softmax and A·V the
    generic product and softmax rules handle one by one."""
    target = xk.NextToken(-1) if build is gpt2 else 1
    kwargs = {"attention_mask": MASK}
    fused = xk.LRP(build("sdpa"), composite=composite)(IDS, target=target, forward_kwargs=kwargs)
    eager = xk.LRP(build("eager"), composite=composite)(IDS, target=target, forward_kwargs=kwargs)
    assert any(k.startswith("scaled_dot_product_attention") for k in fused.info["coverage"]["handled"])
    assert "softmax:" + ("taylor" if composite == "attnlrp" else "detach") in str(eager.info["coverage"])
    torch.testing.assert_close(fused.attribution, eager.attribution, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fused.info["conservation"]["absorbed"], eager.info["conservation"]["absorbed"],
                               rtol=1e-4, atol=1e-7)


class MHAModel(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x, key_padding_mask=None):
        out, _ = self.mha(x, x, x, key_padding_mask=key_padding_mask, need_weights=self.need_weights)
        return out.sum(1)


def test_multihead_attention_fused_and_written_out_agree():
    x = torch.randn(3, 7, 8)
    kwargs = {"key_padding_mask": MASK == 0}
    a = xk.LRP(MHAModel(False).eval(), composite="attnlrp")(x, target=2, forward_kwargs=kwargs)
    b = xk.LRP(MHAModel(True).eval(), composite="attnlrp")(x, target=2, forward_kwargs=kwargs)
    assert "softmax:taylor" in b.info["coverage"]["handled"]  # need_weights: written out
    torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-4, atol=1e-7)
    cp = xk.LRP(MHAModel(False).eval(), composite="cp_lrp")(x, target=2, forward_kwargs=kwargs)
    assert (cp.attribution[1, 5:] == 0).all()  # CP-LRP: padded keys' values are never used, queries get nothing
    assert (a.attribution[1, 5:] != 0).any()  # AttnLRP: their queries do get relevance


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_unrolled_recurrences_compute_the_fused_result(cell):
    for options in (dict(num_layers=2, bidirectional=True, batch_first=True), dict(num_layers=1)):
        model = cell(5, 6, **options).eval()
        x = torch.randn(3, 4, 5)
        session = Session(model, make_composite("epsilon"))
        out = session.forward(x.clone().requires_grad_(True))
        with torch.no_grad():
            expected = model(x)
        for a, b in zip(out if isinstance(out, tuple) else (out,), expected):
            if isinstance(a, tuple):
                for u, v in zip(a, b):
                    torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert session.coverage.as_dict()["unknown"] == {}


def test_lstm_with_projection_and_transformer_encoder_masks_compute_the_same():
    lstm = nn.LSTM(5, 6, proj_size=3, num_layers=2).eval()
    x = torch.randn(4, 3, 5)
    out = Session(lstm, make_composite("attnlrp")).forward(x.clone().requires_grad_(True))[0]
    torch.testing.assert_close(out, lstm(x)[0].detach(), rtol=1e-5, atol=1e-6)
    enc = EncoderClassifier().eval()
    x = torch.randn(3, 7, 8)
    for kwargs in ({"src_key_padding_mask": MASK == 0}, {}):
        out = Session(enc, make_composite("attnlrp")).forward(x.clone().requires_grad_(True), **kwargs)
        torch.testing.assert_close(out, enc(x, **kwargs).detach(), rtol=1e-5, atol=1e-6)


class OneStepLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.lstm = nn.LSTM(4, 5, bias=False, batch_first=True)
        self.w = nn.Parameter(torch.randn(5))

    def forward(self, x):
        return (self.lstm(x)[0][:, -1] * self.w).sum(-1, keepdim=True)


def test_lstm_gates_get_no_relevance_closed_form():
    """Arras et al. 2017: with "signal takes all" the output h = o ⊙ tanh(c), c = i ⊙ g (c₀ = 0) sends all
    relevance through the cell candidate g = tanh(W_g x): R_x = x ⊙ W_gᵀ (R_h / z_g) with R_h = h ⊙ w."""
    model = OneStepLSTM().eval()
    x = torch.randn(2, 1, 4)
    expl = xk.LRP(model, composite="epsilon", epsilon=1e-12)(x, target=0)
    with torch.no_grad():
        h = model.lstm(x)[0][:, -1]
        w_g = model.lstm.weight_ih_l0[10:15]  # gate order i, f, g, o
        z_g = x[:, 0] @ w_g.T
        expected = x[:, 0] * ((h * model.w / z_g) @ w_g)
    torch.testing.assert_close(expl.attribution[:, 0], expected, rtol=1e-4, atol=1e-7)
    assert "mul:signal_takes_all" in expl.info["coverage"]["handled"]


def test_elementwise_module_gets_the_identity_rule_as_a_whole():
    """GPT-2's NewGELUActivation is written as pow/tanh/mul: one non-linearity, not a product of activations;
    it explains like F.gelu(approximate="tanh") with the identity rule."""
    from transformers.activations import NewGELUActivation

    torch.manual_seed(0)
    first, last = nn.Linear(6, 8), nn.Linear(8, 2)
    composed = nn.Sequential(first, NewGELUActivation(), last).eval()
    native = nn.Sequential(first, nn.GELU(approximate="tanh"), last).eval()
    x = torch.randn(4, 6)
    a = xk.LRP(composed, composite="attnlrp")(x, target=0)
    b = xk.LRP(native, composite="attnlrp")(x, target=0)
    assert a.info["coverage"]["handled"].get("NewGELUActivation:identity") == 1
    assert "mul:uniform" not in a.info["coverage"]["handled"]
    torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-5, atol=1e-7)


def test_conv1d_addmm_layers_get_the_dense_rule_by_module_name():
    """GPT-2's Conv1D (addmm with a parameter matrix) is a linear layer: name-based rules reach it."""
    model = gpt2()
    composite = with_rules("attnlrp", by_name={"transformer.h.*.mlp.c_fc": "zero"})
    expl = xk.LRP(model, composite=composite)(IDS, target=xk.NextToken(-1))
    handled = expl.info["coverage"]["handled"]
    assert handled["linear:zero"] == 2 and handled["linear:epsilon"] == 7  # 2 c_fc; 3 per block + lm_head


def test_absorbed_relevance_is_per_sample_for_flattened_layers():
    """Conv1D applies to (N·L, D) rows; what its bias absorbs is credited to the right sample."""
    model = gpt2()
    x = IDS[:2]
    both = xk.LRP(model, composite="cp_lrp", batch_size=2)(x, target=xk.NextToken(-1))
    one = xk.LRP(model, composite="cp_lrp", batch_size=1)(x, target=xk.NextToken(-1))
    torch.testing.assert_close(both.info["conservation"]["absorbed"], one.info["conservation"]["absorbed"])
    torch.testing.assert_close(both.attribution, one.attribution)


class ShiftedRelu(nn.Module):
    def __init__(self, shift: torch.Tensor, subtract: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.shift, self.subtract = nn.Linear(4, 6), nn.Linear(6, 2), shift, subtract

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h - (-self.shift) if self.subtract else h + self.shift)


@pytest.mark.parametrize("parameter", [False, True])
def test_a_negative_constant_added_after_a_relu_is_not_taken_as_nonnegative(parameter):
    """γ skips the x⁻ half only for inputs known to be ≥ 0: relu(x) + c with c < 0 is not (a constant or a
    parameter), and gives what the same model written with a subtraction gives."""
    shift = torch.full((6,), -0.7)
    composite = with_rules("epsilon", by_name={"b": "gamma"})
    x = torch.randn(3, 4)
    added = ShiftedRelu(nn.Parameter(shift) if parameter else shift).eval()
    expected = xk.LRP(ShiftedRelu(shift, subtract=True).eval(), composite=composite)(x, target=0)
    torch.testing.assert_close(xk.LRP(added, composite=composite)(x, target=0).attribution, expected.attribution)
