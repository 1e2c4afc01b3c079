"""Evaluation of *training-data* attribution against retraining: the linear datamodeling score (LDS), the
brittleness test, and the detection of mislabelled samples (AUC).

Data attribution scores ``τ(z)_i`` (a query ``z``, a training sample ``i``; e.g. TRAK, influence functions,
TracIn from :mod:`xaikit.examples`) claim how the model's output at ``z`` would change if ``i`` were left out
of training. These metrics check the claim by retraining with a user-given function

    ``retrain(indices: LongTensor, seed: int) -> model``  (or the outputs ``(Q,)`` at the queries)

that trains a fresh model on the training samples ``indices`` (positions in the attributed training set).

- :class:`LinearDatamodelingScore` (Park et al., ICML 2023, §2.2 / Def. 2.3; Ilyas et al. 2022): draw ``M``
  random subsets ``S_j`` of a fraction ``α`` of the training set, predict the output at ``z`` by the additive
  model ``g_τ(z, S_j) = Σ_{i∈S_j} τ(z)_i``, retrain on each ``S_j`` and measure the true output
  ``f(z; θ(S_j))``; the LDS of ``z`` is the Spearman rank correlation of the two over ``j``.
- :class:`Brittleness` (Ilyas et al. 2022, §4): remove the ``k`` strongest proponents of each query's
  prediction, retrain, and count whether the prediction flips.
- :func:`detection_auc`: the ROC AUC with which a ranking of the training samples (self-influence, loss)
  finds the flipped labels.

The output function is the classification *margin* (:func:`margin`), ``log p_y/(1-p_y)`` (TRAK's ``f``).
These metrics take a retraining function rather than a model, so they live in their own registry
(:data:`DATA_ATTRIBUTION_METRICS`) and not in :data:`~xaikit.metrics.METRICS`, whose metrics score
attribution maps of inputs and are called as ``metric(model, x, target, explanation)``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from ..errors import check_positive
from ..registry import Registry
from ..settings import CheckedSettings

__all__ = ["margin", "spearman", "detection_auc", "DataAttributionMetric", "LinearDatamodelingScore", "Brittleness",
           "DATA_ATTRIBUTION_METRICS", "register_data_attribution_metric"]

Retrain = Callable[[torch.Tensor, int], Any]


def margin(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The classification margin ``f = z_y − log Σ_{j≠y} exp z_j = log(p_y / (1 − p_y))`` per sample ``(N,)``
    (TRAK's model output function, Park et al. 2023, eq. 9). A single logit ``(N,)`` or ``(N, 1)`` is a binary
    model: ``f = z`` for ``y = 1`` and ``−z`` for ``y = 0``."""
    if output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1):
        z = output.reshape(-1)
        return torch.where(y.reshape(-1) > 0, z, -z)
    if output.ndim != 2:
        raise ValueError(f"margin needs outputs (N, classes), got {tuple(output.shape)}")
    y = y.reshape(-1).long()
    picked = output.gather(1, y[:, None])[:, 0]
    others = output.scatter(1, y[:, None], float("-inf"))
    return picked - torch.logsumexp(others, 1)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (from 1) along the last dimension, ties given their average rank (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata
    return torch.from_numpy(rankdata(values.detach().double().cpu().numpy(), axis=-1)).double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of ``a`` and ``b`` along the last dimension (ties: average ranks); NaN where
    one side is constant."""
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _ranks(a.detach().double().cpu()), _ranks(b.detach().double().cpu())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    denom = (ra.pow(2).sum(-1) * rb.pow(2).sum(-1)).sqrt()
    return torch.where(denom > 0, (ra * rb).sum(-1) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))


def detection_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """ROC AUC of ranking the samples by ``scores`` (higher: more suspicious) to find the ``positive`` ones (a
    boolean mask, e.g. the flipped labels): the Mann–Whitney probability that a positive outranks a negative,
    ties counted half."""
    scores = torch.as_tensor(scores).detach().double().cpu().reshape(-1)
    positive = torch.as_tensor(positive).cpu().reshape(-1).bool()
    if scores.shape != positive.shape:
        raise ValueError(f"scores has {scores.numel()} values but positive has {positive.numel()}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("detection_auc needs both positive and negative samples")
    ranks = _ranks(scores[None])[0]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class DataAttributionMetric(CheckedSettings):
    """Base class: ``metric(retrain, x, y, scores) -> (Q,)`` scores, with ``higher_is_better``."""

    higher_is_better: ClassVar[bool] = True

    @staticmethod
    def _check_scores(scores: Any, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
            raise ValueError("scores must be the attribution matrix (queries, training samples), got "
                             f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
        if scores.shape[0] != x.shape[0]:
            raise ValueError(f"scores has {scores.shape[0]} rows but x has {x.shape[0]} queries")
        if not torch.isfinite(scores).all():
            raise ValueError("scores contains NaN or infinite values")
        return scores.detach()

    @staticmethod
    def _retrain(retrain: Retrain, indices: torch.Tensor, seed: int, what: str) -> Any:
        if not callable(retrain):
            raise TypeError("retrain must be a function (indices, seed) -> model trained on those training samples, "
                            f"got {type(retrain).__name__}")
        try:
            return retrain(indices, seed)
        except Exception as err:  # the user's function: say which call failed and what it must do
            raise RuntimeError(f"retrain failed on {what} ({indices.numel()} training samples, seed {seed}): "
                               f"{type(err).__name__}: {err}. retrain(indices, seed) must train a fresh model on "
                               "the training samples at `indices` and return it (or its outputs at x)") from err

    @staticmethod
    def _outputs(trained: Any, x: torch.Tensor, y: torch.Tensor, what: str) -> torch.Tensor:
        """The margin of a retrained model at the queries, or the outputs retrain returned ``(Q,)``."""
        if isinstance(trained, torch.Tensor):
            if trained.shape != (x.shape[0],):
                raise ValueError(f"retrain returned a tensor of shape {tuple(trained.shape)} on {what}; return the "
                                 f"model, or its outputs at x as ({x.shape[0]},)")
            return trained.detach().double().cpu()
        if not callable(trained):
            raise TypeError(f"retrain returned {type(trained).__name__} on {what}; return the trained model")
        with torch.no_grad():
            if isinstance(trained, nn.Module):
                was = trained.training
                trained.eval()
            out = trained(x)
            if isinstance(trained, nn.Module):
                trained.train(was)
        return margin(out, y).detach().double().cpu()


class LinearDatamodelingScore(DataAttributionMetric):
    """Linear datamodeling score (Park et al. 2023, Def. 2.3): Spearman correlation, over random training
    subsets, between the attribution's additive prediction and the retrained model's margin at each query.

    Parameters
    ----------
    subsets : int
        ``M``, the number of random subsets (retrainings per repeat); the paper uses 100s, 50 is a minimum.
    fraction : float
        ``α``, the share of the training set in each subset (0.5 in the paper's benchmarks).
    repeats : int
        Models retrained per subset (different seeds); their margins are averaged (reduces training noise).
    seed : int
        Seed of the subsets and of the retraining seeds.

    Cost: ``subsets × repeats`` calls of ``retrain``. Calling ``metric(retrain, x, y, scores)`` returns the LDS
    of each query ``(Q,)``; ``metric.last`` keeps ``predicted``, ``actual`` ``(Q, M)`` and the subset masks.
    """

    def __init__(self, subsets: int = 50, fraction: float = 0.5, repeats: int = 1, seed: int = 0) -> None:
        check_positive(subsets, "subsets", integer=True)
        check_positive(repeats, "repeats", integer=True)
        if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
        if subsets < 2:
            raise ValueError("subsets must be at least 2 (a rank correlation over subsets)")
        self.subsets, self.fraction, self.repeats, self.seed = subsets, float(fraction), repeats, seed
        self.last: dict[str, torch.Tensor] = {}

    def masks(self, train_size: int) -> torch.Tensor:
        """The subsets as a boolean matrix ``(M, N)``, drawn from ``seed`` (each of ``round(α N)`` samples)."""
        g = torch.Generator().manual_seed(self.seed)
        size = max(1, round(self.fraction * train_size))
        order = torch.rand(self.subsets, train_size, generator=g).argsort(1)[:, :size]
        return torch.zeros(self.subsets, train_size, dtype=torch.bool).scatter_(1, order, True)

    def __call__(self, retrain: Retrain, x: torch.Tensor, y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self._check_scores(scores, x)
        y = torch.as_tensor(y).reshape(-1)
        masks = self.masks(scores.shape[1])
        predicted = scores.double().cpu() @ masks.double().T  # (Q, M)
        actual = torch.zeros_like(predicted)
        for j in range(self.subsets):
            indices = masks[j].nonzero()[:, 0]
            for r in range(self.repeats):
                what = f"subset {j}"
                trained = self._retrain(retrain, indices, self.seed * 100_003 + j * self.repeats + r, what)
                actual[:, j] += self._outputs(trained, x, y, what) / self.repeats
        self.last = {"predicted": predicted, "actual": actual, "masks": masks}
        return spearman(predicted, actual).to(scores.dtype if scores.is_floating_point() else torch.float64)


class Brittleness(DataAttributionMetric):
    """Brittleness of predictions (Ilyas et al. 2022, §4): remove each query's ``k`` strongest proponents of
    its label ``y`` (the largest scores), retrain, and report whether the prediction is no longer ``y``.

    Returns the share of ``repeats`` retrainings in which each query's prediction flipped ``(Q,)``; a better
    attribution finds the samples behind a prediction and flips more (``higher_is_better``). Cost: ``Q ×
    repeats`` calls of ``retrain``. Compare with random scores (``torch.rand_like(scores)``) as the baseline.
    """

    def __init__(self, k: int = 10, repeats: int = 1, seed: int = 0) -> None:
        check_positive(k, "k", integer=True)
        check_positive(repeats, "repeats", integer=True)
        self.k, self.repeats, self.seed = k, repeats, seed

    def __call__(self, retrain: Retrain, x: torch.Tensor, y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = self._check_scores(scores, x)
        if self.k >= scores.shape[1]:
            raise ValueError(f"k={self.k} leaves no training sample of {scores.shape[1]}; use k < {scores.shape[1]}")
        y = torch.as_tensor(y).reshape(-1).long()
        top = scores.topk(self.k, 1).indices.cpu()
        flipped = torch.zeros(x.shape[0], dtype=torch.float64)
        for q in range(x.shape[0]):
            keep = torch.ones(scores.shape[1], dtype=torch.bool)
            keep[top[q]] = False
            for r in range(self.repeats):
                what = f"query {q} without its top-{self.k} proponents"
                trained = self._retrain(retrain, keep.nonzero()[:, 0], self.seed * 100_003 + q * self.repeats + r, what)
                if not callable(trained) or isinstance(trained, torch.Tensor):
                    raise TypeError(f"retrain returned {type(trained).__name__} on {what}; the brittleness test needs "
                                    "the trained model (it reads the prediction)")
                with torch.no_grad():
                    out = trained(x[q:q + 1])
                pred = out.reshape(1, -1).argmax(1) if out.numel() > 1 else (out.reshape(1) > 0).long()
                flipped[q] += float(pred.item() != y[q].item()) / self.repeats
        return flipped


#: the registry of data-attribution metrics by name (a retraining function instead of a model; see above)
REGISTRY: Registry[type[DataAttributionMetric]] = Registry("data attribution metric", DataAttributionMetric,
                                                           "xk.metrics.register_data_attribution_metric")
DATA_ATTRIBUTION_METRICS: Mapping[str, type[DataAttributionMetric]] = REGISTRY.view


def register_data_attribution_metric(cls: type[DataAttributionMetric] | None = None, name: str | None = None) -> Any:
    """Register a :class:`DataAttributionMetric` subclass under ``name`` (default: snake_case class name)."""
    return REGISTRY.register(cls, name)


register_data_attribution_metric(LinearDatamodelingScore)
register_data_attribution_metric(Brittleness)
