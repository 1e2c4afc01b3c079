"""Feature-map embeddings: PCA, t-SNE (scikit-learn) or UMAP (where ``umap-learn`` is installed) of a layer's
pooled activations or of per-sample concept-relevance vectors, for plots with thumbnails and labels (seed
``003_…`` §1: "cluster the feature maps").

Activations are averaged over every axis but the channels (``(N, C)``); concept-relevance vectors are each
sample's per-channel relevance divided by its total absolute relevance (``R_c / Σ_c' |R_c'|``), so samples
explained by the same concepts lie together whatever their logit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import check_choice, check_positive
from ..layers import capture
from ..methods.base import Method
from ..modes import eval_semantics
from ..results import ResultExport
from .base import ConceptTool, iterate_batches

REDUCERS = ("pca", "tsne", "umap")


@dataclass
class EmbeddingResult(ResultExport):
    """``points (N, dims)``, the ``features (N, C)`` they embed, ``labels (N,)`` (or None), the targets and the
    fitted reducer."""

    points: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None
    reducer: Any

    def _rows(self) -> list[dict[str, Any]]:
        """One row per sample: its point's coordinates and label."""
        rows = []
        for i, point in enumerate(self.points.tolist()):
            row: dict[str, Any] = {"sample": i, **{f"dim {d}": float(v) for d, v in enumerate(point)}}
            row["label"] = None if self.labels is None else self.labels[i].item()
            rows.append(row)
        return rows


def reduce(features: np.ndarray, how: str = "pca", dims: int = 2, seed: int = 0, **settings: Any) -> tuple:
    """``(points, fitted reducer)`` of ``features (N, C)`` by PCA, t-SNE or UMAP."""
    check_choice(how, "reducer", REDUCERS)
    if how == "pca":
        from sklearn.decomposition import PCA

        model = PCA(dims, random_state=seed, **settings)
    elif how == "tsne":
        from sklearn.manifold import TSNE

        perplexity = settings.pop("perplexity", min(30.0, max(2.0, (features.shape[0] - 1) / 3)))
        model = TSNE(dims, perplexity=perplexity, random_state=seed, init="pca", **settings)
    else:
        try:
            import umap
        except ImportError as err:
            raise ImportError("reducer 'umap' needs the package umap-learn (pip install umap-learn); "
                              "or use 'pca' or 'tsne'") from err
        model = umap.UMAP(n_components=dims, random_state=seed, **settings)
    return model.fit_transform(features), model


class Embedding(ConceptTool):
    """Embed samples by a layer's pooled activations or their concept-relevance vectors.

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool` (the method is used for ``of="relevance"`` only).
    of : "activation" or "relevance"
    reducer : "pca", "tsne" or "umap"
    dims : int
    seed : int
    target : "label" or "prediction"
        The explained output for ``of="relevance"``.

    Called on ``data``: a tensor ``x``, a pair ``(x, y)`` or a DataLoader of batches.
    """

    def __init__(self, model: nn.Module, layer: str, of: str = "activation", reducer: str = "pca", dims: int = 2,
                 seed: int = 0, method: str | Method | None = None, method_settings: dict | None = None,
                 axis: int | str = "auto", target: str = "label") -> None:
        super().__init__(model, layer, method, method_settings, axis)
        check_choice(of, "of", ("activation", "relevance"))
        check_choice(reducer, "reducer", REDUCERS)
        check_choice(target, "target", ("label", "prediction"))
        check_positive(dims, "dims", integer=True)
        self.of, self.reducer, self.dims, self.seed, self.target = of, reducer, dims, seed, target

    def features(self, data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features (N, C), labels (N,) or None)`` over the data."""
        feats, labels = [], []
        for x, y in iterate_batches(data):
            x = self.check(x)
            if self.of == "activation":
                with torch.no_grad():
                    _, rec = self._activations(x)
                feats.append(rec)
            else:
                target = y.tolist() if (self.target == "label" and y is not None) else None
                _, rec = self.record(x, target, keep=("relevance",))
                per_channel = rec[self.layer].per_channel()
                feats.append(per_channel / per_channel.abs().sum(1, keepdim=True).clamp_min(1e-30))
            if y is not None:
                labels.append(y)
        if not feats:
            raise ValueError("data is empty: nothing to embed")
        return torch.cat(feats), torch.cat(labels) if labels else None

    def _activations(self, x: torch.Tensor):
        from ..propagation.record import channel_axis

        with eval_semantics(self.model), capture(self.model, self.module) as seen:
            self.model(x)
        out = seen[-1]
        axis = channel_axis(self.module, out.ndim) if self.axis == "auto" else self.axis % out.ndim
        v = out.movedim(axis, -1)
        return None, v.reshape(v.shape[0], -1, v.shape[-1]).mean(1)

    def __call__(self, data: Any, **reducer_settings: Any) -> EmbeddingResult:
        feats, labels = self.features(data)
        if feats.shape[0] < 3:
            raise ValueError(f"data holds {feats.shape[0]} samples; an embedding needs at least 3")
        points, model = reduce(feats.detach().cpu().double().numpy(), self.reducer, self.dims, self.seed,
                               **reducer_settings)
        return EmbeddingResult(np.asarray(points), feats.cpu().numpy(),
                               None if labels is None else labels.cpu().numpy(), model)
