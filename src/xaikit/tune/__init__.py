"""Choosing an explanation by measurement: search a method's settings, scored by the metrics.

``result = xk.tune.tune(model, (x, y), xk.tune.LRPSpace(model, groups=4, gamma=[0, 0.1, 0.25]), budget=2000)``
runs successive halving over the configurations (growing subsets of the tuning samples), scoring each by
the objectives (pixel-flipping by default) with every candidate's metric inputs batched through the model;
``result.composite`` is the winner, usable as ``xk.LRP(model, composite=result.composite)`` and written as JSON
by ``result.composite.to_json(path)``; ``xk.tune.holdout(...)`` compares it with presets on held-out samples.
Seed lecture: "there is no one best LRP rule" and "no one best criterion"; Pahde et al. 2023.
"""
from ..deprecation import renamed
from ..deprecation import renamed as _renamed
from .holdout import HoldoutResult, holdout
from .objectives import NOTES, Objective, make_objectives, score_candidates
from .result import Candidate, TuneResult, pareto_ranks
from .search import STRATEGIES, min_budget, tune
from .space import LRPSpace, MethodSpace, Space, depth_groups, parse_rule, weighted_layers

__all__ = ["tune", "min_budget", "holdout", "LRPSpace", "MethodSpace", "Space", "TuneResult",
           "HoldoutResult", "Candidate", "Objective", "make_objectives", "score_candidates", "pareto_ranks",
           "parse_rule", "depth_groups", "weighted_layers", "NOTES", "STRATEGIES"]

__getattr__ = _renamed(__name__, {"HoldoutTable": "HoldoutResult"}, globals())
