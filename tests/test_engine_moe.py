"""Mixture-of-experts layers and the operations that move or sum values by index (issue 29, items 3 and 7).

Each newly linear operation is checked against a written-out equivalent made of operations the engine already
knew (one-hot matrix products, gathers, real arithmetic): same relevance, same absorbed share, nothing
unknown. The router's top-k weights stay a gate (``softmax → topk → renormalise → multiply``), so under ε and
CP-LRP the expert output takes all the relevance; Mixtral and Qwen2-MoE (eager experts and the default
``torch._grouped_mm`` kernel) and a graph network written with ``index_add_`` pass the model-matrix checks.
"""
from __future__ import annotations

import warnings
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from engine_matrix import check_bias_free, check_model, quiet
from text_models import bias_free
from xaikit.propagation import Composite, make_rule

HIDDEN, SLOTS = 8, 5


def _index() -> torch.Tensor:
    """Where each of the HIDDEN features goes among SLOTS slots (slot 4 receives nothing)."""
    return torch.tensor([0, 2, 1, 0, 3, 2, 1, 0])


def _one_hot(index: torch.Tensor) -> torch.Tensor:
    """(HIDDEN, SLOTS) with ``M[i, index[i]] = 1``: ``h @ M`` sums the features by slot."""
    return F.one_hot(index, SLOTS).double()


class Around(nn.Module):
    """``x → Linear → op → Linear``: an operation between two layers, with a constant ``c`` it may use."""

    def __init__(self, op: Callable, width: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.op = op
        self.inp = nn.Linear(6, HIDDEN).double()
        self.head = nn.Linear(width, 3).double()
        self.c = nn.Parameter(torch.randn(SLOTS, generator=generator, dtype=torch.float64))
        self.table = nn.Parameter(torch.randn(7, 4, generator=generator, dtype=torch.float64))
        with torch.no_grad():
            for p in (*self.inp.parameters(), *self.head.parameters()):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(self.op(self, h).flatten(1))


def _c(m: Around, h: torch.Tensor) -> torch.Tensor:
    return m.c.expand(h.shape[0], SLOTS).clone()


IDX = _index()
M = _one_hot(IDX)
HIT = (M.sum(0) > 0).double()
COUNT = M.sum(0)
BAGS = torch.tensor([[0, 3, 3, 6, 1, 2, 5, 4]])
FREQS = torch.polar(torch.ones(4, dtype=torch.float64), torch.arange(4, dtype=torch.float64))

#: name -> (operation under test, written-out equivalent, output width)
PAIRS: dict[str, tuple[Callable, Callable, int]] = {
    "index_add_ constant self": (lambda m, h: _c(m, h).index_add_(1, IDX, h), lambda m, h: m.c + h @ M, SLOTS),
    "index_add activations": (lambda m, h: torch.index_add(h[:, :SLOTS], 1, IDX, h, alpha=2.0),
                              lambda m, h: h[:, :SLOTS] + 2.0 * (h @ M), SLOTS),
    "scatter_add": (lambda m, h: _c(m, h).scatter_add(1, IDX.expand(h.shape[0], -1), h),
                    lambda m, h: m.c + h @ M, SLOTS),
    "scatter_reduce sum": (
        lambda m, h: _c(m, h).scatter_reduce(1, IDX.expand(h.shape[0], -1), h, "sum", include_self=False),
        lambda m, h: h @ M + m.c * (1 - HIT), SLOTS),
    "scatter_reduce mean": (
        lambda m, h: _c(m, h).scatter_reduce_(1, IDX.expand(h.shape[0], -1), h, "mean"),
        lambda m, h: (m.c + h @ M) / (1 + COUNT), SLOTS),
    "scatter_reduce amax": (
        lambda m, h: h.new_zeros(h.shape[0], SLOTS - 1).scatter_reduce(
            1, IDX.expand(h.shape[0], -1), h, "amax", include_self=False),
        lambda m, h: torch.stack([h[:, IDX == j].amax(1) for j in range(SLOTS - 1)], 1), SLOTS - 1),
    "embedding_bag weighted": (
        lambda m, h: F.embedding_bag(BAGS.expand(h.shape[0], -1), m.table, per_sample_weights=h, mode="sum"),
        lambda m, h: (h[..., None] * m.table[BAGS.expand(h.shape[0], -1)]).sum(1), 4),
    "tensor_split": (lambda m, h: torch.cat(h.tensor_split(3, dim=1)[::-1], 1),
                     lambda m, h: torch.cat([h.narrow(1, 6, 2), h.narrow(1, 3, 3), h.narrow(1, 0, 3)], 1), HIDDEN),
    "view_as_complex/real": (
        lambda m, h: torch.view_as_real(torch.view_as_complex(h.view(-1, 4, 2)) * FREQS),
        lambda m, h: torch.stack([h[..., 0::2] * FREQS.real - h[..., 1::2] * FREQS.imag,
                                  h[..., 0::2] * FREQS.imag + h[..., 1::2] * FREQS.real], -1), HIDDEN),
    "topk": (lambda m, h: h.topk(3, dim=1).values,
             lambda m, h: h.gather(1, h.detach().topk(3, dim=1).indices), 3),
    "sort": (lambda m, h: h.sort(1, descending=True).values,
             lambda m, h: h.gather(1, h.detach().argsort(1, descending=True)), HIDDEN),
}


def _explain(model: nn.Module, x: torch.Tensor, composite="epsilon", **kwargs) -> xk.Explanation:
    return xk.LRP(model, composite=composite, batch_size=len(x), **kwargs)(x, target=0)


@pytest.mark.parametrize("pair", PAIRS)
def test_each_linear_operation_gives_the_relevance_of_its_written_out_form(pair):
    """Relevance and absorbed share through the operation equal those through the equivalent the engine
    already knew (so input × gradient is exact for it, and a constant operand's share is absorbed like an
    added constant's); nothing is unknown and the balance closes."""
    op, reference, width = PAIRS[pair]
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got, want = (_explain(Around(f, width), x) for f in (op, reference))
    assert got.info["coverage"]["unknown"] == {}, got.info["coverage"]
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-9, atol=1e-12)
    for key in ("absorbed", "residual"):
        torch.testing.assert_close(got.info["conservation"][key], want.info["conservation"][key],
                                   rtol=1e-9, atol=1e-12)
    assert (got.info["conservation"]["residual"].abs() <= 1e-9).all()


@pytest.mark.parametrize("op", [
    lambda m, h: _c(m, h).scatter_reduce(1, IDX.expand(h.shape[0], -1), h, "prod"),
    lambda m, h: _c(m, h).scatter_reduce(1, IDX.expand(h.shape[0], -1), h, "amax"),  # may select the constant
], ids=["prod", "amax over a non-zero constant"])
def test_non_linear_reductions_stay_unknown(op):
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = _explain(Around(op, SLOTS), x)
    assert any(k.startswith("scatter_reduce:") for k in expl.info["coverage"]["unknown"]), expl.info["coverage"]


# -- torch._grouped_mm: one linear layer per group of rows ---------------------------------------------------
OFFS = torch.tensor([2, 2, 5, 6], dtype=torch.int32)  # group 1 is empty


class Grouped(nn.Module):
    """Rows grouped as a mixture of experts sorts them: ``_grouped_mm`` (or each group's ``F.linear`` written
    out) between two layers; float32 (the CPU kernel has no float64)."""

    def __init__(self, written_out: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.inp, self.head = nn.Linear(6, HIDDEN), nn.Linear(4, 3)
        # (experts, out, in), as transformers stores them
        self.experts = nn.Parameter(torch.randn(len(OFFS), 4, HIDDEN))
        self.written_out = written_out
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        if self.written_out:
            starts = [0, *OFFS.tolist()[:-1]]
            y = torch.cat([F.linear(h[a:b], self.experts[g]) for g, (a, b) in enumerate(zip(starts, OFFS.tolist()))])
        else:
            y = torch._grouped_mm(h, self.experts.transpose(-2, -1), offs=OFFS)
        return self.head(y)


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "gamma", "alpha_beta", "zero"])
def test_grouped_mm_gets_the_dense_rule_of_each_group(rule):
    """``_grouped_mm`` with parameter weights: the composite's dense rule, applied per group, gives the
    relevance of the groups' ``F.linear`` calls written out (ε by gradient rescaling, the other rules through
    the modified forward and transposed passes of the grouped product)."""
    composite = Composite(f"dense_{rule}", dense=make_rule(rule))
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(4))
    got, want = (_explain(Grouped(w), x, composite) for w in (False, True))
    assert got.info["coverage"]["unknown"] == {}
    assert got.info["coverage"]["handled"].get(f"_grouped_mm:{make_rule(rule).name}") == 1, got.info["coverage"]
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-4, atol=1e-6)
    # (the written-out form books a layer's absorbed share on a subset of the rows evenly over the batch, so
    # only the totals compare; the grouped call's rows are the samples, and its balance closes per sample)
    torch.testing.assert_close(got.info["conservation"]["absorbed"].sum(), want.info["conservation"]["absorbed"].sum(),
                               rtol=1e-4, atol=1e-6)
    c = got.info["conservation"]
    assert (c["residual"].abs() <= 1e-4 * c["start"].abs()).all(), c


# -- the router's gate ---------------------------------------------------------------------------------------
class Routed(nn.Module):
    """A bias-free top-2 router over 4 experts: softmax → topk → renormalise in place → weight the experts."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.router = nn.Linear(6, 4, bias=False)
        self.experts = nn.Parameter(torch.randn(4, 6, 3))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = torch.softmax(self.router(x), -1).topk(2, dim=-1)
        weights /= weights.sum(-1, keepdim=True)
        outputs = torch.einsum("nd,nkdo->nko", x, self.experts[chosen])
        return (outputs * weights[..., None]).sum(1)


def test_topk_of_a_gate_is_a_gate_and_the_expert_output_takes_all():
    """Under ε the product of the routing weight with the expert output gets the gate rule: the routing
    branch receives nothing, so without additive constants the input relevance is the logit."""
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    expl = _explain(Routed().double(), x, epsilon=1e-12)
    c = expl.info["conservation"]
    assert expl.info["coverage"]["unknown"] == {}
    assert expl.info["coverage"]["handled"].get("mul:signal_takes_all") == 1, expl.info["coverage"]
    torch.testing.assert_close(c["input"], c["start"], rtol=1e-9, atol=0)


# -- the model matrix ------------------------------------------------------------------------------------------
VOCAB = 48
IDS = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
TARGET = xk.NextToken(-1)


def _mixtral(experts: str) -> nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=32, experts_implementation=experts)
    return quiet(lambda: MixtralForCausalLM(config).eval())


def _qwen2_moe() -> nn.Module:
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, moe_intermediate_size=16,
                            shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
                            norm_topk_prob=True, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, max_position_embeddings=32, experts_implementation="eager")
    return quiet(lambda: Qwen2MoeForCausalLM(config).eval())


MOE = {
    "mixtral eager": lambda: _mixtral("eager").double(),
    "mixtral grouped_mm": lambda: _mixtral("grouped_mm"),  # transformers' default; float32 (no CPU float64 kernel)
    "qwen2-moe eager": lambda: _qwen2_moe().double(),
}


@pytest.mark.parametrize("name", MOE)
def test_mixture_of_experts_in_the_model_matrix(name):
    """Runs, nothing unknown (topk, index_add_, _grouped_mm), the balance closes, the model is unchanged; with
    biases zeroed the input relevance is the logit under ε, CP-LRP and (with its Taylor share) AttnLRP."""
    model = MOE[name]()
    reports = check_model(model, IDS, TARGET)
    assert all((r["start"].abs() > 1e-3).all() for r in reports.values())
    check_bias_free(bias_free(model), IDS, TARGET, composites=("epsilon", "cp_lrp", "attnlrp"))


class GCN(nn.Module):
    """Two graph convolutions written with ``index_add_`` (messages ``h[:, src] · w`` summed at ``dst`` onto a
    per-node bias), a mean over the nodes and a linear head; a batch of graphs with the same edges."""

    def __init__(self, nodes: int = 5) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(8)
        self.register_buffer("src", torch.tensor([0, 1, 1, 2, 3, 4, 4, 0, 2]))
        self.register_buffer("dst", torch.tensor([1, 0, 2, 1, 4, 3, 0, 0, 3]))
        self.register_buffer("w", torch.rand(9, generator=generator) + 0.5)
        self.lin1, self.lin2, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.node_bias = nn.Parameter(torch.randn(nodes, 8, generator=generator))
        self.eval()

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        out = self.node_bias.expand(h.shape).clone()
        out.index_add_(1, self.dst, h[:, self.src] * self.w[:, None])
        return torch.relu(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.propagate(self.lin1(x))
        h = self.propagate(self.lin2(h))
        return self.head(h.mean(1))


def test_gcn_with_index_add_in_the_model_matrix():
    model = GCN().double()
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    reports = check_model(model, x, 0)
    assert (reports["epsilon"]["absorbed"].abs() > 1e-3).all()  # the node biases' share, booked as absorbed
    check_bias_free(bias_free(model), x, 0, composites=("epsilon", "cp_lrp", "attnlrp"))
