"""The calling convention shared by every attribution method, and the registry of method names.

``method = Name(model, **settings)`` checks the settings (unknown ones are rejected with the list of valid
ones); ``method(x, target=..., forward_args=(), forward_kwargs={})`` checks the input, warns on a model in
training mode (and explains it in eval semantics, see :func:`~xaikit.modes.eval_semantics`), runs the method and returns an :class:`~xaikit.explanation.Explanation`.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..errors import check_input, check_model
from ..explanation import Explanation
from ..modes import eval_semantics
from ..propagation.state import differentiable_pass
from ..registry import Registry
from ..settings import checked_init
from ..targets import TargetSpec, check_target
from .machinery.tokens_ids import explain_in_embedding_space

#: wraps a constructor so that unknown settings are refused with the close names (see :mod:`xaikit.settings`)
_checked_init = checked_init


class Method:
    """Base class of attribution methods.

    Subclasses implement :meth:`explain` and set ``allow_integer_input = True`` when they accept token ids.
    ``needs_module`` says why the method needs a ``torch.nn.Module``; the forward-only methods set it to
    ``None`` and accept any callable ``x -> tensor of scores``. Subclassing does not register a method: a method
    is found by name (:func:`get_method`, :func:`explain`, the CLI, concepts, tune, run) once it is registered
    with :func:`register` (``xk.register_method``), which refuses a name another class holds.
    """

    allow_integer_input: ClassVar[bool] = False
    #: supports ``create_graph=True`` (training mode: the explanation is differentiable, for losses on it)
    differentiable: ClassVar[bool] = False
    #: how the method reads token ids when it does not take them itself: "embedding" (it runs on the input
    #: embedding's vectors, see :mod:`xaikit.methods.machinery.tokens_ids`) or ``None`` (it does not apply to ids)
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
        semantics (no warning: the caller asked for it). See :mod:`xaikit.propagation.handlers.training`.
        """
        in_embedding_space = self.token_mode == "embedding" and _token_ids(x)
        check_input(x, "x", self.model, allow_int=self.allow_integer_input or in_embedding_space)
        if not isinstance(forward_args, (tuple, list)):
            raise TypeError(f"forward_args must be a tuple of extra positional inputs, got {type(forward_args).__name__}")
        if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
            raise TypeError(f"forward_kwargs must be a dict of keyword inputs, got {type(forward_kwargs).__name__}")
        check_target(target, x.shape[0])
        began = time.perf_counter()
        # create_graph=True is the caller's opt-in to a training-time explanation: no train-mode warning
        with _training_mode(self, create_graph), eval_semantics(self.model, warn=not create_graph):
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
    """The ``create_graph=True`` opt-in: a differentiable pass (the caller runs it without the train-mode
    warning of :func:`~xaikit.modes.eval_semantics`)."""
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True or False, got {create_graph!r}")
    if create_graph and not method.differentiable:
        valid = ", ".join(sorted(REGISTRY.names(lambda cls: cls.differentiable)))
        raise ValueError(f"{method.name} does not support create_graph=True; methods that do: {valid}")
    if not create_graph:
        yield
        return
    with differentiable_pass():
        yield


def _token_ids(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool


#: the registry of methods by name (:class:`xaikit.registry.Registry`); the built-ins register themselves
REGISTRY: Registry[type[Method]] = Registry("method", Method, "xk.register_method")
#: registered name -> method class, a read-only live view (add a method with :func:`register`)
METHODS: Mapping[str, type[Method]] = REGISTRY.view


def register(cls: type[Method] | None = None, name: str | None = None) -> Any:
    """Register a :class:`Method` subclass under ``name``, so that it can be chosen by name everywhere.

    Use it as a function, ``xk.register_method(MyMethod)`` or ``xk.register_method(MyMethod, name="mine")``,
    or as a class decorator, ``@xk.register_method`` or ``@xk.register_method(name="mine")``. Once registered,
    :func:`get_method`, :func:`~xaikit.methods.resolve.explain`, the CLI's ``--methods``, the concept tools'
    ``method=``, ``tune.MethodSpace`` and ``run`` find the method by its name.

    Parameters
    ----------
    cls : type
        A subclass of :class:`Method`.
    name : str, optional
        Lower-case letters, digits and underscores (default: the class name in snake_case,
        ``MyMethod`` -> ``my_method``).

    Returns
    -------
    type
        ``cls`` itself (or, without ``cls``, a decorator that registers the class it decorates).

    Raises
    ------
    ValueError
        When another class already holds ``name`` (a built-in such as ``"lrp"`` is never replaced): choose
        another name with ``name=``. Registering the same class again, or a class redefined with the same
        module and qualified name (a re-run notebook cell), is not a collision.
    TypeError
        When ``cls`` is not a subclass of :class:`Method` or ``name`` is not a string.
    """
    return REGISTRY.register(cls, name)


def get_method(name: str) -> type[Method]:
    """Look up a registered method class by its registered name or its class name (``"lrp"``, ``"LRP"``)."""
    return REGISTRY.get(name)
