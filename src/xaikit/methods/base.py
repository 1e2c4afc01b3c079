"""The calling convention shared by every attribution method, and the registry of method names.

``method = Name(model, **settings)`` checks the settings (unknown ones are rejected with the list of valid
ones); ``method(x, target=..., forward_args=(), forward_kwargs={})`` checks the input, warns on a model in
training mode (and explains it in eval semantics, see :func:`~xaikit.errors.eval_semantics`), runs the method and returns an :class:`~xaikit.explanation.Explanation`.
"""
from __future__ import annotations

import contextlib
import re
import time
import warnings
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..errors import check_input, check_model, eval_semantics, unknown_name
from ..explanation import Explanation
from ..propagation.engine import differentiable_pass
from ..settings import checked_init
from ..targets import TargetSpec, check_target
from .tokens_ids import explain_in_embedding_space

#: snake_case name -> method class, filled by subclassing :class:`Method`
METHODS: dict[str, type["Method"]] = {}


def snake_case(name: str) -> str:
    """``IntegratedGradients`` -> ``integrated_gradients``; ``LRP`` -> ``lrp``; ``GradCAMPlusPlus`` -> ..."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


#: wraps a constructor so that unknown settings are refused with the close names (see :mod:`xaikit.settings`)
_checked_init = checked_init


class Method:
    """Base class of attribution methods.

    Subclasses implement :meth:`explain` and set ``allow_integer_input = True`` when they accept token ids.
    ``needs_module`` says why the method needs a ``torch.nn.Module``; the forward-only methods set it to
    ``None`` and accept any callable ``x -> tensor of scores``. Every public subclass is registered under its
    snake_case name for :func:`explain` and the CLI.
    """

    allow_integer_input: ClassVar[bool] = False
    #: supports ``create_graph=True`` (training mode: the explanation is differentiable, for losses on it)
    differentiable: ClassVar[bool] = False
    #: how the method reads token ids when it does not take them itself: "embedding" (it runs on the input
    #: embedding's vectors, see :mod:`xaikit.methods.tokens_ids`) or ``None`` (it does not apply to ids)
    token_mode: ClassVar[str | None] = None
    #: embedding-space attributions become one value per token by their "sum" or "norm" over the embedding
    token_reduction: ClassVar[str] = "sum"
    #: False for maps that are not signed relevances about zero (RISE's expected scores): figures stretch them
    #: from their minimum to their maximum on a sequential colour map
    signed_map: ClassVar[bool] = True
    needs_module: ClassVar[str | None] = "it uses the model's gradients or layers"

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], torch.Tensor]) -> None:
        check_model(model, f"the model of {type(self).__name__}", self.needs_module)
        self.model = model

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_init(cls.__dict__["__init__"])
        if not cls.__name__.startswith("_"):
            METHODS[snake_case(cls.__name__)] = cls

    @property
    def name(self) -> str:
        """The display name used in ``Explanation.method``."""
        return type(self).__name__

    def __call__(
        self,
        x: torch.Tensor,
        target: TargetSpec = None,
        *,
        forward_args: Sequence[Any] = (),
        forward_kwargs: dict[str, Any] | None = None,
        create_graph: bool = False,
    ) -> Explanation:
        """Explain ``model(x, *forward_args, **forward_kwargs)`` for ``target``; the attribution is for ``x``.

        ``create_graph=True`` (training mode, an explicit opt-in for methods with ``differentiable = True``):
        the attribution keeps its autograd graph, so a loss on it has exact gradients w.r.t. the parameters
        (and ``x``'s history); the parameters' ``.grad`` are not touched. The model is still explained in eval
        semantics (no warning: the caller asked for it). See :mod:`xaikit.propagation.training`.
        """
        in_embedding_space = self.token_mode == "embedding" and _token_ids(x)
        check_input(x, "x", self.model, allow_int=self.allow_integer_input or in_embedding_space)
        if not isinstance(forward_args, (tuple, list)):
            raise TypeError(f"forward_args must be a tuple of extra positional inputs, got {type(forward_args).__name__}")
        if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
            raise TypeError(f"forward_kwargs must be a dict of keyword inputs, got {type(forward_kwargs).__name__}")
        check_target(target, x.shape[0])
        began = time.perf_counter()
        with _training_mode(self, create_graph), eval_semantics(self.model):
            if in_embedding_space:
                expl = explain_in_embedding_space(self, x, target, tuple(forward_args), dict(forward_kwargs or {}))
            else:
                expl = self.explain(x, target, tuple(forward_args), dict(forward_kwargs or {}))
        expl.info.setdefault("time_s", time.perf_counter() - began)
        return expl

    def explain(
        self, x: torch.Tensor, target: TargetSpec, forward_args: tuple, forward_kwargs: dict[str, Any]
    ) -> Explanation:
        """Compute the explanation (inputs already validated)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}({type(self.model).__name__})"


@contextlib.contextmanager
def _training_mode(method: Method, create_graph: Any):
    """The ``create_graph=True`` opt-in: a differentiable pass, without the train-mode warning."""
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True or False, got {create_graph!r}")
    if create_graph and not method.differentiable:
        valid = ", ".join(sorted(name for name, cls in METHODS.items() if cls.differentiable))
        raise ValueError(f"{method.name} does not support create_graph=True; methods that do: {valid}")
    if not create_graph:
        yield
        return
    with differentiable_pass(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "model is in training mode", UserWarning)
        yield


def _token_ids(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool


def get_method(name: str) -> type[Method]:
    """Look up a method class by snake_case or class name."""
    key = snake_case(name) if name not in METHODS else name
    if key not in METHODS:
        raise unknown_name("method", name, METHODS)
    return METHODS[key]


def explain(model: nn.Module, x: torch.Tensor, target: TargetSpec = None, method: "str | Method" = "gradient",
            forward_args: Sequence[Any] = (), forward_kwargs: dict[str, Any] | None = None,
            **settings: Any) -> Explanation:
    """Functional shortcut: ``explain(model, x, y, method="integrated_gradients", steps=64)``; ``method`` is a
    name, a spec (``"lrp:composite=epsilon_gamma_box"``) or a method object, as everywhere
    (:func:`~xaikit.methods.resolve.resolve_method`)."""
    from .resolve import resolve_method

    built = resolve_method(model, method, settings or None)
    return built(x, target, forward_args=forward_args, forward_kwargs=forward_kwargs)
