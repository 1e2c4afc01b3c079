"""Patterns written by hand inside models, seen at the op level by the engine (issue 11): normalisation
statistics, gates behind views, opaque functions, in-place writes through views, transformed inputs before
the first layer. Each test builds a small model and compares with the same model written with the op the
engine knows, or checks conservation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk


# -- 1. normalisation statistics computed by hand ----------------------------------------------------------------
class HandRMSNorm(nn.Module):
    """``x · rsqrt(mean(x²) + ε) · w`` (Llama, Mistral, Qwen2, T5)."""

    def __init__(self, dim: int, eps: float = 1e-6, style: str = "rsqrt"):
        super().__init__()
        self.weight, self.eps, self.style = nn.Parameter(torch.rand(dim) + 0.5), eps, style

    def forward(self, x):
        if self.style == "div":
            return x / (x * x).mean(-1, keepdim=True).add(self.eps).sqrt() * self.weight
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        if self.style == "rsqrt":
            return self.weight * (x * torch.rsqrt(variance + self.eps))
        return x * (1 / torch.sqrt(variance + self.eps)) * self.weight


class HandLayerNorm(nn.Module):
    """``(x − μ) / sqrt(var + ε) · w + b`` written out (ConvNeXt's LayerNorm2d style, over the last dim)."""

    def __init__(self, dim: int, eps: float = 1e-6, style: str = "pow"):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.rand(dim) + 0.5), nn.Parameter(torch.randn(dim) * 0.1)
        self.eps, self.style = eps, style

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        v = (x - u).pow(2).mean(-1, keepdim=True) if self.style == "pow" else x.var(-1, keepdim=True, unbiased=False)
        return (x - u) / torch.sqrt(v + self.eps) * self.weight + self.bias


class NormNet(nn.Module):
    def __init__(self, norm: str, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        make = {"hand_rms": lambda: HandRMSNorm(8), "hand_rms_reciprocal": lambda: HandRMSNorm(8, style="reciprocal"),
                "hand_rms_div": lambda: HandRMSNorm(8, style="div"), "rms": lambda: nn.RMSNorm(8, eps=1e-6),
                "hand_ln": lambda: HandLayerNorm(8), "hand_ln_var": lambda: HandLayerNorm(8, style="var"),
                "ln": lambda: nn.LayerNorm(8, eps=1e-6)}[norm]
        self.n1, self.n2 = make(), make()

    def forward(self, x):
        h = self.n1(self.fc1(x))
        h = h + self.n2(F.gelu(self.fc2(h)))
        return self.head(h)


def _twin(hand: str, native: str) -> tuple[nn.Module, nn.Module]:
    a, b = NormNet(hand), NormNet(native)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


@pytest.mark.parametrize("hand,native", [("hand_rms", "rms"), ("hand_rms_reciprocal", "rms"), ("hand_rms_div", "rms"),
                                         ("hand_ln", "ln"), ("hand_ln_var", "ln")])
@pytest.mark.parametrize("composite", ["cp_lrp", "attnlrp", "epsilon"])
def test_hand_written_norms_get_the_norm_rule(hand, native, composite):
    """A norm written out of reductions, rsqrt/sqrt and divisions gets the same relevance as the native one,
    with nothing unknown and the balance closed."""
    a, b = _twin(hand, native)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    ea = xk.LRP(a, composite=composite)(x, target=1)
    eb = xk.LRP(b, composite=composite)(x, target=1)
    assert ea.info["coverage"]["unknown"] == {}
    torch.testing.assert_close(ea.attribution, eb.attribution, rtol=1e-4, atol=1e-6)
    c = ea.info["conservation"]
    assert c["residual"].abs().max() <= 1e-4 * c["start"].abs().max()
    handled = ea.info["coverage"]["handled"]
    assert any(k.endswith(":norm_statistic") for k in handled), handled


def test_a_reduction_that_is_no_statistic_keeps_its_rules():
    """Global average pooling feeding a layer (a mean, not a scale) is linear, and x² used for relevance
    elsewhere stays reported as unknown."""
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x)
            sq = h.pow(2)
            scale = torch.rsqrt(sq.mean((2, 3), keepdim=True) + 1e-5)
            return self.fc((h * scale + sq).mean((2, 3)))  # sq also carries relevance: not a statistic only

    model = Pool().eval()
    expl = xk.LRP(model, composite="epsilon")(torch.randn(2, 3, 8, 8))
    assert expl.info["coverage"]["unknown"].get("pow") == 1


# -- 8. encoder–decoder token ids ---------------------------------------------------------------------------------
def _t5():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=2,
                                   num_heads=4, decoder_start_token_id=0, pad_token_id=0)
    return transformers.T5ForConditionalGeneration(config).eval()


@pytest.mark.parametrize("method", ["lrp", "input_x_gradient"])
def test_encoder_decoder_ids_are_explained_at_the_embedding_the_encoder_calls(method):
    """T5's get_input_embeddings() is `shared`; its encoder calls a tied copy. The ids are explained where the
    encoder embeds them, the decoder's ids stay its own, and expl.target is the predicted token."""
    model = _t5()
    g = torch.Generator().manual_seed(0)
    ids, decoder = torch.randint(1, 40, (2, 5), generator=g), torch.randint(1, 40, (2, 3), generator=g)
    explainer = xk.LRP(model, composite="cp_lrp") if method == "lrp" else xk.InputXGradient(model)
    expl = explainer(ids, target=xk.NextToken(), forward_kwargs={"decoder_input_ids": decoder})
    with torch.no_grad():
        logits = model(ids, decoder_input_ids=decoder).logits
    assert expl.attribution.shape == (2, 5)
    assert torch.equal(expl.target, logits[:, -1].argmax(-1))
    if method == "lrp":
        assert expl.info["coverage"]["unknown"] == {}
        c = expl.info["conservation"]
        assert c["residual"].abs().max() <= 1e-4 * c["start"].abs().max()
    else:  # gradient × input at the encoder's embedding vectors
        vectors = model.encoder.embed_tokens(ids).detach().requires_grad_(True)
        out = model(inputs_embeds=vectors, decoder_input_ids=decoder).logits[:, -1]
        (grad,) = torch.autograd.grad(out.gather(1, expl.target[:, None]).sum(), vectors)
        torch.testing.assert_close(expl.attribution, (grad * vectors).sum(-1).detach(), rtol=1e-4, atol=1e-6)


def test_next_token_with_a_given_token_reports_it():
    model = _t5()
    ids = torch.randint(1, 40, (2, 4), generator=torch.Generator().manual_seed(3))
    expl = xk.LRP(model, composite="cp_lrp")(ids, target=xk.NextToken(token=7),
                                             forward_kwargs={"decoder_input_ids": ids[:, :2]})
    assert expl.target.tolist() == [7, 7]


class Tagger(nn.Module):
    """Token ids → embedding (of the ids shifted by ``shift``) → mean → classifier."""

    def __init__(self, shift: int = 0):
        super().__init__()
        self.word_embeddings, self.classifier, self.shift = nn.Embedding(10, 4), nn.Linear(4, 2), shift

    def forward(self, ids):
        return self.classifier(self.word_embeddings((ids + self.shift) % 10).mean(1))


def test_an_embedding_called_only_on_other_ids_is_an_error():
    with pytest.raises(ValueError, match="did not call its input embedding on the ids x"):
        xk.LRP(Tagger(shift=1))(torch.randint(0, 10, (2, 3), generator=torch.Generator().manual_seed(0)))


# -- 3. gates seen through views, indexing, expand and reshapes -----------------------------------------------
class SqueezeExcite(nn.Module):
    """Conv → SE block (the gate applied in one of several spellings) → head."""

    def __init__(self, style: str, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4), nn.Linear(4, 8)
        self.head, self.style = nn.Linear(8, 3), style

    def forward(self, x):
        h = F.relu(self.conv(x))
        n, c = h.shape[:2]
        z = self.fc2(F.relu(self.fc1(h.mean((2, 3)))))
        if self.style == "reshape_first":  # the gate computed on the (N, C, 1, 1) shape: tagged directly
            s = torch.sigmoid(z.view(n, c, 1, 1))
        elif self.style == "index":
            s = torch.sigmoid(z)[:, :, None, None]
        elif self.style == "view":
            s = torch.sigmoid(z).view(n, c, 1, 1)
        else:
            s = torch.sigmoid(z).unsqueeze(-1).unsqueeze(-1).expand_as(h)
        return self.head((h * s).mean((2, 3)))


@pytest.mark.parametrize("style", ["index", "view", "expand"])
def test_a_gate_seen_through_an_index_or_view_is_still_a_gate(style):
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    reference = xk.LRP(SqueezeExcite("reshape_first").eval(), composite="epsilon")(x, target=0)
    expl = xk.LRP(SqueezeExcite(style).eval(), composite="epsilon")(x, target=0)
    assert expl.info["coverage"]["handled"].get("mul:signal_takes_all") == 1
    torch.testing.assert_close(expl.attribution, reference.attribution)


class ToyAttention(nn.Module):
    """softmax(q kᵀ).view(...) @ v, bias-free (DeBERTa, BLOOM write the weights through a view)."""

    def __init__(self, view: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.q, self.k, self.v = (nn.Linear(6, 6, bias=False) for _ in range(3))
        self.out, self.view = nn.Linear(6, 2, bias=False), view

    def forward(self, x):  # (N, L, 6) -> (N, 2)
        n, length, _ = x.shape
        q, k, v = (f(x).view(n, length, 2, 3).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(-1, -2), -1)
        if self.view:
            a = a.reshape(n * 2, length, length).view(n, 2, length, length)
        h = (a @ v).transpose(1, 2).reshape(n, length, 6)
        return self.out(h).sum(1)


def test_attention_weights_through_a_view_keep_the_gate_rule():
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    plain = xk.LRP(ToyAttention(False).eval(), composite="epsilon", epsilon=1e-9)(x, target=0)
    viewed = xk.LRP(ToyAttention(True).eval(), composite="epsilon", epsilon=1e-9)(x, target=0)
    torch.testing.assert_close(viewed.attribution, plain.attribution)
    c = viewed.info["conservation"]
    assert c["residual"].abs().max() <= 1e-4 * c["start"].abs().max()


# -- 4. operations the engine cannot see ------------------------------------------------------------------------
@torch.jit.script
def scripted_gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1.0 + 0.044715 * x * x)))


class FusedGelu(torch.autograd.Function):
    """A hand-written GeLU with its own (approximate) backward, as BLOOM writes it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1.0 + 0.044715 * x * x)))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(1.702 * x)


class OpaqueNet(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.kind = nn.Linear(4, 8, bias=False), nn.Linear(8, 2, bias=False), kind

    def forward(self, x):
        h = self.a(x)
        if self.kind == "script":
            h = scripted_gelu(h)
        elif self.kind == "function":
            h = FusedGelu.apply(h)
        else:
            h = F.gelu(h, approximate="tanh")
        return self.b(h)


@pytest.mark.parametrize("kind,label", [("script", "scripted_gelu:torch.jit"),
                                        ("function", "FusedGelu:autograd.Function")])
def test_operations_the_engine_cannot_see_are_reported_by_name(kind, label):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=label.split(":")[0]):
        expl = xk.LRP(OpaqueNet(kind).eval(), composite="epsilon")(x, target=0)
    assert expl.info["coverage"]["unknown"] == {label: 1}
    assert "linear:epsilon" in expl.info["coverage"]["handled"]  # the layers inside/outside stay handled
    plain = xk.LRP(OpaqueNet("plain").eval(), composite="epsilon")(x, target=0)
    assert plain.info["coverage"]["unknown"] == {}


def test_an_opaque_model_output_is_reported():
    class Last(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            return FusedGelu.apply(self.a(x))

    with pytest.warns(UserWarning, match="FusedGelu"):
        expl = xk.LRP(Last().eval(), composite="epsilon")(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)))
    assert expl.info["coverage"]["unknown"] == {"FusedGelu:autograd.Function": 1}


# -- 2. in-place writes through a view --------------------------------------------------------------------------
class WrittenThroughView(nn.Module):
    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1), nn.Linear(4, 2)
        self.style = style

    def forward(self, x):
        h = self.c1(x)
        if self.style == "augmented":  # __getitem__, __iadd__ on the view, __setitem__ back
            h[:, :4] += 0.5
            h.sum()  # a later read
        elif self.style == "method":  # no __setitem__: the view's add_ alone changes h
            h[:, :4].add_(0.5)
        elif self.style == "after_relu":  # a rectified (≥ 0) value made negative in place
            h = F.relu(h)
            h[:, :2] -= 0.7
        else:
            shift = torch.zeros(1, 6, 1, 1)
            shift[:, :4] = 0.5
            h = h + shift
            if self.style == "after_relu_reference":
                h = F.relu(h - shift)
                h = h - torch.tensor([0.7, 0.7, 0, 0, 0, 0]).view(1, 6, 1, 1)
        if self.style not in ("after_relu", "after_relu_reference"):
            h = F.relu(h)
        return self.fc(F.relu(self.c2(h)).mean((2, 3)))


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1",
                                       "epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
@pytest.mark.parametrize("style,reference", [("augmented", "out_of_place"), ("method", "out_of_place"),
                                             ("after_relu", "after_relu_reference")])
def test_in_place_writes_through_a_view_give_the_out_of_place_relevance(composite, style, reference):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = xk.LRP(WrittenThroughView(reference).eval(), composite=composite)(x, target=0)
    expl = xk.LRP(WrittenThroughView(style).eval(), composite=composite)(x, target=0)
    torch.testing.assert_close(expl.attribution, expected.attribution, rtol=1e-5, atol=1e-6)
    c = expl.info["conservation"]
    assert c["residual"].abs().max() <= 1e-4 * c["start"].abs().max()


# -- 5. first-layer rules behind an input transform -------------------------------------------------------------
class Normalising(nn.Module):
    """The same conv net, normalising its input inside forward (``transform``) or not (its input is then
    normalised beforehand)."""

    MEAN, STD = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, -0.25, 0.3]).view(1, 3, 1, 1)

    def __init__(self, transform: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.transform = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2), transform

    def forward(self, x):
        if self.transform == "affine":
            x = (x - self.MEAN) / self.STD
        elif self.transform == "nonlinear":
            x = torch.tanh(x)
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("composite,settings", [("epsilon_plus_flat", {}), ("epsilon_alpha2_beta1_flat", {}),
                                                ("epsilon_gamma_box", {"low": 0.0, "high": 1.0})])
def test_first_layer_rule_applies_behind_an_affine_input_transform(composite, settings):
    """Relevance of the in-model normalisation equals that of the same net on the normalised input (box
    bounds carried through the transform, a negative std flipping them), element for element."""
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    inside = xk.LRP(Normalising("affine").eval(), composite=composite, **settings)(x, target=0)
    pre = (x - Normalising.MEAN) / Normalising.STD
    if settings:
        low, high = ((torch.tensor(b).expand(1, 3, 1, 1) - Normalising.MEAN) / Normalising.STD for b in (0.0, 1.0))
        settings = {"low": torch.minimum(low, high).view(3), "high": torch.maximum(low, high).view(3)}
    outside = xk.LRP(Normalising("none").eval(), composite=composite, **settings)(pre, target=0)
    torch.testing.assert_close(inside.attribution, outside.attribution, rtol=1e-5, atol=1e-6)


def test_a_first_layer_rule_that_finds_no_first_layer_warns():
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="first-layer rule 'flat'.*applied to no layer"):
        xk.LRP(Normalising("nonlinear").eval(), composite="epsilon_plus_flat")(x, target=0)


# -- 6. recurrent networks: the per-sample report at batch > 1 -----------------------------------------------------
class Recurrent(nn.Module):
    def __init__(self, cell: str, batch_first: bool):
        super().__init__()
        torch.manual_seed(0)
        make = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn, self.head = make(5, 6, num_layers=2, batch_first=batch_first), nn.Linear(6, 3)
        self.batch_first = batch_first

    def forward(self, x):  # x: (N, T, 5)
        out = self.rnn(x if self.batch_first else x.transpose(0, 1))[0]
        return self.head(out[:, -1] if self.batch_first else out[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_conservation_is_reported_per_sample(cell, batch_first):
    model = Recurrent(cell, batch_first).eval()
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    expl = xk.LRP(model, composite="epsilon", batch_size=3)(x, target=0)
    c = expl.info["conservation"]
    assert (c["residual"].abs() <= 1e-4 * c["start"].abs()).all(), c
    one = [xk.LRP(model, composite="epsilon")(x[i:i + 1], target=0) for i in range(3)]
    torch.testing.assert_close(c["absorbed"], torch.cat([e.info["conservation"]["absorbed"] for e in one]))


# -- 7. the identity rule on sigmoid gates near 0 -----------------------------------------------------------------
def test_identity_rule_on_a_sigmoid_stays_finite_as_its_input_goes_to_zero():
    """AttnLRP on an SE block whose gate input is ~1e-7 for every channel: relevance stays of the order of the
    logit (g·σ(x)/x would scale it by 1/x), the balance closed, the constant σ(0) absorbing its share."""
    model = SqueezeExcite("index").eval()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # shift fc2's bias so that the gate input is 1e-7 for sample 0
        h = F.relu(model.conv(x))
        z = model.fc2(F.relu(model.fc1(h.mean((2, 3)))))
        model.fc2.bias -= z[0] - 1e-7
    expl = xk.LRP(model, composite="attnlrp")(x[:1], target=0)
    c = expl.info["conservation"]
    assert expl.attribution.abs().sum() <= 100 * c["start"].abs().item()
    assert c["residual"].abs().max() <= 1e-4 * c["start"].abs().max()


# -- bad input: names that do not exist -------------------------------------------------------------------------
def test_a_named_embedding_or_layer_that_does_not_exist_is_named_with_close_names():
    with pytest.raises(ValueError, match=r"embedding 'word_embedding' is not a module.*did you mean 'word_embeddings'"):
        xk.LRP(Tagger(), embedding="word_embedding")
    from xaikit.propagation import with_rules

    composite = with_rules("epsilon", by_name={"classifer": "zplus"})
    with pytest.raises(ValueError, match=r"pattern 'classifer' matches no module.*did you mean 'classifier'"):
        xk.LRP(Tagger(), composite=composite)(torch.randint(0, 10, (2, 3), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"layer 'conv' is not a module.*valid names: word_embeddings, classifier"):
        xk.GradCAM(Tagger(), layer="conv")
