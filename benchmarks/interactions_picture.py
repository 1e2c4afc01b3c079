"""The pictures of docs/interactions.md: k-SII pairs of a wine row (docs/interactions.png) and the top relevant
walks of a GIN on a house-motif graph (docs/walks.png; needs torch-geometric).

Run: PYTHONPATH=src python benchmarks/interactions_picture.py [--out docs]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).parent))
from bench_graphs import make_graph, train  # noqa: E402

from xaikit import viz  # noqa: E402
from xaikit.interactions import GraphLRP, ShapleyInteractions  # noqa: E402
from xaikit.zoo import train_wine_mlp  # noqa: E402

NAMES = ["alcohol", "malic", "ash", "alcalinity", "magnesium", "phenols", "flavanoids", "nonflav", "proanth",
         "colour", "hue", "od280", "proline"]


def interactions_picture(out: Path) -> None:
    model, x, _ = train_wine_mlp()
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731
    row = x[:1]
    # every coalition (the default budget, 2048, would estimate at d = 13)
    result = ShapleyInteractions(fn, index="k-SII", order=2, budget=2**13 - 2)(row, target=int(fn(row).argmax()))
    assert result.info["exact"]
    left = viz.plot_interaction_matrix(result, 0, NAMES)
    right = viz.plot_interaction_network(result, 0, NAMES, top=10)
    fig = Figure(figsize=(12, 5.5))
    for k, part in enumerate((left, right)):
        canvas = FigureCanvasAgg(part)
        canvas.draw()
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(np.asarray(canvas.buffer_rgba()))
        ax.axis("off")
    fig.suptitle("exact k-SII (order 2) of a wine row, class probability: the matrix and the 10 strongest pairs")
    fig.tight_layout()
    fig.savefig(out / "interactions.png", dpi=110)


def layout(edge_index: torch.Tensor, n: int, steps: int = 300, seed: int = 0) -> np.ndarray:
    """A force-directed layout (Fruchterman & Reingold 1991), written out."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n, 2))
    edges = edge_index.T.numpy()
    k = 1.0 / np.sqrt(n)
    for step in range(steps):
        delta = pos[:, None] - pos[None]
        dist = np.linalg.norm(delta, axis=2) + 1e-9
        force = (delta / dist[..., None] * (k * k / dist)[..., None]).sum(1)
        pull = pos[edges[:, 0]] - pos[edges[:, 1]]
        length = np.linalg.norm(pull, axis=1, keepdims=True) + 1e-9
        np.add.at(force, edges[:, 0], -pull * length / k)
        np.add.at(force, edges[:, 1], pull * length / k)
        temperature = 0.1 * (1 - step / steps) + 1e-3
        size = np.linalg.norm(force, axis=1, keepdims=True) + 1e-9
        pos += force / size * np.minimum(size, temperature)
    return (pos - pos.mean(0)) / np.abs(pos).max()


def walks_picture(out: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    graphs = [(*make_graph(i % 2, generator), i % 2) for i in range(400)]
    model = train(graphs, 300)
    x, edge_index, motif, _ = next(g for g in graphs[1::2] if int(model(g[0], g[1]).argmax()) == 1)
    walks = GraphLRP(model, method="lrp:composite=epsilon").walks(x, edge_index, target=1)
    fig = viz.plot_walks(walks, layout(edge_index, x.shape[0]), top=5,
                         title="GIN, class 'house': the 5 most relevant walks (nodes 20-24: the house)")
    fig.savefig(out / "walks.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    interactions_picture(args.out)
    walks_picture(args.out)


if __name__ == "__main__":
    main()
