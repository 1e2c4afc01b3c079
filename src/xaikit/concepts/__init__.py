"""Concepts: what a network has learned and which of its units drive a prediction.

Every tool follows ``xk.concepts.Name(model, layer=..., **settings)(x_or_data, ...)`` and reads relevance
inside the network through the engine's recorder (:mod:`xaikit.propagation.record`):

- :class:`ConditionalHeatmaps`, :class:`Composition`, :class:`Hierarchy`: concept-conditional relevance (CRP).
- :class:`ReferenceSamples`: the top samples of every channel by activation and by relevance, over a data set.
- :class:`ChannelRelevance`, :class:`Ablation`: channel discovery and its validation by ablation.
- :class:`FeatureVisualisation`: activation maximisation with a decorrelated Fourier image.
- :class:`Embedding`: PCA / t-SNE / UMAP of pooled activations or concept-relevance vectors.
"""
from .crp import Composition, ConceptHeatmaps, ConceptSplit, ConditionalHeatmaps, Hierarchy
from .embedding import Embedding, EmbeddingResult
from .featureviz import FeatureVisualisation, FourierImage, Visualisation
from .references import References, ReferenceSamples
from .discovery import Ablation, AblationTable, ChannelRelevance, ChannelScores, ablated, channel_scores

__all__ = ["ConditionalHeatmaps", "Composition", "Hierarchy", "ConceptHeatmaps", "ConceptSplit",
           "ChannelRelevance", "ChannelScores", "Ablation", "AblationTable", "ablated", "channel_scores",
           "ReferenceSamples", "References",
           "FeatureVisualisation", "FourierImage", "Visualisation", "Embedding", "EmbeddingResult"]
