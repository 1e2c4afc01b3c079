"""Evaluation metrics for explanations, one module per family (seed lecture: "no one best criterion").

``metric = xk.metrics.PixelFlipping(pixels_per_step=224); scores = metric(model, x, y, explanation)`` returns
one score per sample; ``metric.higher_is_better`` gives the direction, ``metric.curve(...)`` the per-step
values where the metric has a curve. :func:`benchmark` runs methods × metrics into a :class:`BenchmarkResult`.
"""
from ..deprecation import renamed as _renamed
from . import axiomatic, complexity, faithfulness, localisation, randomisation, robustness
from .axiomatic import *  # noqa: F401,F403
from .base import METRICS, Metric, MetricResult, curve_metrics, get_metric
from .base import register as register_metric
from .benchmark import BenchmarkResult, benchmark
from .complexity import *  # noqa: F401,F403
from .data_attribution import (DATA_ATTRIBUTION_METRICS, Brittleness, LinearDatamodelingScore, detection_auc,
                               register_data_attribution_metric)
from .faithfulness import *  # noqa: F401,F403
from .localisation import *  # noqa: F401,F403
from .randomisation import *  # noqa: F401,F403
from .robustness import *  # noqa: F401,F403
from . import counterfactual  # noqa: E402  (issue 25: counterfactual quality)
from .counterfactual import *  # noqa: F401,F403,E402

__all__ = [
    "Metric", "MetricResult", "METRICS", "get_metric", "register_metric", "curve_metrics", "benchmark",
    "BenchmarkResult",
    *faithfulness.__all__, *robustness.__all__, *localisation.__all__, *complexity.__all__,
    *randomisation.__all__, *axiomatic.__all__,
    "LinearDatamodelingScore", "Brittleness", "detection_auc", "DATA_ATTRIBUTION_METRICS",
    "register_data_attribution_metric",
]
__all__ += counterfactual.__all__

__getattr__ = _renamed(__name__, {"BenchmarkTable": "BenchmarkResult"}, globals())
