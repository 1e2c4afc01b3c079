"""Explaining unsupervised models with NEON (neuralization-propagation; Kauffmann et al. 2020, 2022).

:class:`KMeans` turns a fitted k-means (scikit-learn's, or centroids on a network's features) into a network
of a linear layer and a min-pooling whose output is the cluster assignment's evidence, and explains it with
the LRP rules of those layers; :class:`OutlierScore` does the same for a kernel density's outlier score.
"""
from .kmeans import KMeans, NeuralizedKMeans
from .outliers import OutlierScore

__all__ = ["KMeans", "NeuralizedKMeans", "OutlierScore"]
