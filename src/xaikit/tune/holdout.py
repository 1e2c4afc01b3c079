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
from ..deprecation import warn_renamed
from ..methods.base import Method
from ..methods.resolve import resolve_method
from .objectives import Objective, make_objectives, score_candidates
from .result import mean_sem
from .search import _check_data


@dataclass
class HoldoutTable:
    """Per-sample held-out scores ``scores[objective][method]`` (n,), the reference method and directions."""

    scores: dict[str, dict[str, np.ndarray]]
    objectives: list[Objective]
    reference: str

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for o in self.objectives:
            ref = self.scores[o.name][self.reference]
            for label, values in self.scores[o.name].items():
                mean, sem, undefined = mean_sem(values)
                diff, diff_sem, _ = mean_sem(values - ref)
                rows.append({"objective": o.name, "method": label, "mean": mean, "sem": sem,
                             "diff": diff, "diff_sem": diff_sem, "undefined": undefined,
                             "higher_is_better": o.higher_is_better})
        return rows

    def to_markdown(self, digits: int = 4) -> str:
        """Mean ± SE per method and objective, and the paired difference to the reference (the winner).

        A difference is marked *real* where it is more than two standard errors from zero."""
        lines = [f"| objective | method | mean ± SE | − {self.reference} (paired) ± SE | |", "|---|---|---|---|---|"]
        for row in self.summary():
            mark = ""
            if row["method"] != self.reference and row["diff"] == 0 and row["diff_sem"] == 0:
                mark = "identical scores"
            elif row["method"] != self.reference and not math.isnan(row["diff_sem"]):
                worse = row["diff"] < 0 if row["higher_is_better"] else row["diff"] > 0
                z = abs(row["diff"]) / row["diff_sem"] if row["diff_sem"] > 0 else math.inf
                mark = ("worse" if worse else "better") + (" (> 2 SE)" if z > 2 else " (within 2 SE)")
            arrow = "↑" if row["higher_is_better"] else "↓"
            lines.append(f"| {row['objective']} {arrow} | {row['method']} | {row['mean']:.{digits}f} ± "
                         f"{row['sem']:.{digits}f} | {row['diff']:+.{digits}f} ± {row['diff_sem']:.{digits}f} | "
                         f"{mark} |")
        return "\n".join(lines)


def holdout(model: nn.Module, data: tuple, methods: dict[str, Method | str], objectives: Any = None,
            reference: str | None = None, batch_size: int | str = 16, *, chunk: int | None = None) -> HoldoutTable:
    """Score ``methods`` (label -> method object, name or spec such as ``"lrp:composite=epsilon_plus"``; the
    first is the reference unless ``reference``) on the held-out
    ``data`` ``(x, y)`` or ``(x, y, mask)`` with every objective, all methods' metric inputs batched.

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
    return HoldoutTable(table, objectives, reference)
