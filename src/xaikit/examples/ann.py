"""Approximate nearest-neighbour search for :class:`~xaikit.examples.FeatureIndex` on millions of vectors.

An inverted-file index (IVF; Jégou, Douze & Schmid, TPAMI 2011): a coarse k-means quantiser splits the vectors
into ``lists`` cells; a query is compared only with the members of its ``probe`` nearest cells. Cost per query
``lists + probe · N / lists`` dot products instead of ``N``; memory: the vectors plus ``lists`` centres. Recall
is measured against the exact search (:meth:`FeatureIndex.recall`), never assumed.

- ``backend="faiss"``: faiss' ``IndexIVFFlat`` where faiss is installed (inner product on normalised vectors
  for cosine, L2 for euclidean, inner product for dot);
- ``backend="ivf"``: the same algorithm in batched torch (no extra dependency), so results and recall can be
  checked anywhere;
- ``backend="exact"`` (default): the exact chunked search of :mod:`.search`.
"""
from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("exact", "ivf", "faiss")


def has_faiss() -> bool:
    """Whether faiss can be imported."""
    return importlib.util.find_spec("faiss") is not None


def _prepare(vectors: torch.Tensor, metric: str) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, dim=1) if metric == "cosine" else vectors


class IVF:
    """An IVF index over ``vectors`` ``(N, D)`` in torch: k-means (``iterations`` Lloyd steps from seeded
    random samples) and one padded member table, searched in query chunks."""

    def __init__(self, vectors: torch.Tensor, metric: str, lists: int, probe: int, seed: int = 0,
                 iterations: int = 10) -> None:
        self.metric, self.probe = metric, min(probe, lists)
        data = _prepare(vectors.float(), metric)
        g = torch.Generator().manual_seed(seed)
        centres = data[torch.randperm(data.shape[0], generator=g)[:lists].to(data.device)].clone()
        for _ in range(iterations):
            assign = torch.cdist(data, centres).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, assign, data)
            counts = torch.bincount(assign, minlength=centres.shape[0]).clamp_min(1)[:, None]
            moved = sums / counts
            centres = torch.where(counts > 0, moved, centres)
        self.centres = centres
        assign = torch.cdist(data, centres).argmin(1)
        order = assign.argsort(stable=True)
        counts = torch.bincount(assign, minlength=lists)
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(data.shape[0], device=data.device) - starts[assign[order]]
        self.members = torch.full((lists, width), -1, dtype=torch.long, device=data.device)
        self.members[assign[order], slot] = order
        self.data = data

    def search(self, queries: torch.Tensor, k: int, norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, indices)`` ``(Q, k)`` in ``pairwise``'s order of "better" (missing: ``-inf``, ``-1``)."""
        out_v, out_i = [], []
        width = self.members.shape[1] * self.probe
        step = max(1, (1 << 24) // max(1, width * self.data.shape[1]))
        for s in range(0, queries.shape[0], step):
            q = queries[s:s + step].float()
            cells = torch.cdist(_prepare(q, self.metric), self.centres).topk(self.probe, 1, largest=False).indices
            cand = self.members[cells].flatten(1)                       # (q, probe·width)
            valid = cand >= 0
            vecs = self.data[cand.clamp_min(0)]                          # (q, C, D)
            dots = torch.einsum("qd,qcd->qc", q, vecs)
            if self.metric == "cosine":
                score = dots / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
            elif self.metric == "dot":
                score = dots
            else:
                score = 2 * dots - q.pow(2).sum(1, keepdim=True) - norms[cand.clamp_min(0)].pow(2)
            score = score.masked_fill(~valid, float("-inf"))
            v, j = score.topk(min(k, score.shape[1]), 1)
            idx = cand.gather(1, j).masked_fill(torch.isinf(v), -1)
            if v.shape[1] < k:
                pad = k - v.shape[1]
                v = torch.cat([v, v.new_full((v.shape[0], pad), float("-inf"))], 1)
                idx = torch.cat([idx, idx.new_full((idx.shape[0], pad), -1)], 1)
            out_v.append(v)
            out_i.append(idx)
        return torch.cat(out_v), torch.cat(out_i)


class Faiss:
    """faiss' ``IndexIVFFlat`` with the same ``lists``/``probe`` (scores in ``pairwise``'s order)."""

    def __init__(self, vectors: torch.Tensor, metric: str, lists: int, probe: int, seed: int = 0) -> None:
        import faiss
        import numpy as np
        self.metric = metric
        data = _prepare(vectors.float(), metric).cpu().numpy().astype(np.float32)
        kind = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
        quantiser = faiss.IndexFlatL2(data.shape[1]) if kind == faiss.METRIC_L2 else faiss.IndexFlatIP(data.shape[1])
        self.index = faiss.IndexIVFFlat(quantiser, data.shape[1], lists, kind)
        self.index.cp.seed = seed
        self.index.train(data)
        self.index.add(data)
        self.index.nprobe = probe
        self._quantiser = quantiser

    def search(self, queries: torch.Tensor, k: int, norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = _prepare(queries.float(), self.metric)
        values, index = self.index.search(q.cpu().numpy(), k)
        values, index = torch.from_numpy(values), torch.from_numpy(index).long()
        if self.metric == "euclidean":
            values = -values                     # squared distance -> pairwise's order (cosine: both normalised)
        return values.to(queries.device), index.to(queries.device)
