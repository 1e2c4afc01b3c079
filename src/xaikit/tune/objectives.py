"""Objectives: metrics of :mod:`xaikit.metrics` that score candidate methods, batched over candidates.

:func:`score_candidates` explains a batch once per candidate, then evaluates each metric *once* on all
candidates' attributions stacked along the batch axis (``K`` candidates × ``n`` samples as one batch of
``K·n``): the metric's perturbed inputs of every candidate go through the model together, in the metric's
chunks. This is exact because every metric's score of a sample never depends on its batch mates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..methods.base import Method
from ..metrics.base import Metric, get_metric

#: known unreliability of the metric families, shown next to the scores (seed lecture: "no one best criterion";
#: Pahde et al. 2023 find the metric-optimal γ differs per criterion, no metric fully reliable)
NOTES: dict[str, str] = {
    "faithfulness": "perturbed inputs are off the data distribution, so the score mixes faithfulness with the "
                    "model's reaction to artefacts; it depends on the baseline and step size (Hooker et al. 2019, "
                    "Rong et al. 2022 ROAD), and can rank methods differently under another baseline",
    "localisation": "rewards relevance on the object even where the model really uses context or shortcuts; "
                    "a faithful map of a shortcut model scores badly (Kohlbrenner et al. 2020)",
    "complexity": "says nothing about correctness: a map with all relevance on one pixel is the least complex",
    "robustness": "a constant (input-independent) explanation is perfectly robust; use with a faithfulness metric",
    "randomisation": "depends on the randomisation order and the similarity measure (Binder et al. 2023, "
                     "Hedström et al. 2023)",
    "axiomatic": "a pass/fail property, not a quality ranking",
}


@dataclass
class Objective:
    """One metric to optimise: its name (column), the metric object and its direction."""

    name: str
    metric: Metric

    @property
    def higher_is_better(self) -> bool:
        return bool(self.metric.higher_is_better)

    @property
    def note(self) -> str:
        return NOTES.get(self.metric.family, "")

    def better(self, a: float, b: float) -> bool:
        """Whether mean score ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b


def make_objectives(objectives: Any) -> list[Objective]:
    """Objectives from metric names (``"pixel_flipping"``), :class:`Metric` objects, or a dict name -> either.

    Unknown metric names raise a ``ValueError`` listing the valid ones; an empty list raises too.
    """
    if objectives is None:
        objectives = ["pixel_flipping"]
    if isinstance(objectives, (str, Metric)):
        objectives = [objectives]
    items = list(objectives.items()) if isinstance(objectives, dict) else [(None, o) for o in objectives]
    if not items:
        raise ValueError("objectives is empty: give at least one metric name, e.g. ['pixel_flipping']")
    found = []
    for label, item in items:
        if isinstance(item, str):
            metric = get_metric(item)()
            label = label or item
        elif isinstance(item, Metric):
            metric = item
            label = label or type(item).__name__
        else:
            raise TypeError(f"an objective must be a metric name or an xk.metrics Metric, got {type(item).__name__}")
        found.append(Objective(str(label), metric))
    names = [o.name for o in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two objectives share the name {names}; pass a dict name -> metric")
    return found


def score_candidates(model: nn.Module, methods: Sequence[Method], x: torch.Tensor, target: torch.Tensor,
                     mask: torch.Tensor | None, objectives: Sequence[Objective]) -> dict[str, torch.Tensor]:
    """Scores ``(K, n)`` of ``K`` candidate methods on the samples ``x`` (n, ...), per objective name.

    ``target`` holds one class per sample (the same for every candidate). Metrics that re-explain inputs
    (robustness, randomisation) get each candidate's method in turn; all others get the stacked
    attributions of every candidate in one call.
    """
    k, n = len(methods), x.shape[0]
    attributions = None
    scores: dict[str, torch.Tensor] = {}
    for objective in objectives:
        metric = objective.metric
        use_mask = mask if metric.needs_mask else None
        if metric.needs_method:
            rows = [metric(model, x, target, m, use_mask).detach().float().cpu() for m in methods]
            scores[objective.name] = torch.stack(rows)
            continue
        if attributions is None:
            attributions = torch.cat([m(x, target=target).attribution.detach() for m in methods])
        repeat = (k,) + (1,) * (x.ndim - 1)
        stacked_mask = None if use_mask is None else use_mask.repeat((k,) + (1,) * (use_mask.ndim - 1))
        values = metric(model, x.repeat(repeat), target.repeat(k), attributions, stacked_mask)
        scores[objective.name] = values.detach().float().cpu().reshape(k, n)
    return scores
