"""Tabular data: feature names in, a table of attributions out (plots in :mod:`xaikit.viz.tabular`)."""
from .table import FeatureTable, feature_table

__all__ = ["FeatureTable", "feature_table"]
