"""Eval semantics and the training flag, in one place (foundation floor: imports nothing from xaikit).

- :func:`eval_semantics`: the body runs with every module of the model in eval mode; each module's own flag is
  restored after, also when the body raised. Every room that runs the user's model for an explanation uses it
  (directly, or through :func:`explains_in_eval` on a method of an object with a ``model``).
- :func:`kept_flags`: restore every module's flag after a body that changes them on purpose.
- :class:`FollowsModel`: a module wrapping the user's model has no training flag of its own; it reads the
  wrapped model's, so building a wrapper never writes a flag of the user's model.
- :func:`eager`: the module that a ``torch.compile`` wrapper compiles, run as it is by the explanation engine.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from typing import Any, Callable, Iterator

from torch import nn

__all__ = ["eval_semantics", "explains_in_eval", "kept_flags", "FollowsModel", "eager"]

#: the start of the warning of :func:`eval_semantics` (callers that opt in to training mode filter it)
TRAINING_MODE_WARNING = "model is in training mode"


def _flags(model: Any) -> list[tuple[nn.Module, bool]]:
    return [(module, module.training) for module in model.modules()] if isinstance(model, nn.Module) else []


def _restore(flags: list[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


@contextlib.contextmanager
def kept_flags(model: Any) -> Iterator[None]:
    """Every module's training flag as it was on entering, restored on leaving (also when the body raised)."""
    flags = _flags(model)
    try:
        yield
    finally:
        _restore(flags)


@contextlib.contextmanager
def eval_semantics(model: Any, warn: bool = True) -> Iterator[None]:
    """Run the body with every module of ``model`` in eval mode; each module's own flag is restored after.

    A model left in training mode would make an explanation random (dropout) and batch-dependent (BatchNorm
    batch statistics), and BatchNorm would update its running statistics with the method's perturbed inputs,
    changing the user's model. So the explanation is computed in eval semantics: the flags are set directly
    (no ``train()`` override of the user's runs), nothing is written to any buffer, and a warning says so
    (``warn=False``: no warning, for callers that opted in). Explanations inside a training step are an
    explicit opt-in of :mod:`xaikit.improve`. A ``model`` that is not an ``nn.Module`` (a function) is run as
    it is.
    """
    flags = _flags(model)
    if not any(training for _, training in flags):
        yield
        return
    if warn:
        warnings.warn(
            f"{TRAINING_MODE_WARNING}: the explanation is computed in eval mode (dropout off, BatchNorm running "
            "statistics, not updated); the model's training flags are restored after the call. Call model.eval() "
            "to silence this warning",
            UserWarning,
            stacklevel=4,
        )
    try:
        for module, _ in flags:
            module.training = False
        yield
    finally:
        _restore(flags)


def explains_in_eval(function: Callable) -> Callable:
    """Decorator of a method of an object with a ``model``: the call runs in :func:`eval_semantics`."""

    @functools.wraps(function)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        with eval_semantics(self.model):
            return function(self, *args, **kwargs)

    return wrapper


class FollowsModel:
    """Mixin for an ``nn.Module`` that wraps the user's model (``class W(FollowsModel, nn.Module)``): its
    ``training`` flag is the wrapped model's, read at each access, and setting it does nothing (``nn.Module``
    sets it in ``__init__``). Building the wrapper writes no flag of the user's model (``self.train(mode)`` in
    a constructor would set every sub-module's flag, undoing a user's mixed flags such as a frozen BatchNorm).

    ``wrapped`` names the attribute holding the wrapped model (default ``"model"``).
    """

    wrapped = "model"

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The wrapped model's mode (the wrapper has none of its own)."""
        inner = self.__dict__.get("_modules", {}).get(self.wrapped)
        return bool(inner.training) if inner is not None else False

    @training.setter
    def training(self, value: bool) -> None:
        pass


def eager(model: Any) -> Any:
    """The module that ``torch.compile(module)`` wraps (its ``OptimizedModule``'s ``_orig_mod``), else ``model``.

    The explanation engine sees every operation of one eager forward pass (a ``TorchFunctionMode``, see
    :mod:`xaikit.propagation.session`). Run through the compiled wrapper, dynamo would trace into the engine's
    own handlers and recompile them for each tensor they see; the same module run eagerly computes the same
    function, and its sub-modules keep their names (no ``_orig_mod.`` prefix) for name-based rules. Nothing
    is changed on either module. (A module compiled in place with ``module.compile()``, or a compiled
    sub-module, is not unwrapped.)
    """
    frames = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled
    wrapper = getattr(frames, "OptimizedModule", None)
    inner = getattr(model, "_orig_mod", None)
    while wrapper is not None and isinstance(model, wrapper) and isinstance(inner, nn.Module):
        model, inner = inner, getattr(inner, "_orig_mod", None)
    return model
