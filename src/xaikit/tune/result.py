"""What a search returns: every tried configuration with mean ± standard error, the winner, the Pareto
front; exports (pandas, Markdown, CSV, JSON: :mod:`xaikit.results`), the winner as a composite (JSON and code),
and a plot."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from ..methods.base import Method
from ..propagation.composites import Composite
from ..propagation.rules import rule_to_dict
from ..results import ResultExport
from .objectives import Objective
from .space import LRPSpace, Space


@dataclass
class Candidate:
    """One tried configuration: its key, space and settings; how far it got (rung, samples scored)."""

    key: str
    space: str
    config: dict[str, Any]
    rung: int = -1
    samples: int = 0
    mean: dict[str, float] = field(default_factory=dict)
    sem: dict[str, float] = field(default_factory=dict)
    undefined: dict[str, int] = field(default_factory=dict)
    pareto: bool = False


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and standard error of the finite values, and the count of undefined (NaN) ones."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return math.nan, math.nan, int(array.size)
    sem = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
    return float(finite.mean()), sem, int(array.size - finite.size)


def pareto_ranks(costs: np.ndarray, levels: int | None = None) -> np.ndarray:
    """Non-dominated sorting (Deb et al. 2002): rank 0 for the Pareto front of ``costs`` ``(K, M)`` (lower is
    better in every column), rank 1 for the front of the rest, ... With ``levels``, only the first ``levels``
    fronts are peeled off; the rest get rank ``levels``. One column: the dense rank of the values."""
    k = costs.shape[0]
    if costs.shape[1] == 1:
        return np.unique(costs[:, 0], return_inverse=True)[1].reshape(k)
    ranks = np.full(k, -1)
    remaining = np.arange(k)
    level = 0
    while remaining.size and (levels is None or level < levels):
        sub = costs[remaining]
        dominated = ((sub[None, :, :] <= sub[:, None, :]).all(2) & (sub[None, :, :] < sub[:, None, :]).any(2)).any(1)
        ranks[remaining[~dominated]] = level
        remaining = remaining[dominated]
        level += 1
    ranks[remaining] = level
    return ranks


def summarise(runner, winner: Candidate, spaces: list[Space], objectives: list[Objective], strategy: str,
              total: int, pool: int, order) -> "TuneResult":
    """Means ± standard errors of every candidate on the samples it was scored on; the Pareto front among
    the candidates scored on the whole pool."""
    candidates = sorted((c for c in runner.candidates.values() if c.samples), key=lambda c: (-c.samples, c.key))
    for c in candidates:
        samples = [int(s) for s in order[:c.samples]]
        for o in objectives:
            c.mean[o.name], c.sem[o.name], c.undefined[o.name] = mean_sem(runner.store.values(c.key, o.name, samples))
    full = [c for c in candidates if c.samples == pool]
    if full:
        costs = runner.means(full, pool)
        for c, rank in zip(full, pareto_ranks(costs, levels=1)):
            c.pareto = bool(rank == 0)
        primary = dict(zip((c.key for c in full), costs[:, 0]))
        full.sort(key=lambda c: (not c.pareto, primary[c.key], c.key))
    rest = [c for c in candidates if c.samples < pool]
    return TuneResult({s.name: s for s in spaces}, objectives, full + rest, winner, strategy, total, pool,
                      len(runner.used), runner.computed)


@dataclass
class TuneResult(ResultExport):
    """The outcome of :func:`~xaikit.tune.tune`.

    Attributes
    ----------
    candidates : list of Candidate
        Every tried configuration: first those scored on the whole pool (Pareto front first, then by the
        primary objective), then the ones dropped at earlier rungs.
    winner : Candidate
        The best on the primary objective among the configurations scored on the whole pool.
    evaluations : int
        Metric evaluations the search used (configuration × sample); ``computed`` of them were computed in
        this call, the others read back from the results file.
    space_size : int
        Configurations in the search space (what a grid would score).
    """

    spaces: dict[str, Space]
    objectives: list[Objective]
    candidates: list[Candidate]
    winner: Candidate
    strategy: str
    space_size: int
    pool: int
    evaluations: int
    computed: int

    @property
    def pareto(self) -> list[Candidate]:
        """The configurations on the Pareto front (of the whole-pool ones)."""
        return [c for c in self.candidates if c.pareto]

    def method(self, model: nn.Module, candidate: Candidate | None = None) -> Method:
        """The winner's (or ``candidate``'s) method on ``model``."""
        c = candidate or self.winner
        return self.spaces[c.space].build(model, c.config)

    @property
    def composite(self) -> Composite:
        """The winner's composite (the winner must be an LRP configuration)."""
        space = self.spaces[self.winner.space]
        if not isinstance(space, LRPSpace):
            raise TypeError(f"the winner is a {type(space).__name__} configuration, not an LRP composite; "
                            "use result.method(model)")
        return space.composite(self.winner.config)

    # -- exports ---------------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per tried configuration (the rows of every export)."""
        rows = []
        for c in self.candidates:
            row: dict[str, Any] = {"key": c.key, "space": c.space, "samples": c.samples, "rung": c.rung,
                                   "pareto": c.pareto, "winner": c is self.winner}
            for o in self.objectives:
                row[f"{o.name} mean"], row[f"{o.name} sem"] = c.mean[o.name], c.sem[o.name]
                row[f"{o.name} undefined"] = c.undefined[o.name]
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
        out = {
            "strategy": self.strategy, "space_size": self.space_size, "pool": self.pool,
            "evaluations": self.evaluations, "grid_evaluations": self.space_size * self.pool,
            "winner": {"key": self.winner.key, "space": self.winner.space, "config": self.winner.config},
            "objectives": [{"name": o.name, "metric": repr(o.metric), "higher_is_better": o.higher_is_better,
                            "note": o.note} for o in self.objectives],
            "candidates": [{k: clean(v) for k, v in row.items()} for row in self.rows()],
        }
        if isinstance(self.spaces[self.winner.space], LRPSpace):
            out["composite"] = self.composite.to_dict()
        return out

    def _rows(self) -> list[dict[str, Any]]:
        return self.rows()

    def _markdown_cell(self, row: dict[str, Any], key: str, digits: int) -> str:
        if key == "key":
            return f"`{row['key']}`" + (" **(winner)**" if row["winner"] else "")
        return super()._markdown_cell(row, key, digits)

    def _markdown_notes(self) -> tuple[str, str]:
        notes = [f"- {o.name} ({'higher' if o.higher_is_better else 'lower'} is better): {o.note}"
                 for o in self.objectives if o.note]
        summary = (f"{self.strategy}: {len(self.candidates)} configurations tried of {self.space_size}, "
                   f"{self.evaluations} metric evaluations (a grid on the {self.pool} tuning samples: "
                   f"{self.space_size * self.pool})")
        return summary, "\n".join(["Known unreliability of the objectives:", *notes])

    def _json_extra(self) -> dict[str, Any]:
        extra = self.to_dict()
        del extra["candidates"]  # the rows
        return extra

    def code(self) -> str:
        """Python code that rebuilds the winner (a composite for LRP, the method call otherwise)."""
        space = self.spaces[self.winner.space]
        if not isinstance(space, LRPSpace):
            settings = {**space.fixed, **self.winner.config}
            args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
            return f"import xaikit as xk\n\nmethod = xk.get_method({space.method!r})(model, {args})\n"
        c = self.composite
        by_name = "".join(f"\n        ({p!r}, {_rule_code(r)})," for p, r in c.by_name)
        first = "None" if c.first is None else _rule_code(c.first)
        return ("import xaikit as xk\nfrom xaikit.propagation import rules as R\n"
                "from xaikit.propagation.composites import Composite\n\n"
                f"composite = Composite(\n    {c.name!r},\n    conv={_rule_code(c.conv)},\n"
                f"    dense={_rule_code(c.dense)},\n    first={first},\n    by_name=({by_name}\n    ),\n)\n"
                "lrp = xk.LRP(model, composite=composite)\n")

    def plot(self, path: str | Path | None = None):
        """Each tried configuration's primary score (mean ± SE) against the samples it was scored on, and
        with two or more objectives the first two against each other (the Pareto front marked)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        first = self.objectives[0]
        panels = 2 if len(self.objectives) > 1 else 1
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
        ax = axes[0, 0]
        rng = np.random.default_rng(0)
        for c in self.candidates:
            jitter = c.samples * (1 + 0.08 * rng.standard_normal())
            ax.errorbar(jitter, c.mean[first.name], yerr=np.nan_to_num(c.sem[first.name]), fmt="o", ms=3,
                        alpha=0.4, color="tab:blue", elinewidth=0.6)
        w = self.winner
        ax.errorbar(w.samples, w.mean[first.name], yerr=np.nan_to_num(w.sem[first.name]), fmt="*", ms=14,
                    color="tab:red", label=f"winner {w.key}")
        ax.set_xscale("log")
        counts = sorted({c.samples for c in self.candidates})
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.set_xlabel("tuning samples scored (rung)")
        ax.set_ylabel(f"{first.name} ({'higher' if first.higher_is_better else 'lower'} is better)")
        ax.set_title(f"{self.strategy}: {len(self.candidates)} configurations, {self.evaluations} evaluations",
                     fontsize=9)
        ax.legend(fontsize=6, loc="best")
        if panels == 2:
            ax = axes[0, 1]
            second = self.objectives[1]
            full = [c for c in self.candidates if c.samples == self.pool]
            ax.scatter([c.mean[first.name] for c in full], [c.mean[second.name] for c in full], s=10,
                       color="tab:blue", alpha=0.5, label="scored on the whole pool")
            front = sorted(self.pareto, key=lambda c: c.mean[first.name])
            ax.plot([c.mean[first.name] for c in front], [c.mean[second.name] for c in front], "o-",
                    color="tab:red", ms=5, label="Pareto front")
            ax.set_xlabel(first.name)
            ax.set_ylabel(second.name)
            ax.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig


def _rule_code(rule) -> str:
    spec = rule_to_dict(rule)
    name = spec.pop("rule")
    args = [f"{k}={v!r}" for k, v in spec.items()]
    return f"R.{name}({', '.join(args)})"
