"""Counterfactual quality: validity, proximity, sparsity, diversity, plausibility (Mothilal, Sharma, Tan, FAT* 2020,
§4; Wachter, Mittelstadt, Russell 2017 for the MAD-scaled L1 distance), and the distances they and the
counterfactual search share.

A counterfactual metric is called like every metric, ``metric(model, x, target, explanation)``, where
``explanation`` holds the counterfactuals of ``x``: a tensor ``(N, k, ...)`` (``k`` per sample) or ``(N, ...)``
(one per sample), or a result with ``counterfactuals`` and ``found`` (``xk.counterfactuals.CounterfactualsResult``:
candidates not found are left out of the means), and ``target`` is the *desired* class. Scores are per sample,
averaged over its ``k`` counterfactuals:

- :class:`Validity`: the fraction of the ``k`` that the model classifies as ``target`` (higher is better);
- :class:`Proximity`: the mean over features of ``|c_j − x_j| / MAD_j`` (``scale="mad"``, MAD of ``data``) or of
  ``|c_j − x_j|`` (``scale="l1"``) (lower is better);
- :class:`CounterfactualSparsity`: the fraction of features left unchanged (higher is better);
- :class:`Diversity`: the mean pairwise distance between the ``k`` (same units as proximity; higher is better;
  NaN for ``k < 2``);
- :class:`Plausibility`: the mean distance to the ``neighbours`` nearest rows of ``data`` (same units), or an
  autoencoder's reconstruction error ``‖c − AE(c)‖²`` (lower is better: a distance from the data).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batching import check_batch_size
from ..errors import check_choice, check_model, check_positive
from ..modes import eval_semantics
from ..targets import check_target
from .base import Metric, MetricResult, register

__all__ = ["Validity", "Proximity", "CounterfactualSparsity", "Diversity", "Plausibility", "mad",
           "scaled_l1", "knn_distance", "reconstruction_error"]


def mad(data: torch.Tensor) -> torch.Tensor:
    """Median absolute deviation of each column of ``data`` ``(M, D)``; a column with MAD 0 gets 1 (as DiCE and
    Wachter et al.: its changes are counted in its own units)."""
    median = data.median(0).values
    spread = (data - median).abs().median(0).values
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def scaled_l1(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over the last dimension of ``|a − b| / scale`` (broadcast)."""
    diff = (a - b).abs()
    if scale is not None:
        diff = diff / scale
    return diff.mean(-1)


def knn_distance(points: torch.Tensor, data: torch.Tensor, neighbours: int = 1,
                 scale: torch.Tensor | None = None, chunk: int = 4096) -> torch.Tensor:
    """The mean scaled-L1 distance (:func:`scaled_l1`) of each row of ``points`` ``(M, D)`` to its ``neighbours``
    nearest rows of ``data`` ``(R, D)``; computed in chunks of ``chunk`` points."""
    k = min(neighbours, data.shape[0])
    data = data.to(points.dtype) / (1 if scale is None else scale.to(points.dtype))
    out = []
    for start in range(0, points.shape[0], chunk):
        part = points[start:start + chunk] / (1 if scale is None else scale.to(points.dtype))
        distance = torch.cdist(part, data, p=1) / points.shape[1]
        out.append(distance.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out) if out else points.new_zeros(0)


def reconstruction_error(points: torch.Tensor, autoencoder: nn.Module) -> torch.Tensor:
    """``‖p − AE(p)‖₂²`` per point (the autoencoder term of CEM, Dhurandhar et al. 2018, eq. 1; differentiable)."""
    return (points - autoencoder(points)).flatten(1).pow(2).sum(1)


class _CounterfactualMetric(Metric):
    """Base of the counterfactual metrics: reads the counterfactuals ``(N, k, ...)`` and the ``found`` mask."""

    family = "counterfactual"
    zero_attribution_undefined = False
    #: whether the metric compares a sample's counterfactuals with each other or the data (not only with x)
    scale_from_data = False

    def _setup(self, scale: str = "mad", data: Any = None, batch_size: int | str = "auto") -> None:
        check_choice(scale, "scale", ("mad", "l1"))
        check_batch_size(batch_size)
        self._common(batch_size)
        self.scale = scale
        self.data = None if data is None else torch.as_tensor(data)

    def evaluate(self, model: Any, x: torch.Tensor, target: Any = None, explanation: Any = None,
                 mask: torch.Tensor | None = None, *, forward_args: Any = (),
                 forward_kwargs: dict[str, Any] | None = None) -> MetricResult:
        if mask is not None:
            raise ValueError(f"{self.name} does not use a mask; leave mask=None")
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise TypeError("x must be the explained batch (N, ...) as a tensor")
        cf, found = self._unpack(explanation, x)
        n, k = cf.shape[:2]
        flat_x, flat_cf = x.reshape(n, 1, -1).double(), cf.reshape(n, k, -1).double()
        with eval_semantics(model):
            values = self.score(model, x, target, flat_x, flat_cf, cf)
        values = torch.where(found, values, torch.full_like(values, float("nan")))
        counted = found.sum(1)
        mean = torch.where(counted > 0, values.nan_to_num(0).sum(1) / counted.clamp_min(1),
                           torch.full((n,), float("nan"), dtype=values.dtype))
        return MetricResult(self.empty_value(mean, counted), info={"found": counted})

    def empty_value(self, mean: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        return mean

    def _unpack(self, explanation: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(explanation, "counterfactuals") and hasattr(explanation, "found"):
            cf, found = explanation.counterfactuals, explanation.found
        elif isinstance(explanation, torch.Tensor):
            cf = explanation if explanation.ndim == x.ndim + 1 else explanation.unsqueeze(1)
            found = torch.ones(cf.shape[:2], dtype=torch.bool)
        else:
            raise TypeError(f"{self.name} scores counterfactuals: pass them as explanation= (a tensor (N, k, ...) "
                            f"or (N, ...), or a CounterfactualsResult), got {type(explanation).__name__}")
        if cf.shape[0] != x.shape[0] or tuple(cf.shape[2:]) != tuple(x.shape[1:]):
            raise ValueError(f"the counterfactuals have shape {tuple(cf.shape)}; for x of shape {tuple(x.shape)} "
                             f"give (N, k, {', '.join(map(str, x.shape[1:]))})")
        return cf, found.to(torch.bool).cpu()

    def _scale(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.scale == "l1":
            return None
        if self.data is None:
            raise ValueError(f"{self.name}(scale='mad') needs the data set for the MAD: pass data= (rows like x), "
                             "or scale='l1'")
        return mad(self.data.reshape(self.data.shape[0], -1).double())

    def score(self, model, x, target, flat_x, flat_cf, cf) -> torch.Tensor:  # (N, k)
        raise NotImplementedError


@register
class Validity(_CounterfactualMetric):
    """The fraction of a sample's counterfactuals classified as the desired class ``target``; a sample with none
    found scores 0. Higher is better."""

    higher_is_better = True

    def __init__(self, batch_size: int | str = "auto") -> None:
        self._setup("l1", None, batch_size)

    def score(self, model, x, target, flat_x, flat_cf, cf):
        check_model(model)
        if target is None:
            raise ValueError("Validity needs target=: the desired class of the counterfactuals")
        check_target(target, x.shape[0])
        n, k = cf.shape[:2]
        weight = next((p for p in getattr(model, "parameters", lambda: iter(()))() if p.is_floating_point()), None)
        with torch.no_grad():  # in the model's precision (x's for a function)
            out = model(cf.reshape(n * k, *cf.shape[2:]).to(weight.dtype if weight is not None else x.dtype))
        wanted = torch.as_tensor(target).expand(n) if torch.as_tensor(target).ndim == 0 else torch.as_tensor(target)
        return (out.argmax(1).view(n, k).cpu() == wanted.view(n, 1).cpu()).double()

    def empty_value(self, mean, counted):
        return torch.where(counted > 0, mean, torch.zeros_like(mean))


@register
class Proximity(_CounterfactualMetric):
    """The mean over features of ``|c_j − x_j| / MAD_j`` (``scale="mad"``, with ``data=``) or ``|c_j − x_j|``
    (``scale="l1"``), averaged over the sample's counterfactuals (Mothilal et al. 2020, eq. 5). Lower is better."""

    higher_is_better = False

    def __init__(self, scale: str = "l1", data: Any = None) -> None:
        self._setup(scale, data)

    def score(self, model, x, target, flat_x, flat_cf, cf):
        return scaled_l1(flat_cf, flat_x, self._scale(x))


@register
class CounterfactualSparsity(_CounterfactualMetric):
    """The fraction of features a counterfactual leaves unchanged (``|c_j − x_j| ≤ tolerance``), averaged over the
    sample's counterfactuals (Mothilal et al. 2020, eq. 6). Higher is better."""

    higher_is_better = True

    def __init__(self, tolerance: float = 0.0) -> None:
        check_positive(tolerance, "tolerance", allow_zero=True)
        self._setup("l1", None)
        self.tolerance = tolerance

    def score(self, model, x, target, flat_x, flat_cf, cf):
        return ((flat_cf - flat_x).abs() <= self.tolerance).double().mean(-1)


@register
class Diversity(_CounterfactualMetric):
    """The mean pairwise distance (mean over features of ``|c_a − c_b|`` / MAD or plain) between a sample's found
    counterfactuals (Mothilal et al. 2020, eq. 4); NaN for fewer than two. Higher is better."""

    higher_is_better = True

    def __init__(self, scale: str = "l1", data: Any = None) -> None:
        self._setup(scale, data)

    def evaluate(self, model, x, target=None, explanation=None, mask=None, *, forward_args=(),
                 forward_kwargs=None) -> MetricResult:
        cf, found = self._unpack(explanation, x)
        n, k = cf.shape[:2]
        flat = cf.reshape(n, k, -1).double()
        pair = scaled_l1(flat[:, :, None], flat[:, None, :], self._scale(x))  # (N, k, k)
        both = found[:, :, None] & found[:, None, :] & ~torch.eye(k, dtype=torch.bool)[None]
        count = both.sum((1, 2))
        total = torch.where(both, pair, torch.zeros_like(pair)).sum((1, 2))
        scores = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
        return MetricResult(scores, info={"found": found.sum(1)})


@register
class Plausibility(_CounterfactualMetric):
    """How far the counterfactuals lie from the data: the mean scaled-L1 distance to the ``neighbours`` nearest
    rows of ``data`` (``scale`` as :class:`Proximity`), or with ``autoencoder=`` its reconstruction error
    ``‖c − AE(c)‖²`` (Dhurandhar et al. 2018; Van Looveren & Klaise 2021). Lower is better."""

    higher_is_better = False

    def __init__(self, data: Any = None, neighbours: int = 1, scale: str = "l1",
                 autoencoder: nn.Module | None = None) -> None:
        check_positive(neighbours, "neighbours", integer=True)
        if autoencoder is not None and not isinstance(autoencoder, nn.Module):
            raise TypeError(f"autoencoder must be a torch.nn.Module, got {type(autoencoder).__name__}")
        self._setup(scale, data)
        self.neighbours, self.autoencoder = neighbours, autoencoder

    def score(self, model, x, target, flat_x, flat_cf, cf):
        n, k = cf.shape[:2]
        if self.autoencoder is not None:
            with torch.no_grad():
                return reconstruction_error(cf.reshape(n * k, *cf.shape[2:]).to(x.dtype),
                                            self.autoencoder).double().view(n, k).cpu()
        if self.data is None:
            raise ValueError("Plausibility needs data= (rows like x) for the nearest-neighbour distance, or "
                             "autoencoder=")
        data = self.data.reshape(self.data.shape[0], -1).double()
        scale = self._scale(x)
        return knn_distance(flat_cf.reshape(n * k, -1), data, self.neighbours, scale).view(n, k)
