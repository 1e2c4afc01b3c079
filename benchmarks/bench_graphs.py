"""House motifs: do GNN-LRP's relevant walks find the motif a graph classifier uses? Against PyG's GNNExplainer.

The task (BA-2Motifs-like, Luo et al. 2020): a random base graph (a random tree with a few extra edges) with a
motif attached by one edge: a house (5 nodes, 6 edges; class 1) or a 5-cycle (class 0). Node features are
constant, so only the structure tells the classes apart. A 3-layer GIN (PyTorch Geometric's ``GINConv``,
``global_mean_pool``) is trained on 400 graphs. For each test graph of class 1 the undirected edges are ranked
by relevance (GNN-LRP: the summed relevance of the walks through each edge, both directions, signed or
their magnitudes; GNNExplainer:
its edge mask, both directions) and the score is the share of the top 6 that are house edges.

Run (benchmark venv with torch-geometric, see benchmarks/results/interactions.md):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_graphs.py --test 240 --seeds 3

The default explainer is LRP-γ with γ = 1 on every layer (``lrp:composite=gamma,gamma=1``), the rule of GNN-LRP
(Schnake et al. 2022); γ was chosen among {0.05, 0.25, 1, 4} and z⁺ on the first 40 test houses of seed 0 (see
benchmarks/results/interactions.md).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from xaikit import Contrast
from xaikit.interactions import GraphLRP

HOUSE = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4)]  # a square with a roof on edge (0, 1)
CYCLE = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]


def make_graph(label: int, generator: torch.Generator, base: int = 20, kind: str = "ba",
               task: str = "2motifs") -> tuple[torch.Tensor, torch.Tensor, set]:
    """``(x, edge_index, motif_edges)`` of one graph; motif edges as undirected pairs of node ids. ``kind="ba"``:
    the base of BA-2Motifs, a Barabási–Albert graph with one edge per new node (a new node links to an old one
    with probability proportional to its degree); ``"tree+"``: a uniform random recursive tree with base // 5
    extra random edges (the first version of this benchmark: its extra edges put cycles into the base).
    ``task="house-vs-tree"``: class 0 has no motif, its base grows by 5 more nodes instead."""
    if task == "house-vs-tree" and label == 0:
        x, edge_index, _ = make_graph(1, generator, base + 5, kind)
        keep = (edge_index < base + 5).all(0)  # drop the house again: a base of base + 5 nodes
        return x[:base + 5], edge_index[:, keep], set()
    edges = set()
    if kind == "ba":
        targets = [0]  # node ids repeated by degree (node 0 starts with weight one)
        for node in range(1, base):
            parent = targets[int(torch.randint(0, len(targets), (1,), generator=generator))]
            edges.add((parent, node))
            targets += [parent, node]
    else:
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
    def __init__(self, hidden: int = 32, pool: str = "add") -> None:
        super().__init__()
        from torch_geometric.nn import GINConv

        def mlp(i: int) -> nn.Module:
            return nn.Sequential(nn.Linear(i, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

        self.c1, self.c2, self.c3 = GINConv(mlp(1)), GINConv(mlp(hidden)), GINConv(mlp(hidden))
        self.out = nn.Linear(hidden, 2)
        self.pool = pool

    def forward(self, x, edge_index, batch=None):
        from torch_geometric.nn import global_add_pool, global_mean_pool

        h = torch.relu(self.c1(x, edge_index))
        h = torch.relu(self.c2(h, edge_index))
        h = torch.relu(self.c3(h, edge_index))
        return self.out((global_add_pool if self.pool == "add" else global_mean_pool)(h, batch))


def train(graphs: list, epochs: int, seed: int = 0, pool: str = "add") -> GIN:
    from torch_geometric.data import Batch, Data

    torch.manual_seed(seed)
    model = GIN(pool=pool)
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


def evaluate(args, seed: int) -> tuple[dict, dict, dict, str]:
    """Train on graphs drawn with ``seed`` (model seed the same) and score the explainers on its test houses and
    5-cycles: ``(house shares, house shares among motif-node edges, seconds, accuracy line)`` plus 5-cycle shares
    in the first dict under ``("cycle", name)``."""
    from torch_geometric.explain import Explainer, GNNExplainer

    generator = torch.Generator().manual_seed(seed)
    graphs = [(*make_graph(i % 2, generator, kind=args.base, task=args.task), i % 2)
              for i in range(args.graphs + args.test)]
    began = time.perf_counter()
    model = train(graphs[:args.graphs], args.epochs, seed=seed, pool=args.pool)
    line = (f"seed {seed}: trained in {time.perf_counter() - began:.1f} s; accuracy train "
            f"{accuracy(model, graphs[:args.graphs]):.3f}, test {accuracy(model, graphs[args.graphs:]):.3f}")
    print(line, flush=True)
    houses = [g for g in graphs[args.graphs:] if g[3] == 1]
    cycles = [g for g in graphs[args.graphs:] if g[3] == 0 and g[2]]
    tool = GraphLRP(model, method=args.method)
    explainer = Explainer(model, GNNExplainer(epochs=100), explanation_type="model", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="graph", return_type="raw"))
    names = ("GNN-LRP walks", "GNN-LRP walks, absolute", "GNNExplainer")
    scores: dict = {k: [] for k in names}
    local: dict = {k: [] for k in names}
    times: dict = {k: [] for k in names}
    for x, edge_index, motif, _ in houses:
        began = time.perf_counter()
        walks = tool.walks(x, edge_index, target=Contrast(1, 0) if args.contrast else 1)
        times["GNN-LRP walks"].append(time.perf_counter() - began)
        times["GNN-LRP walks, absolute"].append(times["GNN-LRP walks"][-1])
        for name, sign in (("GNN-LRP walks", "all"), ("GNN-LRP walks, absolute", "absolute")):
            scores[name].append(top_share(edge_index, walks.edge_relevance(sign), motif))
            local[name].append(top_share(edge_index, walks.edge_relevance(sign), motif, of_motif_nodes=True))
        if args.no_gnnexplainer:
            continue
        torch.manual_seed(0)
        began = time.perf_counter()
        mask = explainer(x, edge_index).edge_mask  # explains the prediction (class 1 on these graphs)
        times["GNNExplainer"].append(time.perf_counter() - began)
        scores["GNNExplainer"].append(top_share(edge_index, mask.detach(), motif))
        local["GNNExplainer"].append(top_share(edge_index, mask.detach(), motif, of_motif_nodes=True))
    # the other class: is the evidence for "cycle" in the 5-cycle? (top-5 edges, the cycle has 5)
    for x, edge_index, motif, _ in cycles:
        walks = tool.walks(x, edge_index, target=Contrast(0, 1) if args.contrast else 0)
        for name, sign in (("GNN-LRP walks", "all"), ("GNN-LRP walks, absolute", "absolute")):
            scores.setdefault(("cycle", name), []).append(
                top_share(edge_index, walks.edge_relevance(sign), motif, k=len(motif)))
        if args.no_gnnexplainer:
            continue
        torch.manual_seed(0)
        mask = explainer(x, edge_index).edge_mask
        scores.setdefault(("cycle", "GNNExplainer"), []).append(top_share(edge_index, mask.detach(), motif,
                                                                          k=len(motif)))
    return scores, local, times, line


def _mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "—"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=400)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--base", choices=("ba", "tree+"), default="ba")
    parser.add_argument("--pool", choices=("add", "mean"), default="add")
    parser.add_argument("--method", default="lrp:composite=gamma,gamma=1")
    parser.add_argument("--contrast", action="store_true", help="explain logit 1 - logit 0 (walks)")
    parser.add_argument("--task", choices=("2motifs", "house-vs-tree"), default="2motifs")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..S-1: graphs drawn and model trained with each")
    parser.add_argument("--no-gnnexplainer", action="store_true")
    args = parser.parse_args()
    print(vars(args))
    torch.set_num_threads(1)
    per_seed = [evaluate(args, seed) for seed in range(args.seeds)]
    names = [k for k in per_seed[0][0] if isinstance(k, str) and per_seed[0][0][k]]
    print(f"\n{args.seeds} seed(s); house graphs of each test set; share of the top-6 edges that are house edges; "
          "mean over graphs, then mean ± se over seeds\n")
    print("| explainer | mean share | graphs with share >= 0.8 | among the edges of house nodes: mean share | "
          "seconds per graph (median) |")
    print("|---|---|---|---|---|")
    for name in names:
        shares = [statistics.mean(s[name]) for s, *_ in per_seed]
        above = sum(sum(v >= 0.8 for v in s[name]) for s, *_ in per_seed)
        count = sum(len(s[name]) for s, *_ in per_seed)
        local = [statistics.mean(loc[name]) for _, loc, *_ in per_seed]
        seconds = statistics.median([t for _, _, times, _ in per_seed for t in times[name]])
        print(f"| {name} | {_mean_se(shares)} | {above}/{count} | {_mean_se(local)} | {seconds:.3f} |")
    cycle_names = [k[1] for k in per_seed[0][0] if isinstance(k, tuple)]
    if not cycle_names:
        return
    print("\n5-cycle graphs of each test set (class 0 explained); share of the top-5 edges in the cycle\n")
    print("| explainer | mean share | graphs with share >= 0.8 |")
    print("|---|---|---|")
    for name in cycle_names:
        shares = [statistics.mean(s[("cycle", name)]) for s, *_ in per_seed]
        above = sum(sum(v >= 0.8 for v in s[("cycle", name)]) for s, *_ in per_seed)
        count = sum(len(s[("cycle", name)]) for s, *_ in per_seed)
        print(f"| {name} | {_mean_se(shares)} | {above}/{count} |")


if __name__ == "__main__":
    main()
