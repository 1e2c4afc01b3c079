"""A table of feature attributions with feature names and input values, for one row or many.

``feature_table(expl, names, x)`` reads the per-feature attributions of an explanation: the columns of a
tabular attribution ``(N, D)``, or ``info["feature_attribution"]`` ``(N, d)`` of the methods with interpretable
features (LIME and the Shapley family, e.g. with a grouping mask). ``table.ranking(sample)`` lists one
row's features by |attribution| as Markdown; ``table.summary()`` ranks the features by mean |attribution| over all
rows. The exports (``to_pandas``, ``to_markdown``, ``to_csv``, ``to_json``; :mod:`xaikit.results`) hold one row
per (sample, feature): ``sample, feature, value, attribution``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..deprecation import renamed, warn_renamed
from ..explanation import Explanation
from ..results import ResultExport


@dataclass
class FeatureTableResult(ResultExport):
    """Attributions ``(N, d)`` of d named features for N rows, with the rows' feature values (NaN: unknown)."""

    names: list[str]
    values: np.ndarray
    attributions: np.ndarray
    method: str = ""

    @property
    def n(self) -> int:
        return self.attributions.shape[0]

    def _check_sample(self, sample: int) -> None:
        if not isinstance(sample, int) or isinstance(sample, bool) or not -self.n <= sample < self.n:
            raise ValueError(f"sample must be a row index in 0..{self.n - 1}, got {sample!r}")

    def rows(self, sample: int = 0, top: int | None = None) -> list[tuple[str, float, float]]:
        """``(name, value, attribution)`` of one row, largest |attribution| first (``top``: the first ones)."""
        self._check_sample(sample)
        order = np.argsort(-np.abs(self.attributions[sample]), kind="stable")[:top]
        return [(self.names[j], float(self.values[sample, j]), float(self.attributions[sample, j])) for j in order]

    def summary(self, top: int | None = None) -> list[tuple[str, float, float]]:
        """``(name, mean |attribution|, mean attribution)`` over all rows, largest mean |attribution| first."""
        magnitude = np.abs(self.attributions).mean(0)
        order = np.argsort(-magnitude, kind="stable")[:top]
        return [(self.names[j], float(magnitude[j]), float(self.attributions[:, j].mean())) for j in order]

    def ranking(self, sample: int | None = 0, top: int | None = None) -> str:
        """A Markdown table of one row's features (``sample``), largest |attribution| first, or, with
        ``sample=None``, the summary over all rows (``top``: the first features only)."""
        if sample is None:
            lines = ["| feature | mean \\|attribution\\| | mean attribution |", "|---|---:|---:|"]
            lines += [f"| {name} | {mag:.4g} | {mean:+.4g} |" for name, mag, mean in self.summary(top)]
        else:
            lines = ["| feature | value | attribution |", "|---|---:|---:|"]
            lines += [f"| {name} | {value:.4g} | {attr:+.4g} |" for name, value, attr in self.rows(sample, top)]
        return "\n".join(lines)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per (sample, feature): ``sample, feature, value, attribution`` (value NaN: unknown)."""
        return [{"sample": i, "feature": name, "value": float(self.values[i, j]),
                 "attribution": float(self.attributions[i, j])}
                for i in range(self.n) for j, name in enumerate(self.names)]

    def to_markdown(self, digits: int = 4, limit: int | None = None, **old: Any) -> str:  # type: ignore[override]
        """The rows as Markdown (see :meth:`xaikit.results.ResultExport.to_markdown`).

        ``to_markdown(sample=..., top=...)`` (before 0.2) is deprecated: use :meth:`ranking`."""
        if not old:
            return super().to_markdown(digits, limit)
        unknown = sorted(set(old) - {"sample", "top"})
        if unknown:
            raise TypeError(f"to_markdown() got unexpected keyword(s) {', '.join(unknown)}; "
                            "it takes digits and limit")
        warn_renamed("FeatureTableResult.to_markdown(sample, top=...)", "FeatureTableResult.ranking(sample, top)")
        return self.ranking(old.get("sample", digits if digits != 4 else 0), old.get("top"))

    def __str__(self) -> str:
        return self.ranking(0 if self.n == 1 else None)


def _numpy(a: Any) -> np.ndarray:
    return a.detach().to("cpu", torch.float64).numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)


def feature_table(explanation: Explanation, feature_names: Sequence[str],
                  x: torch.Tensor | None = None) -> FeatureTableResult:
    """The named feature attributions of ``explanation`` (see the module docstring).

    Parameters
    ----------
    explanation : Explanation
        Of a tabular input ``(N, D)`` (any method), or of a method with interpretable features.
    feature_names : sequence of str
        One name per column (or per interpretable feature).
    x : tensor (N, D), optional
        The explained rows, for the value column and the colours of the summary plot.
    """
    if not isinstance(explanation, Explanation):
        raise TypeError(f"explanation must be an xk.Explanation, got {type(explanation).__name__}")
    if isinstance(feature_names, str) or not all(isinstance(n, str) for n in feature_names):
        raise TypeError("feature_names must be a sequence of str, one per feature (e.g. data.feature_names)")
    names = list(feature_names)
    attribution = explanation.attribution
    grouped = explanation.info.get("feature_attribution")
    if attribution.ndim == 2 and attribution.shape[1] == len(names):
        values = _numpy(attribution)
    elif isinstance(grouped, torch.Tensor) and grouped.ndim == 2 and grouped.shape[1] == len(names):
        values = _numpy(grouped)
    else:
        have = f"{attribution.shape[1]} columns" if attribution.ndim == 2 else f"shape {tuple(attribution.shape)}"
        if isinstance(grouped, torch.Tensor):
            have += f" and {grouped.shape[-1]} interpretable features"
        raise ValueError(f"feature_names has {len(names)} names but the explanation has {have}; give one name per "
                         "column of a tabular input (N, D), or per interpretable feature")
    inputs = np.full(values.shape, np.nan)
    if x is not None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(values.shape):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be the explained rows, a tensor of shape {tuple(values.shape)}, got {got}")
        inputs = _numpy(x)
    return FeatureTableResult(names, inputs, values, explanation.method)


__getattr__ = renamed(__name__, {"FeatureTable": "FeatureTableResult"}, globals())
