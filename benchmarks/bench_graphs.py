"""House motifs: do GNN-LRP's relevant walks find the motif a graph classifier uses? Against PyG's GNNExplainer.

The task (BA-2Motifs-like, Luo et al. 2020): a random base graph (a random tree with a few extra edges) with a
motif attached by one edge: a house (5 nodes, 6 edges; class 1) or a 5-cycle (class 0). Node features are
constant, so only the structure tells the classes apart. A 3-layer GIN (PyTorch Geometric's ``GINConv``,
``global_mean_pool``) is trained on 400 graphs. For each test graph of class 1 the undirected edges are ranked
by relevance (GNN-LRP: the summed relevance of the walks through each edge, both directions; GNNExplainer:
its edge mask, both directions) and the score is the share of the top 6 that are house edges.

Run (benchmark venv with torch-geometric, see benchmarks/results/interactions.md):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_graphs.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from xaikit.interactions import GraphLRP

HOUSE = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4)]  # a square with a roof on edge (0, 1)
CYCLE = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]


def make_graph(label: int, generator: torch.Generator, base: int = 20) -> tuple[torch.Tensor, torch.Tensor, set]:
    """``(x, edge_index, motif_edges)`` of one graph; motif edges as undirected pairs of node ids."""
    edges = set()
    for node in range(1, base):  # a random tree
        parent = int(torch.randint(0, node, (1,), generator=generator))
        edges.add((parent, node))
    for _ in range(base // 5):  # a few extra edges
        a, b = torch.randint(0, base, (2,), generator=generator).tolist()
        if a != b:
            edges.add((min(a, b), max(a, b)))
    motif = {(base + a, base + b) for a, b in (HOUSE if label == 1 else CYCLE)}
    edges |= motif
    anchor = int(torch.randint(0, base, (1,), generator=generator))
    edges.add((anchor, base + int(torch.randint(0, 5, (1,), generator=generator))))
    pairs = torch.tensor(sorted(edges)).T
    edge_index = torch.cat([pairs, pairs.flip(0)], 1)
    return torch.ones(base + 5, 1), edge_index, {tuple(sorted(e)) for e in motif}


class GIN(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        from torch_geometric.nn import GINConv

        def mlp(i: int) -> nn.Module:
            return nn.Sequential(nn.Linear(i, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

        self.c1, self.c2, self.c3 = GINConv(mlp(1)), GINConv(mlp(hidden)), GINConv(mlp(hidden))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, edge_index, batch=None):
        from torch_geometric.nn import global_mean_pool

        h = torch.relu(self.c1(x, edge_index))
        h = torch.relu(self.c2(h, edge_index))
        h = torch.relu(self.c3(h, edge_index))
        return self.out(global_mean_pool(h, batch))


def train(graphs: list, epochs: int, seed: int = 0) -> GIN:
    from torch_geometric.data import Batch, Data

    torch.manual_seed(seed)
    model = GIN()
    data = Batch.from_data_list([Data(x=x, edge_index=e, y=torch.tensor([y])) for x, e, _, y in graphs])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(data.x, data.edge_index, data.batch), data.y)
        loss.backward()
        optimiser.step()
    return model.eval()


def accuracy(model: GIN, graphs: list) -> float:
    with torch.no_grad():
        return sum(int(model(x, e).argmax(1)) == y for x, e, _, y in graphs) / len(graphs)


def top_share(edge_index: torch.Tensor, score: torch.Tensor, motif: set, k: int = 6,
              of_motif_nodes: bool = False) -> float:
    """Share of the top-k undirected edges (scores of both directions summed) that are motif edges; with
    ``of_motif_nodes``, ranking only the edges that touch a motif node (the motif's and the attaching edge)."""
    total: dict = {}
    nodes = {n for e in motif for n in e}
    for (a, b), s in zip(edge_index.T.tolist(), score.tolist()):
        key = (min(a, b), max(a, b))
        if of_motif_nodes and not (a in nodes or b in nodes):
            continue
        total[key] = total.get(key, 0.0) + s
    ranked = sorted(total, key=lambda e: -total[e])[:k]
    return sum(e in motif for e in ranked) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=400)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from torch_geometric.explain import Explainer, GNNExplainer

    generator = torch.Generator().manual_seed(0)
    graphs = [(*make_graph(i % 2, generator), i % 2) for i in range(args.graphs + args.test)]
    began = time.perf_counter()
    model = train(graphs[:args.graphs], args.epochs)
    print(f"trained in {time.perf_counter() - began:.1f} s; accuracy train "
          f"{accuracy(model, graphs[:args.graphs]):.3f}, test {accuracy(model, graphs[args.graphs:]):.3f}")
    houses = [g for g in graphs[args.graphs:] if g[3] == 1]
    tool = GraphLRP(model, method="lrp:composite=epsilon")
    explainer = Explainer(model, GNNExplainer(epochs=100), explanation_type="model", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="graph", return_type="raw"))
    scores = {"GNN-LRP walks": [], "GNNExplainer": []}
    local = {"GNN-LRP walks": [], "GNNExplainer": []}
    times = {"GNN-LRP walks": [], "GNNExplainer": []}
    for x, edge_index, motif, _ in houses:
        began = time.perf_counter()
        walks = tool.walks(x, edge_index, target=1)
        times["GNN-LRP walks"].append(time.perf_counter() - began)
        scores["GNN-LRP walks"].append(top_share(edge_index, walks.edge_relevance(), motif))
        local["GNN-LRP walks"].append(top_share(edge_index, walks.edge_relevance(), motif, of_motif_nodes=True))
        torch.manual_seed(0)
        began = time.perf_counter()
        mask = explainer(x, edge_index).edge_mask  # explains the prediction (class 1 on these graphs)
        times["GNNExplainer"].append(time.perf_counter() - began)
        scores["GNNExplainer"].append(top_share(edge_index, mask.detach(), motif))
        local["GNNExplainer"].append(top_share(edge_index, mask.detach(), motif, of_motif_nodes=True))
    print(f"\n{len(houses)} house graphs of the test set; share of the top-6 edges that are house edges\n")
    print("| explainer | mean share | graphs with share >= 0.8 | among the edges of house nodes: mean share | "
          "seconds per graph (median) |")
    print("|---|---|---|---|---|")
    for name in scores:
        s = scores[name]
        print(f"| {name} | {statistics.mean(s):.3f} | {sum(v >= 0.8 for v in s)}/{len(s)} | "
              f"{statistics.mean(local[name]):.3f} | {statistics.median(times[name]):.3f} |")


if __name__ == "__main__":
    main()
