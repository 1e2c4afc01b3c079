"""Exact top-k over a large set of candidates, chunk by chunk, in batched torch.

The score matrix ``(queries, candidates)`` is never held whole: each chunk of candidates is scored with one
matrix product and merged with the running top-k, so memory is ``queries × chunk`` while the result equals
``torch.topk`` on the full matrix.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..batching import memory_budget

METRICS = ("cosine", "euclidean", "dot")


def check_k(k: object, total: int, name: str = "k") -> int:
    """``k`` must be an int in ``1..total``."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"{name} must be a positive int, got {k!r}")
    if k > total:
        raise ValueError(f"{name}={k} is larger than the {total} samples in the index; use {name} <= {total}")
    return k


def chunk_size(queries: int, device: torch.device | str, bytes_per: int = 4) -> int:
    """Candidates per chunk so that a few ``(queries, chunk)`` score matrices fit in the memory budget."""
    return max(1, memory_budget(device) // (8 * bytes_per * max(1, queries)))


def topk(score: Callable[[int, int], torch.Tensor], total: int, k: int, largest: bool = True,
         chunk: int | None = None, queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best candidates per query: ``(values, indices)``, both ``(queries, k)``, best first.

    ``score(start, stop)`` returns the ``(queries, stop - start)`` scores of candidates ``start:stop``.
    Equal scores inside one chunk are ordered as ``torch.topk`` orders them; across chunks, by smaller index.
    """
    best_values: torch.Tensor | None = None
    best_index: torch.Tensor | None = None
    step = chunk or total
    for start in range(0, total, step):
        stop = min(total, start + step)
        values = score(start, stop)
        values, index = values.topk(min(k, stop - start), dim=1, largest=largest)
        index = index + start
        if best_values is not None:
            values = torch.cat([best_values, values], 1)
            index = torch.cat([best_index, index], 1)
        order = _order(values, index, largest)[:, :k]
        best_values, best_index = values.gather(1, order), index.gather(1, order)
    assert best_values is not None and best_index is not None
    return best_values, best_index


def _order(values: torch.Tensor, index: torch.Tensor, largest: bool) -> torch.Tensor:
    """Column order by value (best first), equal values by smaller candidate index."""
    by_index = index.sort(dim=1, stable=True).indices
    ranked = values.gather(1, by_index).sort(dim=1, descending=largest, stable=True).indices
    return by_index.gather(1, ranked)


def pairwise(queries: torch.Tensor, candidates: torch.Tensor, metric: str,
             candidate_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Scores ``(Q, M)`` in the metric's order of "better": cosine similarity, dot product, or the *negative*
    squared Euclidean distance (so that larger is always closer)."""
    dots = queries @ candidates.T
    if metric == "dot":
        return dots
    norms = candidate_norms if candidate_norms is not None else candidates.norm(dim=1)
    if metric == "cosine":
        return dots / (queries.norm(dim=1, keepdim=True) * norms[None]).clamp_min(1e-12)
    return 2 * dots - queries.pow(2).sum(1, keepdim=True) - norms[None].pow(2)
