"""Explaining regression models: the real value ``f_k(x)`` of an output, relative to a reference input.

:class:`Regression` explains ``f_k(x) - f_k(x_ref)`` with any registered method and reports the prediction and
the base value ``f_k(x_ref)`` (``expl.info["base_value"]``, shap's ``base_values``) with every explanation;
:class:`~xaikit.targets.Value` is the regression target the metrics read as a value (no softmax).
"""
from ..targets import Value
from .explainer import Regression

__all__ = ["Regression", "Value"]
