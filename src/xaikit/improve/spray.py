"""Spectral relevance analysis, SpRAy (Lapuschkin et al., Nat. Commun. 2019): cluster the heatmaps of one
class to find groups of samples the model decides on for different reasons (e.g. a watermark).

The heatmaps are summed over channels, average-pooled to a small grid, each scaled by its largest magnitude
and flattened; a symmetric k-nearest-neighbour graph connects them, and spectral clustering
(scikit-learn) splits it. The eigenvalues of the graph's normalised Laplacian are returned: a large gap after
the k-th smallest one suggests k clusters (the "eigengap"), which is how ``n_clusters=None`` chooses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import check_positive
from ..results import ResultExport


@dataclass
class SpRAyResult(ResultExport):
    """``labels`` (N,) cluster per heatmap, ``eigenvalues`` (ascending) of the normalised Laplacian,
    ``n_clusters`` used, ``features`` (N, size²) the pooled heatmaps that were clustered, ``mean`` (k, size,
    size) the mean pooled heatmap per cluster."""

    labels: torch.Tensor
    eigenvalues: torch.Tensor
    n_clusters: int
    features: torch.Tensor
    mean: torch.Tensor

    def _rows(self) -> list[dict[str, Any]]:
        """One row per heatmap: its cluster."""
        return [{"sample": i, "cluster": c} for i, c in enumerate(self.labels.tolist())]


def heatmap_features(heatmaps: torch.Tensor, size: int = 8) -> torch.Tensor:
    """``(N, size²)``: channel sum, average pooling to ``size`` × ``size``, scaled by the largest magnitude."""
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim not in (3, 4) or heatmaps.shape[0] < 2:
        raise ValueError("heatmaps must be a tensor (N, C, H, W) or (N, H, W) with N >= 2, got "
                         f"{tuple(getattr(heatmaps, 'shape', ()))}")
    if not torch.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN or infinite values")
    maps = heatmaps.detach().float()
    maps = maps.sum(1) if maps.ndim == 4 else maps
    pooled = F.adaptive_avg_pool2d(maps[:, None], size)[:, 0].flatten(1)
    peak = pooled.abs().amax(1, keepdim=True)
    return torch.where(peak > 0, pooled / peak.clamp_min(1e-30), pooled)


def spray(heatmaps: torch.Tensor, n_clusters: int | None = None, max_clusters: int = 8, size: int = 8,
          n_neighbors: int = 10, seed: int = 0) -> SpRAyResult:
    """Cluster heatmaps (see the module docstring); ``n_clusters=None`` takes the largest eigengap among
    2..``max_clusters``."""
    from scipy.sparse.csgraph import laplacian
    from sklearn.cluster import SpectralClustering
    from sklearn.neighbors import kneighbors_graph

    check_positive(size, "size", integer=True)
    check_positive(n_neighbors, "n_neighbors", integer=True)
    check_positive(max_clusters, "max_clusters", integer=True)
    features = heatmap_features(heatmaps, size)
    n = features.shape[0]
    k_nn = min(n_neighbors, n - 1)
    graph = kneighbors_graph(features.numpy(), k_nn, include_self=False)
    affinity = 0.5 * (graph + graph.T)
    lap = laplacian(affinity.toarray(), normed=True)
    eigenvalues = np.sort(np.linalg.eigvalsh(lap))
    if n_clusters is None:
        top = min(max_clusters, n - 1)
        gaps = np.diff(eigenvalues[:top + 1])
        n_clusters = int(np.argmax(gaps[1:]) + 2) if top >= 2 else 2
    check_positive(n_clusters, "n_clusters", integer=True)
    if n_clusters > n:
        raise ValueError(f"n_clusters ({n_clusters}) exceeds the number of heatmaps ({n})")
    model = SpectralClustering(n_clusters, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    labels = torch.as_tensor(model.fit_predict(affinity.toarray()), dtype=torch.long)
    mean = torch.stack([features[labels == c].mean(0) if (labels == c).any() else torch.zeros(size * size)
                        for c in range(n_clusters)]).view(n_clusters, size, size)
    return SpRAyResult(labels, torch.as_tensor(eigenvalues), n_clusters, features, mean)
