"""Interactions: Shapley interaction indices of features (SII, k-SII, STII, FSII), exact and at a budget."""
from .indices import INDICES
from .tool import ShapleyInteractions, ShapleyInteractionsResult

__all__ = ["INDICES", "ShapleyInteractions", "ShapleyInteractionsResult"]
from .graphs import GraphLRP, GraphRelevanceResult, RelevantWalksResult  # noqa: E402

__all__ += ["GraphLRP", "GraphRelevanceResult", "RelevantWalksResult"]
