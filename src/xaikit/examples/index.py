"""Explanation by example: the nearest samples of a data set in a layer's feature space, and why they are similar.

"Explain a prediction in terms of closest training samples" (seed lecture 3, §1). :class:`FeatureIndex`
computes the representation ``φ(x)`` of every sample of a data set once (streamed batch by batch, optionally
cached on disk), then finds the exact k nearest samples of queries by cosine similarity or Euclidean
distance with chunked matrix products (:mod:`.search`). :meth:`FeatureIndex.heatmaps` explains each
query–neighbour pair with BiLRP (Eberle et al., TPAMI 2022): which parts of the query and which parts of the
neighbour make their representations similar.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..batching import check_batch_size, memory_budget
from ..deprecation import renamed
from ..errors import check_choice, check_input, check_positive, model_device
from ..methods.base import Method, _checked_init
from ..methods.bilrp import BiLRP
from ..methods.resolve import DEFAULT_METHODS, legacy_lrp_settings
from ..modes import explains_in_eval
from ..progress import Progress
from ..propagation.composites import Composite
from ..results import ResultExport
from ..fingerprint import fingerprint
from .ann import BACKENDS, IVF, Faiss, has_faiss
from .data import DataSource, check_sample_shape, sample_shape
from .layers import LayerFeatures
from .search import METRICS, check_k, chunk_size, pairwise, topk

CACHE_VERSION = 2  # 2: keys from xaikit.fingerprint


@dataclass
class NeighboursResult(ResultExport):
    """The k nearest samples of each query, nearest first.

    Attributes
    ----------
    index : LongTensor ``(Q, k)``
        Positions of the neighbours in the indexed data set.
    similarity : Tensor ``(Q, k)``
        Cosine similarity (``metric="cosine"``), dot product (``"dot"``) or minus the Euclidean distance.
    distance : Tensor ``(Q, k)``
        ``1 − cosine`` (cosine), the Euclidean distance (euclidean), ``−dot`` (dot).
    label : LongTensor ``(Q, k)`` or None
        The neighbours' labels where the data set has them.
    metric : str
    """

    index: torch.Tensor
    similarity: torch.Tensor
    distance: torch.Tensor
    label: torch.Tensor | None
    metric: str

    def agreement(self, labels: torch.Tensor) -> torch.Tensor:
        """Fraction of each query's neighbours whose label equals ``labels`` ``(Q,)``: ``(Q,)``."""
        if self.label is None:
            raise ValueError("the index has no labels; build it from (x, y) data to compare labels")
        return (self.label == labels.to(self.label.device)[:, None]).float().mean(1)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per (query, rank): the neighbour's index, similarity, distance and label."""
        q, k = self.index.shape
        label = self.label.tolist() if self.label is not None else [[None] * k] * q
        return [{"query": i, "rank": r, "index": n, "similarity": s, "distance": d, "label": lab}
                for i, (ns, ss, ds, ls) in enumerate(zip(self.index.tolist(), self.similarity.tolist(),
                                                         self.distance.tolist(), label))
                for r, (n, s, d, lab) in enumerate(zip(ns, ss, ds, ls))]


@dataclass
class SimilarityMapsResult(ResultExport):
    """BiLRP heatmaps of query–neighbour pairs (Eberle et al. 2022).

    ``query[q, j]`` is the relevance of every input element of query ``q`` for its similarity to neighbour
    ``j``, ``neighbour[q, j]`` that of the neighbour's input; both are the marginals of the pairwise relevance
    ``R_ab = Σ_m R_m(query)_a · R_m(neighbour)_b`` and sum to the same total (``info["total"]``), which equals
    the explained ``score`` up to what the first-order LRP maps absorb (biases, ε).
    """

    query: torch.Tensor
    neighbour: torch.Tensor
    score: torch.Tensor
    neighbours: NeighboursResult
    info: dict[str, Any] = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per (query, neighbour) pair: the explained similarity score and the relevance totals of the
        two maps (the maps themselves are tensors: ``.query``, ``.neighbour``)."""
        q, k = self.score.shape[:2]
        total_q = self.query.flatten(2).sum(2).tolist()
        total_n = self.neighbour.flatten(2).sum(2).tolist()
        index = self.neighbours.index.tolist()
        return [{"query": i, "rank": r, "index": index[i][r], "score": float(self.score[i, r]),
                 "query_total": total_q[i][r], "neighbour_total": total_n[i][r]} for i in range(q) for r in range(k)]


class FeatureIndex:
    """An exact nearest-neighbour index of a data set's representations at a layer.

    Parameters
    ----------
    model : nn.Module
        The model whose representation is searched (not modified).
    layer : str, optional
        Module name whose output is the representation; default: the input of the last layer with parameters
        (the penultimate features). See :class:`~xaikit.examples.layers.LayerFeatures`.
    pool : "mean", "max", "flatten" or callable
        Reduction of spatial representations to vectors.
    metric : "cosine", "euclidean" or "dot"
        How neighbours are ranked.
    batch_size : int or "auto"
        Samples per forward pass while building the index (and per chunk of a tensor data set or a
        Dataset; a DataLoader keeps its own batches); ``"auto"``: the memory budget's size
        (:func:`xaikit.batching.batch_size_for`).
    progress : bool
        Show a progress bar while building.
    backend : "exact", "ivf" or "faiss"
        The search (:mod:`.ann`): exact chunked matrix products (default); an approximate inverted-file index
        of ``lists`` k-means cells of which ``probe`` are searched per query, in torch (``"ivf"``) or in faiss
        (``"faiss"``; where faiss is not installed, the exact search with a warning). :meth:`recall` measures
        the approximate search's recall@k against the exact one.
    lists, probe : int
        The IVF's cells (default ``round(4 √N)``) and cells searched per query (default 8).

    Examples
    --------
    >>> index = FeatureIndex(model, layer="pool").fit((x_train, y_train), cache="index.pt")
    >>> nb = index.neighbours(x_query, k=5)            # nb.index, nb.similarity, nb.label
    >>> maps = index.heatmaps(x_query, nb)              # why each neighbour is similar (BiLRP)
    """

    def __init__(self, model: nn.Module, layer: str | None = None,
                 pool: str | Callable[[torch.Tensor], torch.Tensor] = "mean", metric: str = "cosine",
                 batch_size: int | str = 256, progress: bool = False, backend: str = "exact",
                 lists: int | None = None, probe: int = 8) -> None:
        check_choice(metric, "metric", METRICS)
        check_batch_size(batch_size)
        self._backend_settings(backend, lists, probe)
        self.model = model
        self.features = LayerFeatures(model, layer, pool)
        self.metric = metric
        self.batch_size = batch_size
        self.progress = progress
        self.vectors: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.source: DataSource | None = None

    # ---- building -------------------------------------------------------------------------------------------

    def fit(self, data: Any, cache: str | Path | None = None) -> "FeatureIndex":
        """Compute the representation of every sample of ``data`` (see :mod:`.data`) and keep it.

        ``cache``: a file; when it exists and was written for the same model weights and buffers, layer, pooling
        and data (:func:`xaikit.fingerprint.fingerprint`, :meth:`xaikit.data.Data.fingerprint`), the
        representations are read from it instead of computed; otherwise they are computed and written there (a
        stale cache is replaced, with a warning).
        """
        self.source = DataSource(data, self.batch_size)
        meta = None
        if cache is not None:
            cache = Path(cache)
            meta = {"version": CACHE_VERSION, "model": fingerprint(self.model), "layer": self.features.label,
                    "pool": self.features.pool if isinstance(self.features.pool, str) else repr(self.features.pool),
                    "data": self.source.fingerprint()}
            if cache.exists():
                stored = torch.load(cache, map_location="cpu", weights_only=True)
                if stored.get("meta") == meta:
                    self._keep(stored["vectors"], stored["labels"], tuple(stored["input_shape"]))
                    return self
                warnings.warn(f"cache {str(cache)!r} was written for another model, layer or data set; rebuilding it",
                              UserWarning, stacklevel=2)
        vectors, labels, shape = self._compute()
        self._keep(vectors, labels, shape)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"meta": meta, "vectors": self.vectors.cpu(), "labels": None if labels is None else labels.cpu(),
                        "input_shape": list(shape)}, cache)
        return self

    @explains_in_eval
    def _compute(self) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
        from ..progress import progress

        device = model_device(self.model)
        parts, labels, shape = [], [], None
        for x, y, _ in progress(self.source.batches(), desc="index", unit="batch", enabled=self.progress, leave=False):
            if x.shape[0] == 0:
                continue
            check_input(x, "a batch of data")
            shape = sample_shape(x, shape)
            with torch.no_grad():
                parts.append(self.features(x.to(device) if device is not None else x).float())
            if y is not None:
                labels.append(y.reshape(-1).long())
        if not parts:
            raise ValueError("data holds no samples; the index needs at least one")
        if labels and len(labels) != len(parts):
            raise ValueError("some batches of data have labels and some do not")
        return torch.cat(parts), torch.cat(labels) if labels else None, shape

    @classmethod
    def from_vectors(cls, vectors: torch.Tensor, labels: torch.Tensor | None = None, metric: str = "cosine",
                     backend: str = "exact", lists: int | None = None, probe: int = 8) -> "FeatureIndex":
        """An index over given vectors ``(N, D)`` (e.g. concept-relevance vectors); query it with
        :meth:`search`."""
        check_choice(metric, "metric", METRICS)
        index = cls.__new__(cls)
        index.model, index.features, index.metric, index.source = None, None, metric, None
        index.batch_size, index.progress = 256, False
        index._backend_settings(backend, lists, probe)
        index._keep(vectors, labels, None)
        return index

    def _keep(self, vectors: torch.Tensor, labels: torch.Tensor | None, shape: tuple[int, ...] | None) -> None:
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2:
            raise ValueError(f"vectors must be a (N, D) tensor, got "
                             f"{tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__}")
        if vectors.shape[0] == 0:
            raise ValueError("the index is empty: vectors has no rows")
        if not torch.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        if labels is not None and labels.shape != (vectors.shape[0],):
            raise ValueError(f"labels must be ({vectors.shape[0]},), got {tuple(labels.shape)}")
        self.vectors = vectors.float()
        self.norms = self.vectors.norm(dim=1)
        self.labels = labels
        self.input_shape = shape
        self._approximate = None

    def _backend_settings(self, backend: str, lists: int | None, probe: int) -> None:
        check_choice(backend, "backend", BACKENDS)
        if lists is not None:
            check_positive(lists, "lists", integer=True)
        check_positive(probe, "probe", integer=True)
        if backend == "faiss" and not has_faiss():
            warnings.warn("backend='faiss' but faiss is not installed; using the exact search (pip install "
                          "faiss-cpu for the approximate one, or backend='ivf')", UserWarning, stacklevel=3)
            backend = "exact"
        self.backend, self.lists, self.probe = backend, lists, probe
        self._approximate = None

    def _approximate_index(self) -> Any:
        if self._approximate is None:
            lists = min(len(self), self.lists or max(1, round(4 * len(self) ** 0.5)))
            kind = IVF if self.backend == "ivf" else Faiss
            self._approximate = kind(self.vectors, self.metric, lists, self.probe)
        return self._approximate

    def __len__(self) -> int:
        return 0 if self.vectors is None else self.vectors.shape[0]

    # ---- querying -------------------------------------------------------------------------------------------

    def _fitted(self) -> None:
        if self.vectors is None:
            raise ValueError("the index is empty; call fit(data) first")

    @explains_in_eval
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The representation ``(Q, D)`` of query inputs ``x`` (shape checked against the indexed samples)."""
        self._fitted()
        if self.features is None:
            raise TypeError("this index was built from vectors; query it with search(vectors, k)")
        check_input(x, "x", self.model)
        check_sample_shape(x, self.input_shape)
        with torch.no_grad():
            return self.features(x).float()

    def search(self, vectors: torch.Tensor, k: int = 5, metric: str | None = None, exact: bool = False
               ) -> NeighboursResult:
        """The ``k`` nearest indexed samples of query vectors ``(Q, D)``: by the index's ``backend`` (exact,
        chunked, by default), or exactly with ``exact=True`` or another ``metric``. An approximate search that
        finds fewer than ``k`` candidates pads with index ``-1``."""
        self._fitted()
        metric = metric or self.metric
        check_choice(metric, "metric", METRICS)
        k = check_k(k, len(self))
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[1] != self.vectors.shape[1]:
            got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise ValueError(f"query vectors must be (Q, {self.vectors.shape[1]}) like the index, got {got}")
        queries = vectors.float().to(self.vectors.device)
        if self.backend != "exact" and metric == self.metric and not exact:
            values, index = self._approximate_index().search(queries, k, self.norms)
        else:
            chunk = chunk_size(queries.shape[0], queries.device)
            values, index = topk(lambda a, b: pairwise(queries, self.vectors[a:b], metric, self.norms[a:b]),
                                 len(self), k, largest=True, chunk=chunk)
        if metric == "euclidean":
            distance = (-values).clamp_min(0).sqrt()
            similarity = -distance
        else:
            similarity = values
            distance = 1 - values if metric == "cosine" else -values
        label = None if self.labels is None else self.labels.to(index.device)[index.clamp_min(0)]
        return NeighboursResult(index, similarity, distance, label, metric)

    def recall(self, vectors: torch.Tensor, k: int = 10) -> float:
        """recall@k of the index's search: the share of the exact ``k`` nearest neighbours of the query vectors
        that it returns (1.0 for ``backend="exact"``)."""
        found = self.search(vectors, k).index
        truth = self.search(vectors, k, exact=True).index
        return float((found[:, :, None] == truth[:, None, :]).any(1).float().mean())

    def neighbours(self, x: torch.Tensor, k: int = 5, metric: str | None = None) -> NeighboursResult:
        """The ``k`` nearest indexed samples of the query inputs ``x``, nearest first."""
        return self.search(self.represent(x), k, metric)

    def samples(self, index: torch.Tensor) -> torch.Tensor:
        """The indexed inputs at ``index`` (e.g. ``neighbours.index``), shaped ``(*index.shape, ...)``."""
        if self.source is None:
            raise TypeError("this index was built from vectors and holds no samples")
        return self.source.samples(index)

    # ---- why similar ----------------------------------------------------------------------------------------

    def heatmaps(self, x: torch.Tensor, neighbours: NeighboursResult, method: str | Method | None = None,
                 batch_size: int | str = "auto", *, method_settings: dict[str, Any] | None = None,
                 composite: str | Composite | None = None, **settings: Any) -> SimilarityMapsResult:
        """BiLRP heatmaps of every query–neighbour pair: which parts of each make the two similar.

        The explained similarity is the cosine similarity of the representations for ``metric="cosine"``
        (norms held constant, as in BiLRP), their dot product otherwise (for Euclidean distance the dot product
        is the only term of ``−‖a − b‖²`` that couples the pair). ``method``/``method_settings`` name the
        first-order explainer (:func:`~xaikit.methods.resolve.resolve_method`; default
        ``DEFAULT_METHODS["image"]``, LRP with ``epsilon_plus_flat``); it is built on the index's feature
        extractor (``self.features``), so give a name or spec. ``composite=`` and LRP settings as keywords
        are deprecated (``method="lrp:composite=NAME"``, ``method_settings={...}``).
        """
        method, method_settings = legacy_lrp_settings(method, method_settings, composite, settings,
                                                      "FeatureIndex.heatmaps", 4)
        if method is None:
            method = DEFAULT_METHODS["image"]
        self._fitted()
        phi = self.represent(x)
        if neighbours.index.shape[0] != x.shape[0]:
            raise ValueError(f"neighbours are for {neighbours.index.shape[0]} queries but x has {x.shape[0]}")
        q, k = neighbours.index.shape
        others = self.samples(neighbours.index).to(x.device).reshape(q * k, *x.shape[1:])
        similarity = "cosine" if self.metric == "cosine" else "dot"
        bilrp = BiLRP(self.features, method, method_settings, similarity=similarity, batch_size=batch_size)
        phi_q, phi_n = bilrp.embed(x, {}), bilrp.embed(others, {})     # (Q, E), (Q·k, E)
        plan = heatmaps_plan(x, q * k, phi.shape[1])
        dims = phi.shape[1]
        query_map = x.new_zeros(q, k, x[0].numel())
        neighbour_map = x.new_zeros(q, k, x[0].numel())
        # the first-order maps of a chunk of embedding dimensions at a time (Eberle et al. 2022, eq. 8: a sum
        # over the dimensions), so that what is held stays within the memory budget
        with Progress(plan["chunks"], "BiLRP heatmaps", "chunk", enabled=self.progress) as bar:
            for start in range(0, dims, plan["chunk"]):
                chosen = torch.arange(start, min(dims, start + plan["chunk"]), device=phi_q.device)
                _, r_q = bilrp.first_order(x, {}, chosen, phi_q)              # (Q, e, P)
                _, r_n = bilrp.first_order(others, {}, chosen, phi_n)         # (Q·k, e, P)
                r_n = r_n.reshape(q, k, len(chosen), -1)
                s_q, s_n = r_q.sum(-1), r_n.sum(-1)                           # conserved totals per dimension
                query_map += torch.einsum("qep,qke->qkp", r_q, s_n)
                neighbour_map += torch.einsum("qe,qkep->qkp", s_q, r_n)
                del r_q, r_n
                bar.update(1)
        phi_n = phi_n.reshape(q, k, dims)
        score = (phi_q[:, None] * phi_n).sum(-1)
        if similarity == "cosine":
            norms = (phi_q.norm(dim=1)[:, None] * phi_n.norm(dim=2)).clamp_min(1e-12)
            query_map, neighbour_map, score = query_map / norms[..., None], neighbour_map / norms[..., None], score / norms
        shape = (q, k, *x.shape[1:])
        total = query_map.sum(-1)
        info = {"similarity": similarity, "composite": bilrp.info_name, "layer": self.features.label,
                "total": total, "residual": score - total, "memory": plan}
        return SimilarityMapsResult(query_map.reshape(shape), neighbour_map.reshape(shape), score, neighbours, info)


#: bytes held per embedding dimension and sample while BiLRP heatmaps are computed, in units of one input:
#: the input repeated for that dimension's target and its first-order map
HELD_PER_DIMENSION = 2


def heatmaps_plan(x: torch.Tensor, pairs: int, dims: int) -> dict[str, int]:
    """How :meth:`FeatureIndex.heatmaps` splits the embedding dimensions for ``x`` (Q queries) and ``pairs``
    neighbours: the bytes one dimension holds (``bytes_per_dimension``: the repeated inputs and first-order maps
    of all Q + pairs samples), ``chunk`` dimensions per pass so that they take at most half the memory budget
    (:func:`xaikit.batching.memory_budget`; the other half is the explainer's own chunking), ``chunks`` passes
    and ``bytes`` held per pass. Raises ``MemoryError`` when one dimension alone exceeds that half."""
    per_dimension = (x.shape[0] + pairs) * x[0].numel() * x.element_size() * HELD_PER_DIMENSION
    budget = memory_budget(x.device)
    chunk = min(dims, (budget // 2) // max(1, per_dimension))
    if chunk < 1:
        raise MemoryError(f"BiLRP heatmaps of {x.shape[0]} queries and {pairs} neighbours hold "
                          f"{per_dimension / 2 ** 20:.1f} MiB per embedding dimension, more than half the memory "
                          f"budget ({budget / 2 ** 20:.1f} MiB): explain fewer queries or neighbours at a time, or "
                          f"raise it with xk.set_memory_budget(bytes)")
    chunks = -(-dims // chunk)
    return {"dims": dims, "bytes_per_dimension": per_dimension, "chunk": chunk, "chunks": chunks,
            "bytes": per_dimension * chunk, "budget": budget}


FeatureIndex.__init__ = _checked_init(FeatureIndex.__init__)  # unknown settings are rejected by name


__getattr__ = renamed(__name__, {"Neighbours": "NeighboursResult", "SimilarityMaps": "SimilarityMapsResult"},
                      globals())
