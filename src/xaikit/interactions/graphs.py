"""Graph neural networks: node relevance and GNN-LRP relevant walks (Schnake et al., IEEE TPAMI 2022).

The engine explains message passing with no per-model code: gathering node features along the edges
(``index_select``/``gather``), summing messages at their targets (``index_add_``, ``scatter_add``,
``scatter_reduce``), sparse–dense products with a normalised adjacency, degree normalisations computed from
the graph (constants of the explained pass), and pooling (``global_mean_pool``). PyTorch Geometric's
``GCNConv``, ``GINConv``, ``GraphConv`` and ``SAGEConv`` are written with these and need nothing else.

:class:`GraphLRP` explains one graph at a time, ``tool(x, edge_index, target, node=None)``:

- **node relevance**: the relevance of each node's input features (LRP on the nodes; for a bias-free network
  under LRP-0 it sums to the explained output);
- **relevant walks** (:meth:`GraphLRP.walks`): the relevance of each walk ``(j_0, j_1, ..., j_L)`` through the L
  message-passing layers, the higher-order explanation of GNN-LRP (Schnake et al. 2022, Sec. 4): the
  relevance is propagated back with the relevance at the output of layer t kept on node ``j_t`` only (the
  engine's conditioning, :class:`~xaikit.propagation.record.Recorder` masks), and the relevance that reaches
  the input features of node ``j_0`` is the walk's. Every rule of the engine is linear in the relevance it
  receives and the masks of each layer sum to one over the nodes, so the walk relevances sum to the node
  relevance of the same rule (and to the output for a bias-free network under LRP-0). All walks that share
  ``(j_1, ..., j_L)`` come from one copy of the graph, and the copies run as one disjoint union graph in one
  batched pass. An edge's relevance is the sum of the relevances of the walks that take it.

Messages flow from ``edge_index[0]`` (source) to ``edge_index[1]`` (target), PyTorch Geometric's default; a
walk may stay on its node from one layer to the next (self-loops, root weights).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..methods.resolve import resolve_method
from ..propagation.record import Recorder
from ..results import ResultExport
from ..settings import CheckedSettings
from ..targets import Contrast

#: the explainer by default: LRP-0 (Schnake et al. use LRP-γ; name it with method="lrp:composite=...")
DEFAULT_METHOD = "lrp:composite=zero"
#: most copies of the graph one walks call builds (the walks that share j_1..j_L share a copy)
MAX_COPIES = 100_000


def check_graph(x: Any, edge_index: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``(n, F)`` node features and ``edge_index`` ``(2, E)`` integer node ids, or a clear error; ``x`` may
    also be a graph object with ``.x`` and ``.edge_index`` (PyTorch Geometric's ``Data``)."""
    if edge_index is None and hasattr(x, "x"):
        x, edge_index = x.x, getattr(x, "edge_index", None)
    if edge_index is None:
        raise ValueError("edge_index is missing: a graph needs its edges as an integer tensor (2, E) of (source, "
                         "target) node ids, e.g. tool(x, edge_index) or tool(data) with data.edge_index")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be the node features, a floating-point tensor (nodes, features), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(edge_index, torch.Tensor) or edge_index.ndim != 2 or edge_index.shape[0] != 2 \
            or edge_index.is_floating_point():
        got = tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__
        if isinstance(edge_index, torch.Tensor) and edge_index.is_floating_point():
            got = f"{got} of dtype {edge_index.dtype}"
        raise ValueError(f"edge_index must be an integer tensor (2, E) of (source, target) node ids, got {got}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.shape[0]):
        raise ValueError(f"edge_index holds node ids outside 0..{x.shape[0] - 1} (the rows of x)")
    return x, edge_index.long()


class _Copies(nn.Module):
    """The model on W copies of one graph ``(W, n, F)``, run as one disjoint union graph: ``(W, C)`` scores
    (graph-level: pooled per copy through the model's ``batch`` argument; node-level: the row of ``node``)."""

    def __init__(self, model: nn.Module, edge_index: torch.Tensor, node: int | None, kwargs: dict) -> None:
        super().__init__()
        self.model, self.edge_index, self.node, self.kwargs = model, edge_index, node, kwargs
        self.training = model.training  # the wrapper has the model's mode (it warns, if at all, for the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copies, n = x.shape[0], x.shape[1]
        edges = self.edge_index.shape[1]
        offset = (torch.arange(copies, device=x.device) * n).repeat_interleave(edges)
        union = self.edge_index.repeat(1, copies) + offset
        flat = x.reshape(copies * n, x.shape[2])
        if self.node is None:
            batch = torch.arange(copies, device=x.device).repeat_interleave(n)
            return self.model(flat, union, batch=batch, **self.kwargs)
        return self.model(flat, union, **self.kwargs)[torch.arange(copies, device=x.device) * n + self.node]


def message_passing_layers(model: nn.Module) -> list[str]:
    """The modules whose ``forward`` takes an ``edge_index`` argument (outermost only), in definition order."""
    found: list[str] = []
    for name, module in model.named_modules():
        if module is model or any(name.startswith(f + ".") for f in found):
            continue
        try:
            parameters = inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            continue
        if "edge_index" in parameters:
            found.append(name)
    return found


class GraphLRP(CheckedSettings):
    """Node relevance and relevant walks of a message-passing network (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        ``model(x, edge_index, batch=None, **forward_kwargs)`` for graph-level scores ``(graphs, C)``, or
        ``model(x, edge_index, **forward_kwargs)`` with node-level scores ``(n, C)``.
    layers : list of str, optional
        The message-passing layers a walk steps through, in the order they are called (default: the outermost
        modules whose ``forward`` takes ``edge_index``, e.g. every PyTorch Geometric convolution).
    method, method_settings
        The explainer (default ``"lrp:composite=zero"``, LRP-0); any method the engine's conditioning supports.
    batch_size : "auto" or int
        Copies of the graph per pass (walks).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, method: Any = None,
                 method_settings: dict | None = None, batch_size: int | str = "auto") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a message-passing network), got {type(model).__name__}")
        self.model, self.method, self.method_settings, self.batch_size = model, method, method_settings, batch_size
        self.layers = list(layers) if layers is not None else message_passing_layers(model)

    def _explainer(self, wrapper: nn.Module):
        settings = dict(self.method_settings or {})
        if self.method is None or isinstance(self.method, str) and self.method.startswith("lrp"):
            settings.setdefault("batch_size", self.batch_size)
        return resolve_method(wrapper, self.method, settings, default=DEFAULT_METHOD)

    def __call__(self, x: Any, edge_index: torch.Tensor | None = None, target: Any = None, *,
                 node: int | None = None, forward_kwargs: dict | None = None) -> "GraphRelevanceResult":
        """Node relevance of one graph for ``target`` (a class; ``None``: the prediction) of the graph or, with
        ``node=i``, of node i."""
        x, edge_index = check_graph(x, edge_index)
        self._check_node(node, x)
        began = time.perf_counter()
        wrapper = _Copies(self.model, edge_index, node, dict(forward_kwargs or {}))
        expl = self._explainer(wrapper)(x[None], target)
        relevance = expl.attribution[0]
        return GraphRelevanceResult(relevance.sum(1).detach(), relevance.detach(), expl.output[0].detach(),
                                    int(expl.target[0]), node, {**expl.info, "time_s": time.perf_counter() - began})

    def walks(self, x: Any, edge_index: torch.Tensor | None = None, target: Any = None, *,
              node: int | None = None, forward_kwargs: dict | None = None) -> "RelevantWalksResult":
        """The relevance of every walk ``(j_0, ..., j_L)`` through the L message-passing layers (GNN-LRP)."""
        x, edge_index = check_graph(x, edge_index)
        self._check_node(node, x)
        if not self.layers:
            raise ValueError("layers: no module of the model takes edge_index; name the message-passing layers, "
                             "e.g. layers=['conv1', 'conv2']")
        if node is None and "batch" not in inspect.signature(self.model.forward).parameters:
            raise ValueError("walks of a graph-level model run copies of the graph as one batch of graphs: the "
                             "model's forward must take batch= (the graph of each node, as global_mean_pool does)")
        began = time.perf_counter()
        n, depth = x.shape[0], len(self.layers)
        suffixes = _walks(edge_index, n, depth)  # (W, L): j_1..j_L
        if node is not None:  # a node's output: only the walks that end on it carry relevance
            suffixes = suffixes[suffixes[:, -1] == node]
        if suffixes.shape[0] > MAX_COPIES:
            raise ValueError(f"{suffixes.shape[0]:,} walk suffixes need as many copies of the graph (limit "
                             f"{MAX_COPIES:,}): explain a smaller neighbourhood or fewer layers")
        copies = suffixes.shape[0]
        wrapper = _Copies(self.model, edge_index, node, dict(forward_kwargs or {}))
        masks = {f"model.{name}": _node_mask(suffixes[:, t], n) for t, name in enumerate(self.layers)}
        target = self._target(wrapper, x, target)
        with Recorder(wrapper, [], masks=masks):
            expl = self._explainer(wrapper)(x[None].expand(copies, -1, -1), target)
        per_start = expl.attribution.sum(2)  # (W, n): relevance of every start node j_0 for each suffix
        into = _predecessors(edge_index, n)  # (n, n) bool: j_0 may precede j_1
        start, copy = into[:, suffixes[:, 0]].T.nonzero(as_tuple=True)[::-1]
        walks = torch.cat([start[:, None], suffixes[copy]], 1)
        relevance = per_start[copy, start].detach()
        return RelevantWalksResult(walks, relevance, edge_index, expl.output[0].detach(), int(expl.target[0]), node,
                                   {"coverage": expl.info.get("coverage"), "copies": copies,
                                    "time_s": time.perf_counter() - began})

    def _target(self, wrapper: nn.Module, x: torch.Tensor, target: Any) -> Any:
        """One class for every copy (the prediction on the graph when ``None``), or a :class:`~xaikit.Contrast`
        of two classes."""
        if isinstance(target, Contrast):
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in (target.a, target.b)):
                raise ValueError(f"target: a Contrast of two class indices, got {target!r}")
            return target
        if target is None:
            with torch.no_grad():
                return int(wrapper(x[None]).argmax(-1)[0])
        if isinstance(target, torch.Tensor):
            target = int(target.reshape(-1)[0])
        if not isinstance(target, int) or isinstance(target, bool):
            raise ValueError(f"target must be one class index (or None: the prediction), got {target!r}")
        return target

    @staticmethod
    def _check_node(node: int | None, x: torch.Tensor) -> None:
        if node is not None and (not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < x.shape[0]):
            raise ValueError(f"node must be a node id in 0..{x.shape[0] - 1} (or None: the graph's output), "
                             f"got {node!r}")


def _walks(edge_index: torch.Tensor, n: int, length: int) -> torch.Tensor:
    """All walks ``(W, length)`` along the edges (source -> target) or staying on a node, as node ids."""
    follows = _predecessors(edge_index, n)  # [a, b]: b may follow a
    walks = torch.arange(n)[:, None]
    for _ in range(length - 1):
        prev, nxt = follows[walks[:, -1]].nonzero(as_tuple=True)
        walks = torch.cat([walks[prev], nxt[:, None]], 1)
    return walks


def _predecessors(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, n)`` bool ``[a, b]``: a message passes from a to b in one layer (an edge, or a == b)."""
    adjacency = torch.eye(n, dtype=torch.bool)
    adjacency[edge_index[0].cpu(), edge_index[1].cpu()] = True
    return adjacency


def _node_mask(nodes: torch.Tensor, n: int):
    """The Recorder mask of a layer: row ``w * n + nodes[w]`` of the union graph's ``(W n, C)`` output is kept."""
    def make(channels: int) -> torch.Tensor:
        mask = torch.zeros((nodes.shape[0] * n, channels), dtype=torch.float64)
        mask[torch.arange(nodes.shape[0]) * n + nodes] = 1.0
        return mask
    return make


@dataclass
class GraphRelevanceResult(ResultExport):
    """Node relevance ``(n,)`` and per feature ``(n, F)`` of one graph, the scores and the explained class."""

    nodes: torch.Tensor
    features: torch.Tensor
    output: torch.Tensor
    target: int
    node: int | None
    info: dict = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        return [{"node": i, "relevance": float(r)} for i, r in enumerate(self.nodes.tolist())]


@dataclass
class RelevantWalksResult(ResultExport):
    """Walks ``(W, L + 1)`` (node ids ``j_0..j_L``) and their relevance ``(W,)`` (GNN-LRP)."""

    walks: torch.Tensor
    relevance: torch.Tensor
    edge_index: torch.Tensor
    output: torch.Tensor
    target: int
    node: int | None
    info: dict = field(default_factory=dict)

    def top(self, n: int = 10, sign: str = "positive") -> list[tuple[tuple[int, ...], float]]:
        """The ``n`` walks of largest relevance (``"positive"``), most negative (``"negative"``) or ``"absolute"``."""
        key = {"positive": -self.relevance, "negative": self.relevance, "absolute": -self.relevance.abs()}[sign]
        order = key.argsort()[:n]
        return [(tuple(self.walks[i].tolist()), float(self.relevance[i])) for i in order]

    def edge_relevance(self, sign: str = "all") -> torch.Tensor:
        """``(E,)``: the summed relevance of the walks that take each edge (at any layer, once per step).

        ``sign``: ``"all"`` sums the signed relevances (positive and negative walks cancel); ``"positive"`` /
        ``"negative"`` sums only the walks of that sign; ``"absolute"`` sums their magnitudes (an edge carried by
        strong walks of both signs ranks high, as GNN-LRP's pictures show both colours, Schnake et al. 2022)."""
        transform = {"all": lambda r: r, "positive": lambda r: r.clamp_min(0), "negative": lambda r: r.clamp_max(0),
                     "absolute": torch.abs}
        if sign not in transform:
            raise ValueError(f"sign must be one of {', '.join(transform)}, got {sign!r}")
        relevance = transform[sign](self.relevance)
        n = int(max(self.edge_index.max(), self.walks.max())) + 1 if self.edge_index.numel() else 1
        keys = self.edge_index[0] * n + self.edge_index[1]
        order = keys.argsort()
        out = torch.zeros(keys.shape[0], dtype=self.relevance.dtype)
        for t in range(self.walks.shape[1] - 1):
            a, b = self.walks[:, t], self.walks[:, t + 1]
            step = a != b
            k = a[step] * n + b[step]
            pos = torch.searchsorted(keys[order], k).clamp_max(keys.shape[0] - 1)
            hit = keys[order][pos] == k
            out.index_add_(0, order[pos[hit]], relevance[step][hit])
        return out

    def node_relevance(self, n: int | None = None) -> torch.Tensor:
        """``(n,)``: the relevance of the walks by their start node ``j_0`` (the node relevance)."""
        n = n or int(self.walks.max()) + 1
        return torch.zeros(n, dtype=self.relevance.dtype).index_add_(0, self.walks[:, 0], self.relevance)

    def _rows(self) -> list[dict[str, Any]]:
        return [{"walk": w, "relevance": r} for w, r in zip(self.walks.tolist(), self.relevance.tolist())]
