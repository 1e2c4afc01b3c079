"""Concepts: what a network has learned and which of its units drive a prediction.

Every tool follows ``xk.concepts.Name(model, layer=..., **settings)(x_or_data, ...)`` and reads relevance
inside the network through the engine's recorder (:mod:`xaikit.propagation.record`):

- :class:`ConditionalHeatmaps`, :class:`Composition`, :class:`Hierarchy`: concept-conditional relevance (CRP).
- :class:`ReferenceSamples`: the top samples of every channel by activation and by relevance, over a data set.
- :class:`ChannelRelevance`, :class:`Ablation`: channel discovery and its validation by ablation.
- :class:`FeatureVisualisation`: activation maximisation with a decorrelated Fourier image.
- :class:`Embedding`: PCA / t-SNE / UMAP of pooled activations or concept-relevance vectors.
- :class:`TCAV`: TCAV scores of concepts given by examples, with the test against random concepts.
"""
from ..deprecation import renamed
from ..deprecation import renamed as _renamed
from .crp import Composition, ConditionalHeatmaps, ConditionalHeatmapsResult, Hierarchy, HierarchyResult
from .embedding import Embedding, EmbeddingResult
from .featureviz import FeatureVisualisation, FeatureVisualisationResult, FourierImage
from .references import ReferenceSamples, ReferenceSamplesResult
from .tcav import TCAV, TCAVResult
from .discovery import (Ablation, AblationResult, ChannelRelevance, ChannelRelevanceResult, ablated,
                        channel_scores)

__all__ = ["ConditionalHeatmaps", "Composition", "Hierarchy", "ConditionalHeatmapsResult", "HierarchyResult",
           "ChannelRelevance", "ChannelRelevanceResult", "Ablation", "AblationResult", "ablated", "channel_scores",
           "ReferenceSamples", "ReferenceSamplesResult",
           "FeatureVisualisation", "FourierImage", "FeatureVisualisationResult", "Embedding", "EmbeddingResult",
           "TCAV", "TCAVResult"]

#: old result names (kept for one release, with a DeprecationWarning)
__getattr__ = _renamed(__name__, {"ConceptHeatmaps": "ConditionalHeatmapsResult", "ConceptSplit": "HierarchyResult",
                                  "ChannelScores": "ChannelRelevanceResult", "AblationTable": "AblationResult",
                                  "References": "ReferenceSamplesResult",
                                  "Visualisation": "FeatureVisualisationResult"}, globals())
