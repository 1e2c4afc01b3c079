"""The search: successive halving on growing subsets of the tuning samples, then local refinement.

Successive halving (Jamieson & Talwalkar 2016; Karnin et al. 2013): score many configurations on a few
samples, keep the best ``1/eta``, score those on ``eta`` times more samples (the scores of the first samples
are kept, only the new samples are computed), until the whole tuning pool; the survivors of one rung are
compared on the very same samples (paired). Then local refinement: the neighbours of the incumbent (one
parameter moved to an adjacent value) go through successive halving against it, as long as that improves
the incumbent and the budget lasts. ``strategy="grid"`` scores every configuration on every sample (the
exhaustive reference of Pahde et al. 2023).

Cost is counted in *metric evaluations*: one configuration scored on one sample (by every objective).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..progress import Progress
from ..batching import batch_size_for, check_batch_size
from ..data import Data
from ..deprecation import warn_renamed
from ..errors import check_input, check_positive
from ..fingerprint import fingerprint as hash_of
from ..modes import eval_semantics
from .objectives import Objective, make_objectives, score_candidates
from .result import Candidate, TuneResult, pareto_ranks, summarise
from .space import Space, check_spaces
from .store import Store

STRATEGIES = ("halving", "grid")


def _check_data(model: nn.Module, data: Any, name: str = "data"):
    """``(x, y, mask)`` of ``data`` in any form of :class:`xaikit.data.Data` (``(x, y)``, ``(x, y, mask)``, a
    Dataset, a DataLoader, a folder ...); no labels or ``y=None``: the predicted classes, fixed once."""
    x, y, mask = Data(data, batch_size=None, name=name).tensors()
    check_input(x, f"{name} inputs (x)", model)
    if y is None:  # the predicted classes, fixed once for every candidate
        with torch.no_grad(), eval_semantics(model):  # no dropout, no BatchNorm statistics updated
            y = torch.cat([model(x[i: i + 256]).argmax(1) for i in range(0, x.shape[0], 256)])
    y = torch.as_tensor(y, device=x.device)
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError(f"{name} labels (y) must hold one integer class per sample ({x.shape[0]}), got shape "
                         f"{tuple(y.shape)} dtype {y.dtype}; pass None for the predicted classes")
    return x, y, mask


class _Runner:
    """Scores configurations on samples of the pool, through the store, counting the evaluations."""

    def __init__(self, model, spaces, objectives, x, y, mask, store: Store, order: np.ndarray, chunk: int,
                 bar) -> None:
        self.model, self.spaces, self.objectives = model, {s.name: s for s in spaces}, objectives
        self.x, self.y, self.mask, self.store, self.order, self.chunk, self.bar = x, y, mask, store, order, chunk, bar
        self.used: set[tuple[str, int]] = set()
        self.computed = 0
        self.candidates: dict[str, Candidate] = {}
        self.names = [o.name for o in objectives]

    def candidate(self, space: Space, config: dict) -> Candidate:
        key = space.key(config)
        if key not in self.candidates:
            self.candidates[key] = Candidate(key, space.name, dict(config))
        return self.candidates[key]

    def cost(self, candidates: Sequence[Candidate], count: int) -> int:
        """New evaluations that scoring ``candidates`` on the first ``count`` samples would add."""
        samples = self.order[:count]
        return sum((c.key, int(s)) not in self.used for c in candidates for s in samples)

    def run(self, candidates: Sequence[Candidate], count: int, rung: int) -> None:
        """Score ``candidates`` on the first ``count`` samples of the pool (cached scores are reused)."""
        samples = [int(s) for s in self.order[:count]]
        todo = []
        for c in candidates:
            c.rung, c.samples = max(c.rung, rung), max(c.samples, count)
            new = sum((c.key, s) not in self.used for s in samples)
            self.used.update((c.key, s) for s in samples)
            missing = self.store.missing(c.key, samples, self.names)
            if missing:
                todo.append((c, missing))
            if self.bar is not None:
                self.bar.update(new)
        # candidates missing the same samples are scored together, ``chunk`` at a time
        groups: dict[tuple[int, ...], list[Candidate]] = {}
        for c, missing in todo:
            groups.setdefault(tuple(missing), []).append(c)
        for missing, group in groups.items():
            rows = torch.tensor(missing, device=self.x.device)
            x, y = self.x.index_select(0, rows), self.y.index_select(0, rows)
            mask = None if self.mask is None else self.mask.index_select(0, rows.to(self.mask.device))
            for start in range(0, len(group), self.chunk):
                part = group[start: start + self.chunk]
                methods = [self.spaces[c.space].build(self.model, c.config) for c in part]
                scores = score_candidates(self.model, methods, x, y, mask, self.objectives)
                for i, c in enumerate(part):
                    self.store.add(c.key, missing, {o: scores[o][i].tolist() for o in self.names})
                self.computed += len(part) * len(missing)

    def means(self, candidates: Sequence[Candidate], count: int) -> np.ndarray:
        """Mean scores ``(K, objectives)`` on the first ``count`` samples, as costs (lower is better; a
        candidate with an undefined (NaN) score ranks last)."""
        samples = [int(s) for s in self.order[:count]]
        table = np.empty((len(candidates), len(self.objectives)))
        for i, c in enumerate(candidates):
            for j, o in enumerate(self.objectives):
                value = float(np.mean(self.store.values(c.key, o.name, samples)))
                table[i, j] = math.inf if math.isnan(value) else (-value if o.higher_is_better else value)
        # 6 significant digits: scores equal up to float32 rounding (which depends on how candidates were
        # chunked, so on an interrupted and resumed run) tie exactly, and ties break by key, reproducibly
        return np.vectorize(lambda v: float(f"{v:.6g}"))(table) if table.size else table


def _select(runner: _Runner, candidates: list[Candidate], count: int, keep: int) -> list[Candidate]:
    costs = runner.means(candidates, count)
    ranks = pareto_ranks(costs, levels=keep)  # `keep` fronts hold at least `keep` candidates
    order = sorted(range(len(candidates)), key=lambda i: (ranks[i], costs[i, 0], candidates[i].key))
    return [candidates[i] for i in order[:keep]]


def _rungs(pool: int, min_samples: int, eta: int) -> list[int]:
    rungs, count = [], min(min_samples, pool)
    while count < pool:
        rungs.append(count)
        count *= eta
    return rungs + [pool]


def _plan_cost(count0: int, rungs: list[int], eta: int, paid: int = 0) -> int:
    """Most new evaluations of successive halving from ``count0`` candidates, ``paid`` of which are already
    scored on the whole pool (charged nothing; the others may take every slot of a rung)."""
    cost, previous, alive = 0, 0, count0
    for r in rungs:
        cost += min(alive, count0 - paid) * (r - previous)
        previous, alive = r, max(1, math.ceil(alive / eta))
    return cost


def min_budget(pool: int, configurations: int = 2, *, min_samples: int = 4, eta: int = 3,
               refine: bool = True) -> int:
    """The smallest ``budget`` with which successive halving (:func:`tune`) draws ``configurations`` candidates
    for its first rung on a tuning pool of ``pool`` samples: below ``min_budget(pool, 2)`` it could score one
    configuration only and would crown it without comparing it to anything, which :func:`tune` refuses."""
    cost = _plan_cost(max(1, configurations), _rungs(pool, min_samples, eta), eta)
    return max(pool, math.ceil(cost / (0.7 if refine else 1.0)))


def _halving(runner: _Runner, candidates: list[Candidate], rungs: list[int], eta: int) -> Candidate:
    alive = list(candidates)
    for level, count in enumerate(rungs):
        runner.run(alive, count, level)
        if count == rungs[-1]:
            return _select(runner, alive, count, 1)[0]
        alive = _select(runner, alive, count, max(1, math.ceil(len(alive) / eta)))
    raise AssertionError("unreachable")


def fingerprint(model: nn.Module, spaces: Sequence[Space], objectives: Sequence[Objective], x: torch.Tensor,
                y: torch.Tensor, mask: torch.Tensor | None = None, **settings: Any) -> dict[str, Any]:
    """What identifies a search in its results file: the model's weights and buffers, the data (every value),
    spaces, objectives and the search settings (:func:`xaikit.fingerprint.fingerprint`)."""
    return {
        "model": hash_of(model), "spaces": [s.describe() for s in spaces],
        "objectives": [f"{o.name}={o.metric!r}" for o in objectives],
        "data": [list(x.shape), hash_of(x, y, mask)], **settings,
    }


def tune(model: nn.Module, data: Any, spaces: Space | Sequence[Space], objectives: Any = None, *,
         budget: int | None = None, strategy: str = "halving", eta: int = 3, min_samples: int = 4,
         refine: bool = True, seed: int = 0, results: str | None = None, batch_size: int | str = 16,
         progress: bool = False, chunk: int | None = None) -> TuneResult:
    """Choose a method's settings for ``model`` by the metrics, on the tuning samples ``data``.

    Parameters
    ----------
    model : nn.Module
        The model (in eval mode; never modified).
    data : tuple, Dataset, DataLoader, folder, table or tensor (any form of :class:`xaikit.data.Data`)
        The tuning pool, read into memory: ``(x, y)`` or ``(x, y, mask)``; no labels or ``y=None`` explains
        the predicted classes. Keep a separate held-out split for the final comparison (:func:`~xaikit.tune.holdout`).
    spaces : LRPSpace, MethodSpace or a list of them
    objectives : metric name(s), Metric object(s) or dict name -> either
        Default: ``"pixel_flipping"``. The first is the primary objective; with several, each rung keeps the
        best by Pareto rank (non-dominated sorting), ties broken by the primary objective.
    budget : int
        Most metric evaluations (one configuration on one sample) to spend; required for ``"halving"``.
    strategy : "halving" or "grid"
        Successive halving (+ refinement), or every configuration on every sample.
    eta : int
        Halving factor (≥ 2): each rung keeps ``1/eta`` of the configurations, with ``eta`` × more samples.
    min_samples : int
        Samples of the first rung.
    refine : bool
        Spend ~30 % of the budget on the neighbours of the incumbent.
    seed : int
        Seed of the sample order and of the configurations drawn for the first rung.
    results : str, optional
        A JSON-lines file the scores are appended to; an interrupted run given the same file resumes.
    batch_size : int or "auto"
        Candidates scored together (their metric inputs go through the model in one batch); ``"auto"``: as
        many as the memory budget holds explanations of the pool (:func:`xaikit.batching.batch_size_for`).
    chunk : int
        Deprecated name of ``batch_size``.
    progress : bool
        A progress bar over the metric evaluations.

    Returns
    -------
    TuneResult
        Every tried configuration with mean ± standard error per objective, the winner, the Pareto front.
    """
    spaces = check_spaces(spaces)
    objectives = make_objectives(objectives)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if budget is None and strategy == "halving":
        raise ValueError("budget is required for strategy='halving': the most metric evaluations to spend")
    if budget is not None:
        check_positive(budget, "budget", integer=True)
    check_positive(eta, "eta", integer=True)
    if eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta}")
    check_positive(min_samples, "min_samples", integer=True)
    if chunk is not None:
        warn_renamed("tune(chunk=...)", "tune(batch_size=...)", 3)
        batch_size = chunk
    check_batch_size(batch_size, "chunk" if chunk is not None else "batch_size")
    x, y, mask = _check_data(model, data)
    chunk = batch_size_for(batch_size, x)
    if any(o.metric.needs_mask for o in objectives) and mask is None:
        raise ValueError("a localisation objective needs ground-truth masks: pass data=(x, y, mask)")
    pool = x.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(pool)
    total = sum(s.size for s in spaces)
    settings = {"seed": seed, "strategy": strategy, "eta": eta, "min_samples": min_samples, "refine": refine,
                "budget": budget}
    store = Store(fingerprint(model, spaces, objectives, x, y, mask, **settings), results)
    if strategy == "grid":
        planned = total * pool if budget is None else min(budget, total * pool)
    else:
        planned = budget
    bar = Progress(planned, "tune", "eval", enabled=progress)
    runner = _Runner(model, spaces, objectives, x, y, mask, store, order, chunk, bar)
    try:
        if strategy == "grid":
            every = [runner.candidate(s, c) for s in spaces for c in s.grid()]
            if budget is not None and len(every) * pool > budget:
                raise ValueError(f"the grid needs {len(every) * pool} metric evaluations ({len(every)} "
                                 f"configurations × {pool} samples) but budget={budget}; raise it or use "
                                 "strategy='halving'")
            runner.run(every, pool, 0)
            winner = _select(runner, every, pool, 1)[0]
        else:
            winner = _search(runner, spaces, total, pool, budget, eta, min_samples, refine, rng)
    finally:
        bar.close()
    return summarise(runner, winner, spaces, objectives, strategy, total, pool, order)


def _search(runner: _Runner, spaces: list[Space], total: int, pool: int, budget: int, eta: int, min_samples: int,
            refine: bool, rng: np.random.Generator) -> Candidate:
    rungs = _rungs(pool, min_samples, eta)
    if pool > budget:
        raise ValueError(f"budget={budget} cannot score even one configuration on the {pool} tuning samples; "
                         f"give a budget of at least {pool} (better ≥ {20 * pool})")
    share = budget * (0.7 if refine else 1.0)
    count0 = 1
    while count0 < total and _plan_cost(count0 + 1, rungs, eta) <= share:
        count0 += 1
    if count0 < 2 <= total:  # one configuration drawn: it would win without being compared to anything
        few, many = (min_budget(pool, k, min_samples=rungs[0], eta=eta, refine=refine)
                     for k in (2, min(total, eta * eta)))
        raise ValueError(f"budget={budget} lets successive halving score 1 of the {total} configurations on "
                         f"{pool} samples, so it cannot compare candidates; give budget >= {few} (two "
                         f"configurations), better >= {many} ({min(total, eta * eta)}), or strategy='grid'")
    # the first rung's configurations, drawn from the union of the spaces in proportion to their sizes
    chosen = sorted(rng.choice(total, size=count0, replace=False)) if count0 < total else range(total)
    candidates, offset, index = [], 0, list(chosen)
    for space in spaces:
        local = [i - offset for i in index if offset <= i < offset + space.size]
        candidates += [runner.candidate(space, space.config(i)) for i in local]
        offset += space.size
    best = _halving(runner, candidates, rungs, eta)
    if not refine:
        return best
    # local refinement, hill-climbing from the best whole-pool configuration, then (while the budget lasts)
    # from the next best ones not yet climbed from
    climbed: set[str] = set()
    start: Candidate | None = best
    while start is not None:
        climbed.add(start.key)
        if not _climb(runner, spaces, start, rungs, eta, pool, budget, rng):
            break  # the budget is spent
        full = [c for c in runner.candidates.values() if c.samples == pool]
        start = next((c for c in _select(runner, full, pool, len(full)) if c.key not in climbed), None)
    full = [c for c in runner.candidates.values() if c.samples == pool]
    return _select(runner, full, pool, 1)[0]


def _climb(runner: _Runner, spaces: list[Space], best: Candidate, rungs: list[int], eta: int, pool: int,
           budget: int, rng: np.random.Generator) -> bool:
    """Move to the best neighbour (successive halving among the neighbours and the incumbent; the whole pool
    decides) while that improves. Returns False when the budget did not allow the next step."""
    while True:
        space = next(s for s in spaces if s.name == best.space)
        neighbours = [runner.candidate(space, c) for c in space.neighbours(best.config)]
        fresh = [c for c in neighbours if c.samples < pool]
        left = budget - len(runner.used)
        affordable = list(fresh)
        while affordable and _plan_cost(len(affordable) + 1, rungs, eta, paid=1) > left:
            affordable.pop(int(rng.integers(len(affordable))))
        if fresh and not affordable:
            return False
        scored = [c for c in neighbours if c.samples == pool]
        new = _halving(runner, [best, *affordable], rungs, eta) if affordable else best
        new = _select(runner, [best, new, *scored], pool, 1)[0]  # the whole pool decides
        if new is best:
            return True
        best = new
