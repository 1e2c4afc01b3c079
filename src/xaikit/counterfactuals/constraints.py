"""What a counterfactual may change: immutable features, allowed ranges, directions and categories.

:class:`Constraints` is bound to the columns of a table (or to the elements of an image, with a value range) and
does two things to candidates ``(N, k, D)`` of inputs ``x`` ``(N, D)`` (flattened):

- :meth:`Constraints.project`: the nearest point that satisfies every constraint (immutable features back to
  ``x``, values clipped to their range and to their direction of change, categorical values snapped to the
  nearest allowed category);
- :meth:`Constraints.satisfied`: whether a candidate satisfies every constraint, checked once more on every
  returned counterfactual.
"""
from __future__ import annotations

from typing import Any

import torch

from ..columns import Columns
from ..settings import CheckedSettings

DIRECTIONS = {"increase": 1, "decrease": -1, "up": 1, "down": -1, "any": 0}


class Constraints(CheckedSettings):
    """Constraints on ``D`` flattened features (see the module docstring).

    Parameters
    ----------
    low, high : Tensor ``(D,)``
        The allowed range of every feature (the data's minimum and maximum by default, or the user's ranges).
    immutable : BoolTensor ``(D,)``
    direction : LongTensor ``(D,)``
        +1: may only increase, −1: may only decrease, 0: either.
    categories : dict feature index -> Tensor of allowed values
    """

    def __init__(self, low: torch.Tensor, high: torch.Tensor, immutable: torch.Tensor, direction: torch.Tensor,
                 categories: dict[int, torch.Tensor]) -> None:
        self.low, self.high, self.immutable, self.direction = low, high, immutable, direction
        self.categories = categories

    @classmethod
    def for_table(cls, columns: Columns, data: torch.Tensor, immutable: Any = None, ranges: Any = None,
                  directions: Any = None) -> "Constraints":
        """Constraints on the columns of a table; column names are checked (an unknown one raises an error
        naming the argument and the close names)."""
        d = columns.d
        low, high = data.min(0).values.double().clone(), data.max(0).values.double().clone()
        fixed = torch.zeros(d, dtype=torch.bool)
        fixed[columns.indices(immutable, "immutable")] = True
        if ranges is not None:
            if not isinstance(ranges, dict):
                raise TypeError(f"ranges must be a dict {{column: (low, high)}}, got {type(ranges).__name__}")
            for column, bounds in ranges.items():
                j = columns.index(column, "ranges")
                if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
                    raise ValueError(f"ranges[{column!r}] must be a pair (low, high) (None for no bound), got "
                                     f"{bounds!r}")
                lo, hi = bounds
                low[j] = -float("inf") if lo is None else float(lo)
                high[j] = float("inf") if hi is None else float(hi)
                if low[j] > high[j]:
                    raise ValueError(f"ranges[{column!r}]: low {lo} exceeds high {hi}")
        direction = torch.zeros(d, dtype=torch.long)
        if directions is not None:
            if not isinstance(directions, dict):
                raise TypeError(f"directions must be a dict {{column: 'increase' | 'decrease'}}, got "
                                f"{type(directions).__name__}")
            for column, way in directions.items():
                j = columns.index(column, "directions")
                if way not in DIRECTIONS:
                    raise ValueError(f"directions[{column!r}] must be one of {sorted(DIRECTIONS)}, got {way!r}")
                direction[j] = DIRECTIONS[way]
        categories = {j: columns.values(j) for j in columns.categories}
        return cls(low, high, fixed, direction, categories)

    @classmethod
    def for_elements(cls, d: int, low: float, high: float) -> "Constraints":
        """Every element in ``[low, high]`` (images), nothing immutable."""
        full = lambda value: torch.full((d,), float(value), dtype=torch.float64)  # noqa: E731
        return cls(full(low), full(high),
                   torch.zeros(d, dtype=torch.bool), torch.zeros(d, dtype=torch.long), {})

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample box ``(N, D)`` (low, high): the range, narrowed to ``x`` on one side by a direction and to
        ``x`` on both sides for an immutable feature. ``x`` outside its own range keeps its own value as a bound
        (a row is never made infeasible by itself)."""
        low = torch.minimum(self.low.to(x), x)
        high = torch.maximum(self.high.to(x), x)
        up, down = self.direction.to(x.device) > 0, self.direction.to(x.device) < 0
        low = torch.where(up, x, low)
        high = torch.where(down, x, high)
        fixed = self.immutable.to(x.device)
        return torch.where(fixed, x, low), torch.where(fixed, x, high)

    def project(self, candidates: torch.Tensor, x: torch.Tensor, snap: bool = True) -> torch.Tensor:
        """The candidates ``(N, k, D)`` moved into the box of their ``x`` ``(N, D)``; categorical features snapped
        to the nearest allowed value inside the box (``snap=False``: left continuous, for a relaxed search)."""
        low, high = self.bounds(x)
        out = torch.minimum(torch.maximum(candidates, low[:, None]), high[:, None])
        if snap:
            out = self.snap(out, x)
        return out

    def snap(self, candidates: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Categorical features to the nearest allowed category that also lies in the box."""
        if not self.categories:
            return candidates
        low, high = self.bounds(x)
        out = candidates.clone()
        for j, values in self.categories.items():
            values = values.to(candidates)
            ok = (values[None] >= low[:, j:j + 1] - 1e-9) & (values[None] <= high[:, j:j + 1] + 1e-9)  # (N, C)
            gap = (candidates[..., j:j + 1] - values).abs()  # (N, k, C)
            gap = torch.where(ok[:, None], gap, torch.full_like(gap, float("inf")))
            out[..., j] = values[gap.argmin(-1)]
        return out

    def satisfied(self, candidates: torch.Tensor, x: torch.Tensor, tolerance: float = 1e-9) -> torch.Tensor:
        """``(N, k)`` bool: every constraint holds (range, direction, immutable, category)."""
        low, high = self.bounds(x)
        ok = ((candidates >= low[:, None] - tolerance) & (candidates <= high[:, None] + tolerance)).all(-1)
        for j, values in self.categories.items():
            ok &= (candidates[..., j:j + 1] == values.to(candidates)).any(-1)
        return ok
