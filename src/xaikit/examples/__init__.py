"""Explanation by example: nearest neighbours with similarity heatmaps, influence of training samples
(TracIn), prototypes with an outlier score, and contrastive explanations (CEM pertinent positives/negatives).

Built on the engine (BiLRP for the similarity heatmaps) and importing downward only.
"""
from .index import FeatureIndex, Neighbours, SimilarityMaps
from .layers import LayerFeatures

__all__ = ["FeatureIndex", "Neighbours", "SimilarityMaps", "LayerFeatures"]
