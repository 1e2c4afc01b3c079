"""xaikit: explain, evaluate and improve PyTorch models.

``method = xk.Name(model, **settings); expl = method(x, target=y)`` for every attribution method;
``xk.explain(model, x, y, method="lrp", composite="epsilon_gamma_box")`` as a functional shortcut;
``xk.metrics`` for evaluating explanations.

``import xaikit`` itself is light: the public API below (the rooms, the methods, torch) is loaded on the first
use of any of its names (PEP 562), so that ``xaikit --help`` and tools that only read a run folder start fast.
"""
import importlib

from ._version import __version__  # noqa: F401

#: rooms imported on first use (``xk.viz.plot_bar``, ``xk.zoo.make_shapes``): matplotlib and the zoo's data are
#: not needed to explain, so loading the API does not load them
_ON_FIRST_USE = ("viz", "zoo")


_ROOMS = ("concepts", "counterfactuals", "examples", "generation", "improve", "interactions", "metrics", "regression",
          "rules", "run", "signals", "tabular", "tune", "unsupervised")
_loaded = False


def _load() -> None:
    """Import the public API into this module (once): what ``import xaikit`` did eagerly before."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the rooms' imports read attributes of this package while it loads
    try:
        globals().update(_api())
    except BaseException:
        _loaded = False  # a failed import (a missing dependency) is raised again on the next use
        raise


def _api() -> dict:
    api = {room: importlib.import_module(f".{room}", __name__) for room in _ROOMS}
    from .batching import set_memory_budget
    from .explanation import Explanation
    from .methods import __all__ as _methods
    from .methods.base import METHODS, Method, get_method
    from .methods.base import register as register_method
    from .methods.resolve import DEFAULT_METHODS, explain, parse_spec, resolve_method
    from .numpy_model import NumpyModel
    from .targets import Contrast, Value
    from .tokens import NextToken

    methods = importlib.import_module(".methods", __name__)
    api.update({name: getattr(methods, name) for name in _methods})
    api.update(set_memory_budget=set_memory_budget, Explanation=Explanation, METHODS=METHODS, Method=Method,
               get_method=get_method, register_method=register_method, DEFAULT_METHODS=DEFAULT_METHODS,
               explain=explain, parse_spec=parse_spec, resolve_method=resolve_method, NumpyModel=NumpyModel,
               Contrast=Contrast, Value=Value, NextToken=NextToken)
    api["__all__"] = [*_ROOMS, "Explanation", "Contrast", "Value", "NextToken", "Method", "METHODS", "explain",
                      "get_method",
                      "register_method", "resolve_method", "parse_spec", "DEFAULT_METHODS", "set_memory_budget",
                      "NumpyModel", *_methods]
    return api


def __getattr__(name: str):
    """The public API, loaded on first use; ``xk.viz`` and ``xk.zoo`` on their own first use (PEP 562)."""
    if name in _ON_FIRST_USE or name in _ROOMS:
        module = importlib.import_module(f".{name}", __name__)
        if name in _ROOMS:
            _load()
        return module
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    _load()
    return sorted(set(globals()) | set(_ON_FIRST_USE))
