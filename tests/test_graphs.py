"""Graph neural networks: the engine on message passing, node relevance and GNN-LRP relevant walks."""
import itertools

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.interactions import GraphLRP

EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 0, 5, 1, 6, 6, 7],
                      [1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 5, 0, 6, 1, 7, 6]])
N = 8


class GCNLayer(nn.Module):
    """Kipf & Welling's layer written with index_select / index_add_ and the symmetric degree normalisation."""

    def __init__(self, i, o):
        super().__init__()
        self.lin = nn.Linear(i, o, bias=False)

    def forward(self, x, edge_index):
        n = x.shape[0]
        loops = torch.arange(n)
        src, dst = torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])
        deg = torch.zeros(n, dtype=x.dtype).index_add_(0, dst, torch.ones(dst.shape[0], dtype=x.dtype))
        norm = deg[src].rsqrt() * deg[dst].rsqrt()
        msg = self.lin(x).index_select(0, src) * norm[:, None]
        return torch.zeros(n, msg.shape[1], dtype=x.dtype).index_add_(0, dst, msg)


class GINLayer(nn.Module):
    """Xu et al.'s layer with scatter_add: MLP((1 + eps) x + Σ_neighbours x)."""

    def __init__(self, i, o):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(i, o, bias=False), nn.ReLU(), nn.Linear(o, o, bias=False))

    def forward(self, x, edge_index):
        index = edge_index[1][:, None].expand(-1, x.shape[1])
        summed = torch.zeros_like(x).scatter_add(0, index, x.gather(0, edge_index[0][:, None].expand(-1, x.shape[1])))
        return self.mlp(1.5 * x + summed)


class SparseLayer(nn.Module):
    """A sparse–dense product with the row-normalised adjacency (with self-loops)."""

    def __init__(self, i, o):
        super().__init__()
        self.lin = nn.Linear(i, o, bias=False)

    def forward(self, x, edge_index):
        n = x.shape[0]
        loops = torch.arange(n)
        src, dst = torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])
        deg = torch.bincount(dst, minlength=n).to(x.dtype)
        adjacency = torch.sparse_coo_tensor(torch.stack([dst, src]), 1 / deg[dst], (n, n))
        return torch.sparse.mm(adjacency, self.lin(x))


class Net(nn.Module):
    def __init__(self, layer, sizes=(3, 6, 5)):
        super().__init__()
        self.c1, self.c2 = layer(sizes[0], sizes[1]), layer(sizes[1], sizes[2])
        self.out = nn.Linear(sizes[2], 2, bias=False)

    def forward(self, x, edge_index, batch=None):
        h = torch.relu(self.c2(torch.relu(self.c1(x, edge_index)), edge_index))
        if batch is None:
            return self.out(h.mean(0, keepdim=True))
        graphs = int(batch.max()) + 1
        pooled = torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)
        return self.out(pooled / torch.bincount(batch, minlength=graphs)[:, None])


def net(layer):
    torch.manual_seed(0)
    return Net(layer).double().eval()


def features():
    return torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", [GCNLayer, GINLayer, SparseLayer])
def test_lrp0_node_relevance_sums_to_the_output_and_walks_sum_to_it(layer):
    model, x = net(layer), features()
    before = snapshot(model)
    tool = GraphLRP(model)
    assert tool.layers == ["c1", "c2"]
    output = float(model(x, EDGES)[0, 1])
    result = tool(x, EDGES, target=1)
    assert abs(float(result.nodes.sum()) - output) < 1e-5 * max(1.0, abs(output))
    assert result.info["coverage"]["unknown"] == {}
    walks = tool.walks(x, EDGES, target=1)
    assert abs(float(walks.relevance.sum()) - output) < 1e-5 * max(1.0, abs(output))
    torch.testing.assert_close(walks.node_relevance(N), result.nodes, rtol=0, atol=1e-9)
    assert_unchanged(model, before)


def test_walk_relevance_equals_the_path_sum_written_out():
    """For a bias-free ReLU GCN under LRP-0, the relevance of walk (j0, j1, j2) is the term of the output's
    expansion along that walk with the ReLU gates of x: x_j0 W1 Â[j1,j0] g1_j1 W2 Â[j2,j1] g2_j2 w / n."""
    model, x = net(GCNLayer), features()
    walks = GraphLRP(model).walks(x, EDGES, target=0)
    adjacency = torch.eye(N, dtype=torch.float64)
    adjacency[EDGES[1], EDGES[0]] = 1
    deg = adjacency.sum(1)
    a_hat = adjacency / deg.sqrt()[:, None] / deg.sqrt()[None]
    w1, w2, w_out = model.c1.lin.weight.T, model.c2.lin.weight.T, model.out.weight[0]
    z1 = a_hat @ x @ w1
    g1 = (z1 > 0).double()
    g2 = (a_hat @ (z1 * g1) @ w2 > 0).double()
    got = {tuple(w): r for w, r in zip(walks.walks.tolist(), walks.relevance.tolist())}
    for j0, j1, j2 in itertools.product(range(N), repeat=3):
        expected = float(torch.einsum("a,ab,b,bc,c,c->", x[j0], w1, g1[j1], w2, g2[j2], w_out)
                         * a_hat[j1, j0] * a_hat[j2, j1] / N)
        assert abs(got.get((j0, j1, j2), 0.0) - expected) < 1e-9
    # the edges' relevance: every walk step along an edge, summed
    edge = walks.edge_relevance()
    for e in (0, 5, 13):
        u, v = EDGES[:, e].tolist()
        manual = sum(r for w, r in got.items() for t in range(2) if (w[t], w[t + 1]) == (u, v))
        assert abs(float(edge[e]) - manual) < 1e-12
    # by sign: the positive and the negative walks add up to the signed sum, their magnitudes to "absolute"
    pos, neg, mag = (walks.edge_relevance(sign=s) for s in ("positive", "negative", "absolute"))
    assert (pos >= 0).all() and (neg <= 0).all() and (pos > 0).any() and (neg < 0).any()
    torch.testing.assert_close(pos + neg, edge, rtol=0, atol=1e-12)
    torch.testing.assert_close(pos - neg, mag, rtol=0, atol=1e-12)
    u, v = EDGES[:, 5].tolist()
    manual = sum(abs(r) for w, r in got.items() for t in range(2) if (w[t], w[t + 1]) == (u, v))
    assert abs(float(mag[5]) - manual) < 1e-12
    with pytest.raises(ValueError, match="sign must be one of"):
        walks.edge_relevance(sign="signed")


def test_node_level_target():
    torch.manual_seed(0)

    class NodeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.out = GCNLayer(3, 4), GCNLayer(4, 4), nn.Linear(4, 2, bias=False)

        def forward(self, x, edge_index):
            return self.out(torch.relu(self.c2(torch.relu(self.c1(x, edge_index)), edge_index)))

    model, x = NodeNet().double().eval(), features()
    tool = GraphLRP(model)
    output = float(model(x, EDGES)[3, 0])
    assert abs(float(tool(x, EDGES, target=0, node=3).nodes.sum()) - output) < 1e-9
    walks = tool.walks(x, EDGES, target=0, node=3)
    assert abs(float(walks.relevance.sum()) - output) < 1e-9
    assert set(walks.walks[:, -1].tolist()) == {3}  # a node's walks end on it
    assert set(walks.walks[:, 1].tolist()) <= {2, 3, 4}  # ... after a step from a neighbour or itself


def test_bad_graphs_are_refused_clearly():
    model, x = net(GCNLayer), features()
    tool = GraphLRP(model)
    with pytest.raises(ValueError, match="edge_index is missing"):
        tool(x)
    with pytest.raises(ValueError, match="edge_index is missing"):
        tool.walks(type("Data", (), {"x": x})())
    with pytest.raises(ValueError, match="edge_index must be an integer tensor"):
        tool(x, EDGES.double())
    with pytest.raises(ValueError, match="outside 0..7"):
        tool(x, EDGES + 5)
    with pytest.raises(ValueError, match="node must be"):
        tool(x, EDGES, node=8)


def test_sparse_products_are_linear_operations_of_the_engine():
    model, x = net(SparseLayer), features()
    expl = xk.LRP(_OneGraph(model), composite="zero")(x[None], target=0)
    assert "_sparse_mm" in expl.info["coverage"]["linear"] and not expl.info["coverage"]["unknown"]


class _OneGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x[0], EDGES)


def test_pytorch_geometric_layers():
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)

    class PygNet(nn.Module):
        def __init__(self, kind):
            super().__init__()
            if kind == "gin":
                first = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 6, bias=False))
                self.c1 = pyg.GINConv(first)
                self.c2 = pyg.GINConv(nn.Sequential(nn.Linear(6, 6, bias=False)))
            else:
                layer = {"gcn": pyg.GCNConv, "graph": pyg.GraphConv, "sage": pyg.SAGEConv}[kind]
                self.c1, self.c2 = layer(3, 6, bias=False), layer(6, 6, bias=False)
            self.out = nn.Linear(6, 2, bias=False)

        def forward(self, x, edge_index, batch=None):
            h = torch.relu(self.c2(torch.relu(self.c1(x, edge_index)), edge_index))
            return self.out(pyg.global_mean_pool(h, batch))

    x = features()
    for kind in ("gcn", "gin", "graph", "sage"):
        model = PygNet(kind).double().eval()
        before = snapshot(model)
        tool = GraphLRP(model)
        assert tool.layers == ["c1", "c2"]
        output = float(model(x, EDGES)[0, 0])
        result = tool(x, EDGES, target=0)
        assert abs(float(result.nodes.sum()) - output) < 1e-5 * max(1.0, abs(output)), kind
        assert result.info["coverage"]["unknown"] == {}, kind
        assert abs(float(tool.walks(x, EDGES, target=0).relevance.sum()) - output) < 1e-5 * max(1.0, abs(output))
        assert_unchanged(model, before)


def test_walks_of_a_contrast_sum_to_the_difference_of_the_outputs():
    model, x = net(GINLayer), features()
    walks = GraphLRP(model).walks(x, EDGES, target=xk.Contrast(1, 0))
    output = model(x, EDGES)[0].detach()
    assert abs(float(walks.relevance.sum()) - float(output[1] - output[0])) < 1e-9
    with pytest.raises(ValueError, match="Contrast of two class indices"):
        GraphLRP(model).walks(x, EDGES, target=xk.Contrast(None, 0))


def test_gnn_lrp_gamma_walks_sum_to_the_node_relevance_and_to_the_output():
    """GNN-LRP's own rule (LRP-γ on every layer, the ``gamma`` preset): linear in the relevance it receives, so the
    walks still split the node relevance exactly; bias-free, it conserves the output."""
    model, x = net(GINLayer), features()
    tool = GraphLRP(model, method="lrp:composite=gamma,gamma=1")
    output = float(model(x, EDGES)[0, 1])
    nodes = tool(x, EDGES, target=1).nodes
    walks = tool.walks(x, EDGES, target=1)
    torch.testing.assert_close(walks.node_relevance(N), nodes, rtol=0, atol=1e-9)
    assert abs(float(nodes.sum()) - output) < 1e-5 * max(1.0, abs(output))
    zero = GraphLRP(model).walks(x, EDGES, target=1).relevance
    assert not torch.allclose(walks.relevance, zero)  # γ is not LRP-0 on this network
