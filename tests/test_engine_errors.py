"""Issue 29, items 2 and 8: time-major recurrent networks, activation checkpointing, nn.EmbeddingBag, outputs
without one row per sample, and torch.compile — each runs and explains what the plain model explains, or is
refused with a message that names the fix."""
import itertools
import logging

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import xaikit as xk
from engine_matrix import check_bias_free, check_model
from models import assert_unchanged, snapshot
from text_models import VOCAB, _quiet
from xaikit.propagation import Session, make_composite

COMPOSITES = ("epsilon", "epsilon_plus", "epsilon_gamma_box", "cp_lrp", "attnlrp")


# -- item 2: LSTM/GRU/RNN unrolled for every layout ----------------------------------------------------------------
def _initial_state(cell, layers, dirs, n, hidden, proj, g):
    h = torch.randn(layers * dirs, n, proj or hidden, generator=g)
    return (h, torch.randn(layers * dirs, n, hidden, generator=g)) if cell is nn.LSTM else h


@pytest.mark.parametrize("cell, proj", [(nn.LSTM, 0), (nn.LSTM, 3), (nn.GRU, 0), (nn.RNN, 0)])
def test_unrolled_recurrence_equals_the_fused_result_in_every_layout(cell, proj):
    """batch_first × bidirectional × 1–2 layers × hx given or not: the unrolled forward pass (what the rules
    see) computes the fused kernel's output and final states."""
    g = torch.Generator().manual_seed(0)
    for batch_first, bidirectional, layers, given in itertools.product((True, False), (True, False), (1, 2),
                                                                       (True, False)):
        torch.manual_seed(1)
        options = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        model = cell(5, 6, proj_size=proj, **options).eval() if proj else cell(5, 6, **options).eval()
        x = torch.randn(2, 4, 5, generator=g)
        x = x if batch_first else x.transpose(0, 1).contiguous()
        args = (_initial_state(cell, layers, 1 + bidirectional, 2, 6, proj, g),) if given else ()
        session = Session(model, make_composite("epsilon"))
        out, state = session.forward(x.clone().requires_grad_(True), *args)
        with torch.no_grad():
            expected, expected_state = model(x, *args)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        for a, b in zip(state if isinstance(state, tuple) else (state,),
                        expected_state if isinstance(expected_state, tuple) else (expected_state,)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert "unrolled" in str(session.coverage.as_dict()["handled"]), (options, given)
        assert session.coverage.as_dict()["unknown"] == {}


class TimeMajor(nn.Module):
    """Embedding -> time-major bidirectional 2-layer LSTM/GRU -> linear head on the last step."""

    def __init__(self, cell: type, bias: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 8)
        self.rnn = cell(8, 6, num_layers=2, bidirectional=True, bias=bias)  # batch_first=False
        self.head = nn.Linear(12, 3, bias=bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.embed(ids).transpose(0, 1))[0]  # (T, N, 12)
        return self.head(out[-1])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_time_major_bidirectional_two_layer_recurrence_in_the_matrix(cell):
    ids = torch.randint(0, VOCAB, (3, 6), generator=torch.Generator().manual_seed(0))
    check_model(TimeMajor(cell).eval().double(), ids, 0, composites=("epsilon", "cp_lrp"))
    errors = check_bias_free(TimeMajor(cell, bias=False).eval().double(), ids, 0)
    assert all(e <= 1e-3 for e in errors.values()), errors


# -- item 8a: torch.utils.checkpoint ------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.reentrant = reentrant  # None: no checkpointing
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x) if self.reentrant is None else checkpoint(block, x, use_reentrant=self.reentrant)
        return self.head(x.mean(1))


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_blocks_explain_as_the_plain_model(reentrant):
    """Both checkpoint variants raised (CheckpointError; "incompatible with .grad()"): during the call the
    checkpointed blocks run as plain forward passes, so every composite gives the plain model's relevance."""
    model, plain = Checkpointed(reentrant).eval().double(), Checkpointed(None).eval().double()
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = snapshot(model)
    for composite in COMPOSITES:
        a = xk.LRP(model, composite=composite)(x, target=0)
        b = xk.LRP(plain, composite=composite)(x, target=0)
        torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-10, atol=1e-12)
        assert a.info["coverage"] == b.info["coverage"]
    assert_unchanged(model, before)
    check_model(model, x, 0)
    # outside the call, checkpointing is torch's own again: the backward pass recomputes the blocks
    counts = []
    model.blocks[0].up.register_forward_hook(lambda *_: counts.append(1))
    y = x.clone().requires_grad_(True)
    model(y)[:, 0].sum().backward()
    assert len(counts) == 2 and y.grad is not None


def _bert(checkpointing: bool) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation="eager")
    model = _quiet(lambda: BertForSequenceClassification(config))
    if checkpointing:
        model.gradient_checkpointing_enable()  # use_reentrant=True by default in transformers
    return model


def test_hugging_face_gradient_checkpointing():
    """transformers checkpoints its layers only in training mode. A user's model left in training mode with
    gradient_checkpointing_enable() is explained in eval semantics (a warning says so): the plain model's
    relevance. A session run in training mode goes through transformers' checkpoint calls, which run plainly."""
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))
    model, plain = _bert(True).train().double(), _bert(False).eval().double()
    for composite in ("epsilon", "epsilon_plus", "cp_lrp", "attnlrp"):
        with pytest.warns(UserWarning, match="training mode"):
            a = xk.LRP(model, composite=composite)(ids, target=0)
        b = xk.LRP(plain, composite=composite)(ids, target=0)
        torch.testing.assert_close(a.attribution, b.attribution, rtol=1e-10, atol=1e-12)
    assert model.training
    vectors = plain.get_input_embeddings()(ids).detach()
    grads = []
    for m in (model, plain):
        session = Session(m, make_composite("attnlrp"))
        x = vectors.clone().requires_grad_(True)
        out = session.run(x, lambda m=m, x=x: m(inputs_embeds=x).logits)
        grads.append(torch.autograd.grad(out[:, 0].sum(), x)[0])
        session.release()
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


# -- item 8b: nn.EmbeddingBag -------------------------------------------------------------------------------------
class Bag(nn.Module):
    def __init__(self, mode: str, padding_idx: int | None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag = nn.EmbeddingBag(VOCAB, 8, mode=mode, padding_idx=padding_idx)
        self.head = nn.Linear(8, 3)

    def forward(self, ids, weights=None):
        return self.head(torch.relu(self.bag(ids, per_sample_weights=weights)))


class WrittenOut(nn.Module):
    """The same model with the bag written out over nn.Embedding (the reference)."""

    def __init__(self, bag: Bag) -> None:
        super().__init__()
        self.bag, self.head = bag.bag, bag.head
        self.embed = nn.Embedding.from_pretrained(bag.bag.weight, freeze=False, padding_idx=bag.bag.padding_idx)

    def forward(self, ids, weights=None):
        e = self.embed(ids)
        e = e if weights is None else e * weights.unsqueeze(-1)
        keep = torch.ones_like(ids, dtype=torch.bool) if self.bag.padding_idx is None else ids != self.bag.padding_idx
        keep = keep.unsqueeze(-1)
        if self.bag.mode == "max":
            v = e.masked_fill(~keep, float("-inf")).amax(1)
        elif self.bag.mode == "mean":
            v = e.masked_fill(~keep, 0).sum(1) / keep.sum(1).clamp(min=1)
        else:
            v = e.masked_fill(~keep, 0).sum(1)
        return self.head(torch.relu(v))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_gets_relevance_per_token(mode):
    """Was a raw IndexError. The tokens' vectors are explained and the bag is computed from them: the
    relevance per token equals that of the bag written out over nn.Embedding."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (3, 5), generator=g)
    ids[1, 3:] = 0
    kwargs = {"weights": torch.rand(3, 5, generator=g, dtype=torch.float64)} if mode == "sum" else {}
    for padding_idx in (None, 0):
        model = Bag(mode, padding_idx).eval().double()
        before = snapshot(model)
        for embedding in (None, "bag"):
            expl = xk.LRP(model, composite="epsilon", embedding=embedding)(ids, target=0, forward_kwargs=kwargs)
            ref = xk.LRP(WrittenOut(model).eval(), composite="epsilon", embedding="embed")(
                ids, target=0, forward_kwargs=kwargs)
            assert expl.attribution.shape == (3, 5)
            torch.testing.assert_close(expl.attribution, ref.attribution, rtol=1e-9, atol=1e-12)
            assert expl.info["coverage"]["unknown"] == {}
            c = expl.info["conservation"]
            assert (c["residual"].abs() <= 1e-9 * c["start"].abs()).all()
        if padding_idx == 0:
            assert (expl.attribution[1, 3:] == 0).all()
        assert_unchanged(model, before)


def test_embedding_bag_with_offsets_is_refused_by_name():
    class Flat(Bag):
        def forward(self, ids):
            offsets = torch.arange(0, ids.numel(), ids.shape[1])
            return self.head(self.bag(ids.flatten(), offsets))

    ids = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="EmbeddingBag called with 1-D ids and offsets"):
        xk.LRP(Flat("sum", None).eval(), composite="epsilon", embedding="bag")(ids, target=0)


# -- item 8c: an output without one row per sample -----------------------------------------------------------------
class Rows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3)

    def forward(self, x):  # (N, 5, 4) -> (5·N, 3): flattened over positions
        return self.layer(x).reshape(-1, 3)


@pytest.mark.parametrize("method", [lambda m: xk.LRP(m, composite="epsilon"), xk.Gradient, xk.InputXGradient])
def test_output_batch_other_than_the_input_batch_is_refused(method):
    """LRP crashed in its conservation report, the gradient methods summed the target over all rows."""
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"output of shape \(\d+, 3\).*one output row per input sample"):
        method(Rows().eval())(x, target=0)


# -- item 8d: torch.compile --------------------------------------------------------------------------------------
def test_compiled_model_is_explained_eagerly_without_recompiles():
    """dynamo traced into the engine's handlers and logged recompile warnings. The compiled wrapper's module
    runs eagerly for the call: the same attribution, no dynamo log, no graph compiled. (backend="eager": the
    default backend's CPU compile takes seconds and is not what is tested.)"""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)).eval()
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    compiled(x)  # compiled once, as a user would have
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    graphs = counters["stats"]["unique_graphs"]
    try:
        for composite in ("epsilon", "epsilon_plus", "cp_lrp", "attnlrp"):
            # one chunk each (batch_size="auto" times its chunks: other sizes, other rounding); the same eager
            # computation then gives the same bits
            a = xk.LRP(compiled, composite=composite, batch_size=len(x))(x, target=0)
            b = xk.LRP(model, composite=composite, batch_size=len(x))(x, target=0)
            torch.testing.assert_close(a.attribution, b.attribution, rtol=0, atol=0)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert counters["stats"]["unique_graphs"] == graphs
