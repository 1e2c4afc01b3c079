"""xaikit: explain, evaluate and improve PyTorch models.

``method = xk.Name(model, **settings); expl = method(x, target=y)`` for every attribution method;
``xk.explain(model, x, y, method="lrp", composite="epsilon_gamma_box")`` as a functional shortcut;
``xk.metrics`` for evaluating explanations.
"""
import importlib

from . import concepts, examples, generation, improve, metrics, run, tabular, tune  # noqa: F401
from ._version import __version__  # noqa: F401
from .batching import set_memory_budget
from .explanation import Explanation
from .methods import *  # noqa: F401,F403
from .methods import __all__ as _methods
from .methods.base import METHODS, Method, get_method
from .methods.base import register as register_method
from .methods.resolve import DEFAULT_METHODS, explain, parse_spec, resolve_method
from .numpy_model import NumpyModel
from .targets import Contrast
from .tokens import NextToken

__all__ = ["metrics", "concepts", "examples", "generation", "improve", "run", "tabular", "tune", "Explanation", "Contrast",
           "NextToken", "Method", "METHODS", "explain", "get_method", "register_method", "resolve_method", "parse_spec",
           "DEFAULT_METHODS", "set_memory_budget", "NumpyModel", *_methods]

from . import counterfactuals, rules  # noqa: E402,F401  (issue 25: rules and counterfactuals)
__all__ += ["rules", "counterfactuals"]

#: rooms imported on first use (``xk.viz.plot_bar``, ``xk.zoo.make_shapes``): matplotlib and the zoo's data are
#: not needed to explain, so ``import xaikit`` does not load them
_ON_FIRST_USE = ("viz", "zoo")


def __getattr__(name: str):
    """``xk.viz`` and ``xk.zoo`` without importing them first (PEP 562)."""
    if name in _ON_FIRST_USE:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
