"""What the training-data attribution tools share: weights to attribute at, reading a training set, queries,
and the top proponents/opponents of each query as a result.

One interface for :class:`~xaikit.examples.TRAK`, :class:`~xaikit.examples.InfluenceFunctions` and
:class:`~xaikit.examples.TracIn`: build with the model and settings, ``fit(data)`` on the training set, then
``scores(x, y)`` ``(Q, N)``, ``top(x, y, k)`` (a ``<Tool>Result``) and ``self_scores()`` ``(N,)``. A score is
positive for a *proponent* (the training sample raised the query's output / lowered its loss) and negative
for an *opponent*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import check_input, model_device
from ..results import ResultExport
from ..targets import labels_or_prediction
from .data import DataSource, check_sample_shape, sample_shape
from .search import check_k, chunk_size, topk


@dataclass
class AttributionResult(ResultExport):
    """The most supporting (proponents) and most opposing (opponents) training samples of each query.

    ``supporting``/``opposing``: indices ``(Q, k)`` into the training data, strongest first;
    ``supporting_score``/``opposing_score``: their scores; ``label``: the label each query was attributed for.
    """

    supporting: torch.Tensor
    supporting_score: torch.Tensor
    opposing: torch.Tensor
    opposing_score: torch.Tensor
    label: torch.Tensor

    def _rows(self) -> list[dict[str, Any]]:
        """One row per (query, kind, rank): the training sample's index and score."""
        rows = []
        for kind, index, score in (("supporting", self.supporting, self.supporting_score),
                                   ("opposing", self.opposing, self.opposing_score)):
            for i, (ns, ss) in enumerate(zip(index.tolist(), score.tolist())):
                rows += [{"query": i, "kind": kind, "rank": r, "index": n, "score": s}
                         for r, (n, s) in enumerate(zip(ns, ss))]
        return rows


def weight_states(model: nn.Module, checkpoints: Sequence[Any] | None) -> list[dict[str, torch.Tensor]]:
    """The weights to attribute at: ``checkpoints`` (state dicts or modules of the model's architecture: saved
    during training, or independently trained models) or the model's current weights."""
    if checkpoints is None:
        return [dict(model.state_dict())]
    if isinstance(checkpoints, (dict, nn.Module)):
        checkpoints = [checkpoints]
    states = []
    keys = set(model.state_dict())
    for i, c in enumerate(checkpoints):
        state = dict(c.state_dict() if isinstance(c, nn.Module) else c)
        if set(state) != keys:
            missing, extra = sorted(keys - set(state))[:3], sorted(set(state) - keys)[:3]
            raise ValueError(f"checkpoints[{i}] does not match the model (missing {missing}, unexpected {extra})")
        states.append(state)
    if not states:
        raise ValueError("checkpoints is empty; give at least one state dict")
    return states


def labelled_batches(model: nn.Module, data: Any, batch_size: int | str, tool: str
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]]:
    """``(x, y, sample shape)`` of every batch of a labelled training set, on the model's device."""
    device = model_device(model)
    shape = None
    seen = False
    for x, y, _ in DataSource(data, batch_size).batches():
        if y is None:
            raise ValueError(f"{tool} needs labelled training data: pass (x, y) or batches (x, y)")
        check_input(x, "a batch of data")
        shape = sample_shape(x, shape)
        if device is not None:
            x, y = x.to(device), y.to(device)
        seen = True
        yield x, y, shape
    if not seen:
        raise ValueError(f"data holds no samples; {tool} needs at least one training sample")


def query_labels(model: nn.Module, x: torch.Tensor, y: Any, shape: tuple[int, ...] | None, tool: str) -> torch.Tensor:
    """The labels to attribute queries ``x`` for: ``y`` (one per query, or one for all) or the prediction."""
    if shape is None:
        raise ValueError(f"{tool} has no training data; call fit(data) first")
    check_input(x, "x", model)
    check_sample_shape(x, shape, f"{tool} was fitted")
    return labels_or_prediction(model, x, y)


def check_indices(indices: Any, total: int) -> torch.Tensor | None:
    """Training-sample positions to score (``None``: all ``total``)."""
    if indices is None:
        return None
    indices = torch.as_tensor(indices).long().reshape(-1)
    if indices.numel() and (indices.min() < 0 or indices.max() >= total):
        raise ValueError(f"indices must lie in 0..{total - 1} (the fitted training samples)")
    return indices


def top_of(score: Callable[[int, int], torch.Tensor], total: int, k: int, queries: int, device: torch.device,
           chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(supporting, supporting_score, opposing, opposing_score)``: the exact top-k both ways, in chunks of
    ``chunk`` training samples (default: sized by the memory budget)."""
    k = check_k(k, total)
    chunk = chunk or chunk_size(queries, device)
    up, up_index = topk(score, total, k, largest=True, chunk=chunk)
    down, down_index = topk(score, total, k, largest=False, chunk=chunk)
    return up_index, up, down_index, down
