"""Methods × metrics on one data set: the score table (seed lecture: "no one best criterion").

``table = xk.metrics.benchmark(model, (x, y, mask), methods, metrics)`` explains the batch once per method,
evaluates every metric on it and returns a :class:`BenchmarkResult`: per-sample scores, mean ± standard error,
the direction of each metric (↑ higher is better, ↓ lower is better), the best method per metric and the
curves the metrics produced. Exports (:mod:`xaikit.results`): one row per (method, metric) cell in
``to_pandas()``, ``to_markdown()``, ``to_csv(path)`` and ``to_json(path)`` (which also holds ``to_dict()``: the
per-sample scores and curves); ``str(table)`` is the compact methods × metrics Markdown table.
On a whole data set (streamed in shards, resumable, in-process or on Ray), ``xk.run.benchmark(spec, data, out)``
gives the same table (see ``docs/run.md``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..progress import Progress
from ..data import Data
from ..deprecation import renamed
from ..methods.base import Method
from ..methods.resolve import parse_spec, resolve_method
from ..results import ResultExport
from .base import Metric, get_metric

__all__ = ["BenchmarkResult", "benchmark"]


@dataclass
class BenchmarkResult(ResultExport):
    """Scores of methods × metrics.

    Attributes
    ----------
    methods, metrics : list of str
        Row and column names, in order.
    scores : dict ``(method, metric) -> tensor (N,)``
        Per-sample scores (NaN where a metric is undefined for a sample, or where the cell failed).
    higher_is_better : dict ``metric -> bool``
    families : dict ``metric -> str``
        The metric's family (faithfulness, robustness, localisation, complexity, randomisation, axiomatic).
    curves : dict ``(method, metric) -> tensor (N, S)``
        The curves of the metrics that have one.
    info : dict ``(method, metric) -> dict``
        Extra per-cell results of the metric (e.g. curve positions), ``"time_s"`` and, for a failed cell,
        ``"error"``.
    timing : dict ``method -> float``
        Seconds the method took to explain the batch.
    """

    methods: list[str]
    metrics: list[str]
    scores: dict[tuple[str, str], torch.Tensor]
    higher_is_better: dict[str, bool]
    families: dict[str, str] = field(default_factory=dict)
    curves: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    info: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    # -- statistics ------------------------------------------------------------------------------------------
    def values(self, method: str, metric: str) -> torch.Tensor:
        """The defined (non-NaN) per-sample scores of a cell."""
        scores = self.scores[(method, metric)].double()
        return scores[~torch.isnan(scores)]

    def mean(self, method: str, metric: str) -> float:
        """Mean over the samples with a defined score (NaN if none)."""
        values = self.values(method, metric)
        return float(values.mean()) if values.numel() else math.nan

    def sem(self, method: str, metric: str) -> float:
        """Standard error of the mean, std (ddof=1) / √n (NaN with fewer than two defined scores)."""
        values = self.values(method, metric)
        return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan

    def count(self, method: str, metric: str) -> int:
        """Number of samples with a defined score."""
        return int(self.values(method, metric).numel())

    def best(self, metric: str) -> str | None:
        """The method with the best mean for ``metric`` (by its direction; the first of tied ones), ``None`` if no
        mean is defined."""
        tied = self.best_methods(metric)
        return tied[0] if tied else None

    def best_methods(self, metric: str) -> list[str]:
        """Every method whose mean for ``metric`` equals the best one (ties are all best, in every export)."""
        means = {m: self.mean(m, metric) for m in self.methods}
        means = {m: v for m, v in means.items() if not math.isnan(v)}
        if not means:
            return []
        top = (max if self.higher_is_better[metric] else min)(means.values())
        return [m for m, v in means.items() if v == top]

    def arrow(self, metric: str) -> str:
        """``"↑"`` if higher is better, else ``"↓"``."""
        return "↑" if self.higher_is_better[metric] else "↓"

    # -- export ----------------------------------------------------------------------------------------------
    def to_dict(self, samples: bool = True, curves: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: metrics (name, direction, family, best), cells (mean, sem, n, per-sample scores),
        curves, method timing."""
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        cells: dict[str, dict[str, Any]] = {}
        for method in self.methods:
            cells[method] = {}
            for metric in self.metrics:
                key = (method, metric)
                cell: dict[str, Any] = {"mean": clean(self.mean(method, metric)), "sem": clean(self.sem(method, metric)),
                                        "n": self.count(method, metric)}
                if samples:
                    cell["scores"] = [clean(float(v)) for v in self.scores[key].double().tolist()]
                if "error" in self.info.get(key, {}):
                    cell["error"] = self.info[key]["error"]
                if "time_s" in self.info.get(key, {}):
                    cell["time_s"] = self.info[key]["time_s"]
                cells[method][metric] = cell
        result: dict[str, Any] = {
            "methods": list(self.methods),
            "metrics": [{"name": m, "higher_is_better": self.higher_is_better[m], "family": self.families.get(m, ""),
                         "best": self.best(m), "best_all": self.best_methods(m)} for m in self.metrics],
            "cells": cells,
            "timing": dict(self.timing),
        }
        if curves:
            result["curves"] = {
                method: {metric: [[clean(float(v)) for v in row] for row in self.curves[(method, metric)].double().tolist()]
                         for metric in self.metrics if (method, metric) in self.curves}
                for method in self.methods
            }
        return result

    def _rows(self) -> list[dict[str, Any]]:
        """One row per cell: method, metric, family, higher_is_better, mean, sem, n, best."""
        rows = []
        for metric in self.metrics:
            best = self.best_methods(metric)
            for method in self.methods:
                rows.append({"method": method, "metric": metric, "family": self.families.get(metric, ""),
                             "higher_is_better": self.higher_is_better[metric], "mean": self.mean(method, metric),
                             "sem": self.sem(method, metric), "n": self.count(method, metric), "best": method in best})
        return rows

    def _markdown_cell(self, row: dict[str, Any], key: str, digits: int) -> str:
        if key == "metric":
            return f"{row['metric']} {self.arrow(row['metric'])}"
        text = super()._markdown_cell(row, key, digits)
        return f"**{text}**" if key == "mean" and row["best"] else text

    def _json_extra(self) -> dict[str, Any]:
        return self.to_dict()

    def matrix(self, digits: int = 3) -> str:
        """A compact Markdown table: one row per method, one column per metric (with its arrow), ``mean ± sem``,
        the best per metric in bold (also ``str(table)``)."""
        header = "| method | " + " | ".join(f"{m} {self.arrow(m)}" for m in self.metrics) + " |"
        lines = [header, "|" + "---|" * (len(self.metrics) + 1)]
        best = {m: self.best_methods(m) for m in self.metrics}
        for method in self.methods:
            cells = []
            for metric in self.metrics:
                mean, sem = self.mean(method, metric), self.sem(method, metric)
                if math.isnan(mean):
                    text = "n/a"
                else:
                    text = f"{mean:.{digits}g}" + ("" if math.isnan(sem) else f" ± {sem:.{max(1, digits - 1)}g}")
                cells.append(f"**{text}**" if method in best[metric] else text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.matrix()

    def _repr_markdown_(self) -> str:  # notebooks
        return self.matrix()

    def __repr__(self) -> str:
        return f"BenchmarkResult(methods={self.methods}, metrics={self.metrics})"


def _named(items: Mapping[str, Any] | Sequence[Any], kind: type, what: str,
           build: Callable[[str], Any]) -> dict[str, Any]:
    """Items by display name; a name string stands for the item ``build(name)`` (defaults of that class)."""
    if isinstance(items, Mapping):
        named = {key: build(item) if isinstance(item, str) else item for key, item in items.items()}
    elif isinstance(items, (list, tuple)):
        named = {}
        for item in items:
            item = build(item) if isinstance(item, str) else item
            base = item.name if isinstance(item, kind) else type(item).__name__
            name, k = base, 2
            while name in named:
                name, k = f"{base} #{k}", k + 1
            named[name] = item
    else:
        raise TypeError(f"{what} must be a dict name -> {kind.__name__} or a list of them, got {type(items).__name__}")
    for name, item in named.items():
        if not isinstance(item, kind):
            raise TypeError(f"{what}[{name!r}] must be an xk.{kind.__name__} or its name, got {type(item).__name__}")
    if not named:
        raise ValueError(f"{what} is empty")
    return named


def _metric_from_spec(text: str) -> Metric:
    """The metric of a name or ``name:key=value`` spec (read as the CLI reads it)."""
    name, settings = parse_spec(text)
    return get_metric(name)(**settings)


def _targets_and_data(data: Any) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
    """``(x, target, mask)``: a tuple's ``y`` is the target as given (``None``, an int, per-sample labels, a
    callable ...); other forms of :class:`xaikit.data.Data` are read into memory and must give labels."""
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, _, mask = Data((data[0], None, *data[2:]), batch_size=None, name="data").tensors()
        return x, data[1], mask
    x, y, mask = Data(data, batch_size=None, name="data").tensors()
    if y is None:
        raise TypeError("data gives no targets: pass a tuple (x, y) or (x, y, mask) (y=None: the predicted class), "
                        "or a data set with labels")
    return x, y, mask


def benchmark(model: nn.Module, data: Any, methods: Mapping[str, Method] | Sequence[Method],
              metrics: Mapping[str, Metric] | Sequence[Metric], *, forward_args: Sequence[Any] = (),
              forward_kwargs: dict[str, Any] | None = None, on_error: str = "raise",
              progress: bool = False) -> BenchmarkResult:
    """Evaluate every method with every metric on one batch.

    Parameters
    ----------
    model : nn.Module
    data : tuple, or any form of :class:`xaikit.data.Data` with labels
        ``(x, y)`` or ``(x, y, mask)``; ``y`` is the target (``None``: the predicted class), ``mask`` the
        ground truth for localisation metrics. A Dataset, DataLoader, folder or table is read into memory (one
        batch), its labels the targets.
    methods : dict name -> Method, or list of Methods (named by ``method.name``); a method name (``"lrp"``) or
        spec (``"lrp:composite=epsilon_gamma_box"``) stands for that method built on ``model``
        (:func:`~xaikit.methods.resolve.resolve_method`)
    metrics : dict name -> Metric, or list of Metrics (named by class name); a metric name
        (``"pixel_flipping"``) or spec (``"pixel_flipping:baseline=blur"``) stands for that metric
    on_error : "raise" or "record"
        ``"record"`` keeps going when a cell fails: its scores are NaN and ``info[cell]["error"]`` says why.
    progress : bool
        Show a progress bar over the cells.

    Each method explains the batch once; metrics that re-explain (robustness, randomisation) get the method.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    x, y, mask = _targets_and_data(data)
    methods = _named(methods, Method, "methods", lambda spec: resolve_method(model, spec))
    metrics = _named(metrics, Metric, "metrics", _metric_from_spec)
    needing = [name for name, metric in metrics.items() if metric.needs_mask]
    if needing and mask is None:
        raise ValueError(f"metric(s) {', '.join(needing)} compare with a ground-truth mask: pass data=(x, y, mask)")
    table = BenchmarkResult(list(methods), list(metrics), {},
                            {m: bool(metric.higher_is_better) for m, metric in metrics.items()},
                            {m: metric.family for m, metric in metrics.items()})
    bar = Progress(len(methods) * len(metrics), "benchmark", "cell", enabled=progress)
    try:
        for method_name, method in methods.items():
            began = time.perf_counter()
            try:
                explanation = method(x, target=y, forward_args=forward_args, forward_kwargs=forward_kwargs)
            except Exception as err:  # noqa: BLE001 - recorded for every cell of the method on request
                if on_error == "raise":
                    raise
                for metric_name in metrics:
                    table.scores[(method_name, metric_name)] = torch.full((x.shape[0],), float("nan"))
                    table.info[(method_name, metric_name)] = {"error": f"{method_name} failed: {type(err).__name__}: "
                                                                       f"{err}", "time_s": 0.0}
                bar.update(len(metrics))
                continue
            table.timing[method_name] = time.perf_counter() - began
            for metric_name, metric in metrics.items():
                key = (method_name, metric_name)
                bar.set_description(f"benchmark {method_name} / {metric_name}")
                began = time.perf_counter()
                try:
                    result = metric.evaluate(
                        model, x, y, method if metric.needs_method else explanation,
                        mask if metric.needs_mask else None, forward_args=forward_args, forward_kwargs=forward_kwargs)
                except Exception as err:  # noqa: BLE001 - recorded for the report on request
                    if on_error == "raise":
                        raise
                    table.scores[key] = torch.full((x.shape[0],), float("nan"))
                    table.info[key] = {"error": f"{type(err).__name__}: {err}", "time_s": time.perf_counter() - began}
                else:
                    table.scores[key] = result.scores.detach().cpu()
                    if result.curve is not None:
                        table.curves[key] = result.curve.detach().cpu()
                    table.info[key] = {**result.info, "time_s": time.perf_counter() - began}
                bar.update(1)
    finally:
        bar.close()
    return table


__getattr__ = renamed(__name__, {"BenchmarkTable": "BenchmarkResult"}, globals())
