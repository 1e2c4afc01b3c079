"""Channel relevance discovery and its validation by ablation (Chandrasegaran et al., "Discovering
Transferable Forensic Features for CNN-generated Images Detection", ECCV 2022; seed ``003_…`` Case C).

:class:`ChannelRelevance` scores the channels of a layer by how much of a sample's relevance they carry:
``R_i[c] = Σ_hw (R[i,c,h,w])₊ / Σ_chw |R[i,c,h,w]|``, averaged over a data set (per class too).
:class:`Ablation` validates a ranking: it zeroes the top-k channels, k random channels (several draws, mean ±
sd) and the bottom-k channels and measures the accuracy per class, as a table (baseline / top-k / random-k /
low-k). Channels that matter collapse the accuracy when ablated; random and unimportant ones barely move it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..batching import batched_forward, check_batch_size
from ..data import Data
from ..deprecation import renamed
from ..errors import check_positive
from ..layers import find_layer, hooked
from ..methods.base import Method
from ..modes import eval_semantics
from ..propagation.record import channel_axis
from ..results import ResultExport
from ..settings import CheckedSettings
from .base import ConceptTool, iterate_batches


@dataclass
class ChannelRelevanceResult(ResultExport):
    """Per-channel relevance scores of a layer over a data set.

    Attributes
    ----------
    score : tensor ``(C,)``
        Mean of ``R_i[c]`` over the samples.
    per_class : dict
        ``{class: (C,) mean score over the samples of that class}``.
    count : dict
        ``{class: samples}``.
    layer : str
    """

    score: torch.Tensor
    per_class: dict[int, torch.Tensor]
    count: dict[int, int]
    layer: str

    def top(self, k: int, cls: int | None = None) -> torch.Tensor:
        """The ``k`` highest-scoring channels (of class ``cls``, or overall)."""
        s = self._scores(cls)
        _check_k(k, s.numel(), self.layer)
        return s.argsort(descending=True, stable=True)[:k]

    def low(self, k: int, cls: int | None = None) -> torch.Tensor:
        """The ``k`` lowest-scoring channels."""
        s = self._scores(cls)
        _check_k(k, s.numel(), self.layer)
        return s.argsort(stable=True)[:k]

    def _scores(self, cls: int | None) -> torch.Tensor:
        if cls is None:
            return self.score
        if cls not in self.per_class:
            raise ValueError(f"cls: no samples of class {cls}; classes: {sorted(self.per_class)}")
        return self.per_class[cls]

    def _rows(self) -> list[dict[str, Any]]:
        """One row per channel: its score overall and per class."""
        classes = sorted(self.per_class)
        return [{"channel": c, "score": float(self.score[c]),
                 **{f"class {k}": float(self.per_class[k][c]) for k in classes}} for c in range(self.score.numel())]


def _check_k(k: Any, channels: int, layer: str) -> None:
    check_positive(k, "k", integer=True)
    if k > channels:
        raise ValueError(f"k={k} is larger than the {channels} channels of layer {layer!r}")


def channel_scores(relevance: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """``R_i[c] = Σ_hw (R[i,c,h,w])₊ / Σ_chw |R[i,c,h,w]|`` for a batch of layer relevance, ``(N, C)``."""
    r = relevance.movedim(axis, -1)
    r = r.reshape(r.shape[0], -1, r.shape[-1])
    positive = r.clamp(min=0).sum(1)
    total = r.abs().sum((1, 2)).clamp_min(torch.finfo(r.dtype).tiny)
    return positive / total[:, None]


class ChannelRelevance(ConceptTool):
    """Score the channels of a layer by their share of the positive relevance, over a data set.

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool`.
    progress : bool
        Show a progress bar over the batches.

    Called on ``data``: a ``(x, y)`` pair of tensors or a DataLoader/iterable of ``(x, y)`` batches; the
    target of each sample is its label ``y`` (or, with ``target="prediction"``, the predicted class).
    """

    def __init__(self, model: nn.Module, layer: str, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model, layer, method, method_settings, axis)
        self.progress = progress

    def __call__(self, data: Any, target: str = "label") -> ChannelRelevanceResult:
        if target not in ("label", "prediction"):
            raise ValueError(f"target must be 'label' or 'prediction', got {target!r}")
        from ..progress import progress

        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        for x, y in progress(iterate_batches(data), desc="channel scores", unit="batch", enabled=self.progress):
            x = self.check(x)
            if target == "label" and y is None:
                raise ValueError("data must give labels (x, y) for target='label'; or pass target='prediction'")
            expl, rec = self.record(x, y.tolist() if target == "label" else None, keep=("relevance",))
            scores = channel_scores(rec[self.layer].relevance, rec[self.layer].axis)
            labels = expl.target if y is None or target == "prediction" else y
            for cls in labels.unique().tolist():
                rows = labels == cls
                sums[cls] = sums.get(cls, 0) + scores[rows].sum(0)
                counts[cls] = counts.get(cls, 0) + int(rows.sum())
        if not counts:
            raise ValueError("data is empty: no batch to score the channels on")
        total = sum(sums.values()) / sum(counts.values())
        return ChannelRelevanceResult(total, {c: sums[c] / counts[c] for c in sorted(sums)}, counts, self.layer)


@contextlib.contextmanager
def ablated(model: nn.Module, layer: str, channels: torch.Tensor | Sequence[int] | None,
            axis: int | str = "auto") -> Iterator[None]:
    """Zero ``channels`` of ``layer``'s output during the block (a forward hook, removed in ``finally``)."""
    _, module = find_layer(model, layer)
    if channels is None or len(channels) == 0:
        yield
        return
    index = torch.as_tensor(channels, dtype=torch.long)

    def hook(mod, inputs, out):
        ax = channel_axis(mod, out.ndim) if axis == "auto" else axis % out.ndim
        if int(index.max()) >= out.shape[ax] or int(index.min()) < 0:
            raise ValueError(f"channels: index out of range for the {out.shape[ax]} channels of layer {layer!r}")
        keep = torch.ones(out.shape[ax], dtype=out.dtype, device=out.device)
        keep[index.to(out.device)] = 0
        shape = [1] * out.ndim
        shape[ax] = -1
        return out * keep.view(shape)

    with hooked(module, forward=hook):
        yield


@dataclass
class AblationResult(ResultExport):
    """Accuracy (in %) per class with channels of a layer ablated.

    Attributes
    ----------
    rows : list of str
        ``"baseline"``, ``"top-k"``, ``"random-k"``, ``"low-k"``.
    classes : list
        Column labels (the classes, then ``"all"``).
    mean, sd : ndarray ``(rows, classes)``
        Accuracy in %; ``sd`` over the random draws (0 for the deterministic rows).
    channels : dict
        ``{row: channels ablated}`` (for random-k: every draw).
    k : int
    """

    rows: list[str]
    classes: list
    mean: np.ndarray
    sd: np.ndarray
    channels: dict[str, Any]
    k: int
    layer: str = ""
    extra: dict = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per ablation (baseline, top-k, random-k, low-k): the accuracy per class (``sd``: over the
        random draws)."""
        rows = []
        for i, row in enumerate(self.rows):
            cells: dict[str, Any] = {"ablated": row}
            for j, c in enumerate(self.classes):
                cells[str(c)], cells[f"{c} sd"] = float(self.mean[i, j]), float(self.sd[i, j])
            rows.append(cells)
        return rows

    def __str__(self) -> str:
        return self.to_markdown()


class Ablation(CheckedSettings):
    """Validate a channel ranking by ablation: accuracy per class with the top-k, k random (``draws`` draws,
    mean ± sd) and the bottom-k channels of a layer zeroed, next to the baseline (Chandrasegaran et al. 2022,
    Table 2).

    Parameters
    ----------
    model : nn.Module
    layer : str
    k : int
        Channels ablated.
    draws : int
        Random draws for random-k (the paper: 5).
    seed : int
        Seed of the random draws.
    axis : int or "auto"
    batch_size : int or "auto"
        Samples per forward pass (``"auto"``: chosen under the memory budget, :mod:`xaikit.batching`).

    Called as ``Ablation(model, layer, k)(data, scores)`` with ``scores`` a :class:`ChannelRelevanceResult` (or a
    ``(C,)`` tensor) and ``data`` a ``(x, y)`` pair or DataLoader of labelled batches; ``cls`` picks the class
    whose ranking is ablated (default: the overall score).
    """

    def __init__(self, model: nn.Module, layer: str, k: int, draws: int = 5, seed: int = 0,
                 axis: int | str = "auto", batch_size: int | str = "auto") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer = find_layer(model, layer)[0]
        check_positive(k, "k", integer=True)
        check_positive(draws, "draws", integer=True)
        check_batch_size(batch_size)
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.k, self.draws, self.seed, self.axis, self.batch_size = k, draws, seed, axis, batch_size

    def __call__(self, data: Any, scores: ChannelRelevanceResult | torch.Tensor,
                 cls: int | None = None) -> AblationResult:
        score = scores._scores(cls) if isinstance(scores, ChannelRelevanceResult) else torch.as_tensor(scores)
        channels = score.numel()
        _check_k(self.k, channels, self.layer)
        x, y = self._gather(data)
        g = torch.Generator().manual_seed(self.seed)
        sets = {"baseline": [None],
                "top-k": [score.argsort(descending=True, stable=True)[:self.k]],
                "random-k": [torch.randperm(channels, generator=g)[:self.k] for _ in range(self.draws)],
                "low-k": [score.argsort(stable=True)[:self.k]]}
        classes = sorted(y.unique().tolist())
        mean, sd = [], []
        for row, draws in sets.items():
            accs = np.array([self._accuracy(x, y, chans, classes) for chans in draws])
            mean.append(accs.mean(0))
            sd.append(accs.std(0, ddof=1) if len(draws) > 1 else np.zeros(accs.shape[1]))
        rows = [r.replace("k", str(self.k)) if r != "baseline" else r for r in sets]
        return AblationResult(rows, [*classes, "all"], np.array(mean), np.array(sd),
                             {r: d for r, d in zip(rows, sets.values())}, self.k, self.layer)

    def _gather(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = Data(data, batch_size=None, name="data").tensors()
        if y is None:
            raise ValueError("data must give labels (x, y): the ablation measures accuracy")
        return x, y

    def _accuracy(self, x: torch.Tensor, y: torch.Tensor, channels, classes: list) -> np.ndarray:
        with ablated(self.model, self.layer, channels, self.axis), eval_semantics(self.model):
            predicted = batched_forward(self.model, x, self.batch_size, reduce=lambda out, rows: out.argmax(-1))
        hit = (predicted == y.to(predicted.device)).float()
        return np.array([100 * float(hit[y == c].mean()) for c in classes] + [100 * float(hit.mean())])


__getattr__ = renamed(__name__, {"ChannelScores": "ChannelRelevanceResult", "AblationTable": "AblationResult"},
                      globals())
