"""The honest check: the winner against the presets on held-out samples, with paired standard errors.

The search chose the winner on the tuning samples, so its score there is optimistic (the best of many noisy
means). :func:`holdout` scores the winner and the reference methods on samples the search never saw, and
reports each method's mean ± standard error and its paired difference to the winner ± standard error (the
same samples for every method, so the difference's error is much smaller than either mean's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batching import batch_size_for, check_batch_size
from ..deprecation import renamed, warn_renamed
from ..methods.base import Method
from ..methods.resolve import resolve_method
from ..results import ResultExport
from .objectives import Objective, make_objectives, score_candidates
from .result import mean_sem
from .search import _check_data


@dataclass
class HoldoutResult(ResultExport):
    """Per-sample held-out scores ``scores[objective][method]`` (n,), the reference method and directions.

    Its rows (every export): one per objective and method, mean ± standard error, the paired difference to the
    reference (the winner) ± standard error, and a verdict: *better*/*worse* than the reference, by more than
    two standard errors or within them.
    """

    scores: dict[str, dict[str, np.ndarray]]
    objectives: list[Objective]
    reference: str

    def summary(self) -> list[dict[str, Any]]:
        """The rows (see the class docstring)."""
        rows = []
        for o in self.objectives:
            ref = self.scores[o.name][self.reference]
            for label, values in self.scores[o.name].items():
                mean, sem, undefined = mean_sem(values)
                diff, diff_sem, _ = mean_sem(values - ref)
                rows.append({"objective": o.name, "method": label, "mean": mean, "sem": sem,
                             "diff": diff, "diff_sem": diff_sem, "undefined": undefined,
                             "higher_is_better": o.higher_is_better,
                             "verdict": _verdict(label == self.reference, diff, diff_sem, o.higher_is_better)})
        return rows

    def _rows(self) -> list[dict[str, Any]]:
        return self.summary()

    def _markdown_notes(self) -> tuple[str, str]:
        return "", f"diff: the paired difference to {self.reference} on the same samples (± its standard error)."


def _verdict(is_reference: bool, diff: float, diff_sem: float, higher_is_better: bool) -> str:
    if is_reference:
        return "reference"
    if diff == 0 and diff_sem == 0:
        return "identical scores"
    if math.isnan(diff_sem):
        return ""
    worse = diff < 0 if higher_is_better else diff > 0
    z = abs(diff) / diff_sem if diff_sem > 0 else math.inf
    return ("worse" if worse else "better") + (" (> 2 SE)" if z > 2 else " (within 2 SE)")


def holdout(model: nn.Module, data: Any, methods: dict[str, Method | str], objectives: Any = None,
            reference: str | None = None, batch_size: int | str = 16, *, chunk: int | None = None) -> HoldoutResult:
    """Score ``methods`` (label -> method object, name or spec such as ``"lrp:composite=epsilon_plus"``; the
    first is the reference unless ``reference``) on the held-out ``data`` (``(x, y)``, ``(x, y, mask)`` or any
    form of :class:`xaikit.data.Data`) with every objective, all methods' metric inputs batched.

    ``batch_size``: methods scored together (``"auto"``: as many as the memory budget holds explanations of
    ``data``); ``chunk`` is its deprecated name."""
    if chunk is not None:
        warn_renamed("holdout(chunk=...)", "holdout(batch_size=...)", 3)
        batch_size = chunk
    check_batch_size(batch_size, "chunk" if chunk is not None else "batch_size")
    objectives = make_objectives(objectives)
    if not methods:
        raise ValueError("methods is empty: give at least the winner, e.g. {'winner': result.method(model)}")
    methods = {label: m if isinstance(m, Method) else resolve_method(model, m, argument=f"methods[{label!r}]")
               for label, m in methods.items()}  # a name or spec is built on the model
    reference = reference or next(iter(methods))
    if reference not in methods:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(methods)}")
    x, y, mask = _check_data(model, data, "data")
    chunk = batch_size_for(batch_size, x)
    labels = list(methods)
    parts: dict[str, list[torch.Tensor]] = {o.name: [] for o in objectives}
    for start in range(0, len(labels), chunk):
        group = [methods[label] for label in labels[start: start + chunk]]
        scores = score_candidates(model, group, x, y, mask, objectives)
        for name, values in scores.items():
            parts[name].append(values)
    table = {name: dict(zip(labels, torch.cat(values).double().numpy())) for name, values in parts.items()}
    return HoldoutResult(table, objectives, reference)


__getattr__ = renamed(__name__, {"HoldoutTable": "HoldoutResult"}, globals())
