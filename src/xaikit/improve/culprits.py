"""Find the training samples behind an artifact or a label error: rank the training set by its attribution to
wrong-reason predictions (training-data attribution, e.g. TRAK: Park et al., ICML 2023).

Given a fitted attributor (:class:`~xaikit.examples.TRAK`, :class:`~xaikit.examples.TracIn` or
:class:`~xaikit.examples.InfluenceFunctions`: anything with ``scores(x, y) -> (Q, N)`` and ``model``) and
queries the model predicts for a wrong reason (test images with the artifact that flipped the prediction;
misclassified samples for a label error), each training sample ``i`` gets

    c_i = (1/Q) Σ_q [ τ(x_q, y_q)_i − τ(r_q, y_q)_i ]

with ``y_q`` the wrong prediction and ``r_q`` an optional *reference* of the query without the artifact (the
same image with the artifact region removed). The difference keeps what the artifact adds to a training
sample's support for the wrong class and cancels what the sample gives every image of that class. The
training samples with the largest ``c_i`` are the suspects: relabel them, remove them, or inspect them.

With TRAK, build it with ``newton=False`` for this use: the paper's Newton weights ``1 − p_i`` are ≈ 0 for
the samples the model fits by the shortcut and hide exactly those (measured on decoy digits in
``docs/data_attribution.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..batching import memory_budget
from ..errors import check_input
from ..results import ResultExport
from ..targets import labels_or_prediction

__all__ = ["training_culprits", "TrainingCulpritsResult"]


@dataclass
class TrainingCulpritsResult(ResultExport):
    """The training set ranked by its attribution to the wrong-reason predictions.

    ``ranking``: training indices ``(N,)``, strongest suspect first; ``score``: ``c_i`` of every training
    sample ``(N,)`` (in training order); ``label``: the label each query was attributed for ``(Q,)``.
    """

    ranking: torch.Tensor
    score: torch.Tensor
    label: torch.Tensor

    def top(self, k: int = 10) -> torch.Tensor:
        """The ``k`` strongest suspects (training indices)."""
        return self.ranking[:k]

    def _rows(self) -> list[dict[str, Any]]:
        """One row per training sample, by rank."""
        return [{"rank": r, "index": i, "score": s}
                for r, (i, s) in enumerate(zip(self.ranking.tolist(), self.score[self.ranking].tolist()))]


def training_culprits(attributor: Any, x: torch.Tensor, y: Any = None, reference: torch.Tensor | None = None
                      ) -> TrainingCulpritsResult:
    """Rank the training set by its attribution to the predictions ``y`` of the wrong-reason queries ``x``.

    Parameters
    ----------
    attributor : fitted training-data attributor
        ``scores(x, y) -> (Q, N)`` and a ``model`` (TRAK — with ``newton=False`` —, TracIn, influence functions).
    x : tensor ``(Q, ...)``
        Queries predicted for a wrong reason (with the artifact, or misclassified).
    y : labels ``(Q,)``, one label, or None
        The labels to attribute (default: the model's predictions on ``x``: the wrong ones).
    reference : tensor like ``x``, optional
        The same queries without the artifact; their scores for the same labels are subtracted.

    Returns
    -------
    TrainingCulpritsResult
        ``ranking`` (strongest suspect first), ``score`` ``c_i`` per training sample.

    Cost: ``Q`` (``2Q`` with a reference) query featurisations and ``Q × N`` scores, computed in chunks of
    queries so that one chunk's ``(chunk, N)`` scores fit the memory budget.
    """
    if not (hasattr(attributor, "scores") and hasattr(attributor, "model")):
        raise TypeError(f"attributor must be a fitted training-data attributor (xk.examples.TRAK, TracIn or "
                        f"InfluenceFunctions) with scores(x, y) and model, got {type(attributor).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of wrong-reason queries (Q, ...)")
    check_input(x, "x")
    if reference is not None:
        if not isinstance(reference, torch.Tensor) or reference.shape != x.shape:
            got = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"reference must be the queries without the artifact, shaped like x "
                             f"{tuple(x.shape)}; got {got}")
        check_input(reference, "reference")
    labels = labels_or_prediction(attributor.model, x, y, "queries")
    total: torch.Tensor | None = None
    start, step = 0, 1  # the first chunk is one query; it sizes the others by the training set's size
    while start < x.shape[0]:
        stop = min(x.shape[0], start + step)
        scores = attributor.scores(x[start:stop], labels[start:stop])
        if reference is not None:
            scores = scores.double() - attributor.scores(reference[start:stop], labels[start:stop]).double()
        part = scores.double().sum(0)
        total = part if total is None else total + part
        step = max(1, memory_budget(x.device) // (8 * max(1, scores.shape[1]) * scores.element_size()))
        start = stop
    assert total is not None
    score = total / x.shape[0]
    ranking = torch.sort(score, descending=True, stable=True).indices
    return TrainingCulpritsResult(ranking, score, labels)
