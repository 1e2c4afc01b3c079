"""Tabular data: feature names in, a table of attributions out (plots in :mod:`xaikit.viz.tabular`)."""
from ..deprecation import renamed
from ..deprecation import renamed as _renamed
from .table import FeatureTableResult, feature_table
from .treeshap import TreeSHAP

__all__ = ["FeatureTableResult", "feature_table", "TreeSHAP"]

#: old result names (kept for one release, with a DeprecationWarning)
__getattr__ = _renamed(__name__, {"FeatureTable": "FeatureTableResult"}, globals())
