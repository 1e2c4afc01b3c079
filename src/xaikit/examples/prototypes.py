"""Prototypes per class, their closest real samples, and a query's distance to them as an outlier score.

Following Dreyer et al., "Understanding the (Extra-)Ordinary: Validating Deep Model Decisions with
Prototypical Concept-based Explanations" (2023): the samples of each class are summarised by a few
prototypes in a vector space of the model — a layer's features or concept-relevance vectors (the relevance
per channel of a layer, see :func:`~xaikit.examples.relevance.channel_relevance`) — each prototype is shown
by the real samples closest to it, and a sample far from every prototype of its class is "extra-ordinary".
The paper fits Gaussian mixtures; here the prototypes are k-means centres (scikit-learn's ``KMeans``) or
k-medoids (real samples, alternating assignment and medoid update, Park & Jun 2009), and the outlier score is
the distance to the nearest prototype of the class, also given as a percentile among the class's own samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import torch

from ..deprecation import renamed, warn_renamed
from ..errors import check_choice, check_positive
from ..methods.base import _checked_init
from ..results import ResultExport

#: the clustering algorithms of :class:`Prototypes`
CLUSTERINGS = ("kmeans", "kmedoids")
METHODS = CLUSTERINGS  # the old name (``Prototypes(method=...)``)
DISTANCES = ("euclidean", "cosine")


def _distances(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1 - torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    return torch.cdist(a, b)


def kmedoids(vectors: torch.Tensor, k: int, metric: str = "euclidean", seed: int = 0, iterations: int = 100
             ) -> torch.Tensor:
    """Indices ``(k,)`` of ``k`` medoids of ``vectors`` ``(N, D)``: k-means++ seeding, then alternating
    assignment and medoid update (Park & Jun 2009) until the medoids stop changing."""
    n = vectors.shape[0]
    d = _distances(vectors, vectors, metric)
    g = torch.Generator().manual_seed(seed)
    medoids = [int(torch.randint(n, (1,), generator=g))]
    for _ in range(1, k):  # k-means++: next medoid drawn in proportion to the squared distance to the chosen
        weight = d[:, medoids].amin(1).pow(2)
        medoids.append(int(torch.multinomial(weight.cpu() + 1e-12, 1, generator=g)) if weight.sum() > 0 else
                       int(torch.randint(n, (1,), generator=g)))
    chosen = torch.tensor(medoids, device=vectors.device)
    for _ in range(iterations):
        assign = d[:, chosen].argmin(1)
        # the medoid of a cluster minimises the summed distance to its members
        member = torch.nn.functional.one_hot(assign, k).T.to(d.dtype)      # (k, N)
        cost = member @ d                                                  # (k, N): Σ over members of d(m, j)
        cost = torch.where(member.bool(), cost, torch.full_like(cost, float("inf")))
        new = torch.where(member.sum(1) > 0, cost.argmin(1), chosen)
        if torch.equal(new, chosen):
            break
        chosen = new
    return chosen


@dataclass
class PrototypesResult(ResultExport):
    """The fitted prototypes: ``centres`` ``(P, D)``, their ``classes`` ``(P,)``, the indices of the closest
    real samples of their class ``closest`` ``(P, m)`` with ``closest_distance``, and the ``size`` of each
    prototype's cluster."""

    centres: torch.Tensor
    classes: torch.Tensor
    closest: torch.Tensor
    closest_distance: torch.Tensor
    size: torch.Tensor

    def _rows(self) -> list[dict[str, Any]]:
        """One row per prototype: its class, cluster size and closest real samples (the centres are tensors:
        ``.centres``)."""
        return [{"prototype": p, "class": c, "size": n, "closest": closest, "closest_distance": dist}
                for p, (c, n, closest, dist) in enumerate(zip(self.classes.tolist(), self.size.tolist(),
                                                              self.closest.tolist(),
                                                              self.closest_distance.tolist()))]


class Prototypes:
    """Per-class prototypes of vectors (features or concept relevances) and a distance-based outlier score.

    Parameters
    ----------
    per_class : int
        Prototypes per class.
    clustering : "kmeans" or "kmedoids"
        k-means centres (scikit-learn) or medoids (always real samples). ``method=`` is its deprecated name
        (``method=`` names an explainer everywhere else).
    metric : "euclidean" or "cosine"
        Distance between vectors (k-means with ``cosine`` runs on unit-normalised vectors).
    samples : int
        Closest real samples kept per prototype.
    seed : int
        Seed of the initialisation.

    Examples
    --------
    >>> protos = Prototypes(per_class=3).fit(vectors, labels)
    >>> protos.prototypes.closest            # (classes·3, samples) indices of real samples per prototype
    >>> score, percentile = protos.outlier_score(query_vectors, predicted)
    """

    def __init__(self, per_class: int = 3, clustering: str = "kmeans", metric: str = "euclidean", samples: int = 5,
                 seed: int = 0, *, method: str | None = None) -> None:
        check_positive(per_class, "per_class", integer=True)
        argument = "clustering"
        if method is not None:
            warn_renamed("Prototypes(method=...)", "Prototypes(clustering=...)", 4)
            clustering, argument = method, "method"
        check_choice(clustering, argument, CLUSTERINGS)
        check_choice(metric, "metric", DISTANCES)
        check_positive(samples, "samples", integer=True)
        self.per_class, self.clustering, self.metric, self.samples, self.seed = per_class, clustering, metric, samples, seed
        self.prototypes: PrototypesResult | None = None
        self._reference: dict[int, torch.Tensor] = {}

    @property
    def method(self) -> str:
        """Deprecated: :attr:`clustering`."""
        warn_renamed("Prototypes.method", "Prototypes.clustering", 3)
        return self.clustering

    def fit(self, vectors: torch.Tensor, labels: torch.Tensor) -> "Prototypes":
        """Fit ``per_class`` prototypes to the vectors ``(N, D)`` of each class in ``labels`` ``(N,)``."""
        vectors, labels = self._check(vectors, labels)
        centres, classes, closest, closest_d, sizes = [], [], [], [], []
        for c in labels.unique().tolist():
            members = (labels == c).nonzero()[:, 0]
            v = vectors[members]
            k = min(self.per_class, v.shape[0])
            if self.clustering == "kmeans":
                centre = self._kmeans(v, k)
            else:
                centre = v[kmedoids(v, k, self.metric, self.seed)]
            d = _distances(v, centre, self.metric)                       # (n_c, k)
            near = d.topk(min(self.samples, v.shape[0]), dim=0, largest=False)
            centres.append(centre)
            classes.append(torch.full((k,), c, dtype=torch.long))
            closest.append(members[near.indices.T])
            closest_d.append(near.values.T)
            sizes.append(torch.bincount(d.argmin(1), minlength=k))
            self._reference[c] = d.amin(1).sort().values               # the class's own distances, for percentiles
        width = min(x.shape[1] for x in closest)
        self.prototypes = PrototypesResult(torch.cat(centres), torch.cat(classes),
                                       torch.cat([x[:, :width] for x in closest]),
                                       torch.cat([x[:, :width] for x in closest_d]), torch.cat(sizes))
        return self

    def _kmeans(self, v: torch.Tensor, k: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        data = torch.nn.functional.normalize(v, dim=1) if self.metric == "cosine" else v
        fitted = KMeans(n_clusters=k, n_init=10, random_state=self.seed).fit(data.detach().cpu().double().numpy())
        return torch.as_tensor(fitted.cluster_centers_, dtype=v.dtype, device=v.device)

    def _check(self, vectors: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2:
            raise ValueError("vectors must be a (N, D) tensor of features or concept relevances")
        if vectors.shape[0] == 0:
            raise ValueError("vectors is empty; prototypes need at least one sample")
        if not torch.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.shape[0] != vectors.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries for {vectors.shape[0]} vectors")
        return vectors.detach().float().cpu(), labels

    def distances(self, vectors: torch.Tensor) -> torch.Tensor:
        """Distances ``(Q, P)`` of query vectors to every prototype."""
        if self.prototypes is None:
            raise ValueError("no prototypes yet; call fit(vectors, labels) first")
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[1] != self.prototypes.centres.shape[1]:
            raise ValueError(f"vectors must be (Q, {self.prototypes.centres.shape[1]}) like the fitted ones")
        return _distances(vectors.detach().float().cpu(), self.prototypes.centres, self.metric)

    def outlier_score(self, vectors: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``(Q,)`` of each query to the nearest prototype of its class (``labels``: e.g. the
        prediction), and its percentile ``(Q,)`` in [0, 1] among the distances of that class's fitted samples
        (near 1: farther than almost every sample the prototypes were fitted on)."""
        d = self.distances(vectors)
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.shape[0] != d.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries for {d.shape[0]} queries")
        unknown = sorted(set(labels.tolist()) - set(self._reference))
        if unknown:
            raise ValueError(f"labels {unknown} have no prototypes; fitted classes: {sorted(self._reference)}")
        own = self.prototypes.classes[None, :] == labels[:, None]
        score = torch.where(own, d, torch.full_like(d, float("inf"))).amin(1)
        percentile = torch.empty_like(score)
        for c in labels.unique().tolist():  # one search per class, all its queries at once
            rows = labels == c
            reference = self._reference[c]
            percentile[rows] = torch.searchsorted(reference, score[rows].contiguous(), right=True).float() / len(reference)
        return score, percentile


Prototypes.__init__ = _checked_init(Prototypes.__init__)  # unknown settings are rejected by name


__getattr__ = renamed(__name__, {"PrototypeSet": "PrototypesResult"}, globals())
