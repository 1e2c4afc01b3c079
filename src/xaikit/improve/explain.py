"""Explanations that enter a loss: the methods of :mod:`xaikit.methods` called with ``create_graph=True``."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..deprecation import warn_renamed
from ..errors import check_choice, check_positive, unknown_name
from ..methods.base import METHODS, REGISTRY, Method, get_method
from ..methods.resolve import DEFAULT_METHODS, parse_spec, resolve_method
from ..settings import settings_of, unknown_setting
from ..targets import TargetSpec

#: the explainers of the old ``explainer=`` keyword (deprecated): "gradient", "input_x_gradient", "lrp"
EXPLAINERS = ("gradient", "input_x_gradient", "lrp")


def make_explainer(model: nn.Module, method: str | Method | None = None, method_settings: dict | None = None, *,
                   default: str = DEFAULT_METHODS["training"]) -> Method:
    """The method of a training-time explanation (:func:`~xaikit.methods.resolve.resolve_method`): a name or
    spec of a method that supports ``create_graph=True`` (LRP, Gradient, InputXGradient, ...), or such a
    method object built on ``model``; ``None``: ``default``."""
    if method_settings is not None and not isinstance(method_settings, dict):  # old positional composite
        method, method_settings = legacy_explainer(method, None, method_settings, "make_explainer", "gradient")
    explainer = resolve_method(model, method, method_settings, default=default)
    if not explainer.differentiable:
        raise _not_differentiable(explainer.name)
    return explainer


def _not_differentiable(label: str) -> ValueError:
    """The error for a method without ``create_graph=True`` in a loss, listing those that have it."""
    valid = ", ".join(sorted(REGISTRY.names(lambda cls: cls.differentiable)))
    return ValueError(f"method {label} does not support create_graph=True (an explanation inside a loss); use one "
                      f"of: {valid}")


def check_method(method: Any, method_settings: dict | None) -> None:
    """Check a method name or spec at construction (a loss builds it on the model at each call)."""
    if isinstance(method, str):
        name, spec = parse_spec(method)
        try:
            cls = get_method(name)
        except ValueError:
            raise unknown_name("method", name, METHODS) from None
        if not cls.differentiable:
            raise _not_differentiable(repr(method))
        names, takes_any = settings_of(cls)
        for key in {**spec, **(method_settings if isinstance(method_settings, dict) else {})}:
            if key not in names and not takes_any:  # refused now, not at the first training step
                raise unknown_setting(cls.__name__, key, names)
    elif method is not None and not isinstance(method, Method):
        raise TypeError(f"method must be a method name, a spec such as 'lrp:composite=epsilon_plus' or a method "
                        f"object, got {type(method).__name__}")
    if method_settings is not None and not isinstance(method_settings, dict):
        raise TypeError(f"method_settings must be a dict, got {type(method_settings).__name__}")


def legacy_explainer(method: Any, explainer: Any, composite: Any, owner: str,
                     old_default: str = "lrp", stacklevel: int = 4) -> tuple[Any, dict | None]:
    """``(method, method_settings)`` from the deprecated ``explainer=``/``composite=`` keywords, as they meant:
    ``explainer`` (default ``old_default``) with, for ``"lrp"``, the composite (default ``"epsilon_plus"``).
    A ``DeprecationWarning`` names the new form. Without them, ``(method, None)``."""
    if explainer is None and composite is None:
        return method, None
    if explainer is not None and method is not None:
        raise TypeError(f"{owner}: give method= only (explainer= is its deprecated name)")
    warn_renamed(f"{owner}(explainer=..., composite=...)",
                 "method='lrp:composite=NAME' (a method name, spec or object) and method_settings={...}",
                 stacklevel)
    explainer = explainer if explainer is not None else method if method is not None else old_default
    if isinstance(explainer, str):
        check_choice(explainer, "explainer", EXPLAINERS)
    if explainer == "lrp":
        return "lrp", {"composite": composite if composite is not None else "epsilon_plus"}
    return explainer, None


def from_legacy(method: Any, method_settings: Any, explainer: Any, composite: Any, owner: str,
                old_default: str, stacklevel: int = 5) -> tuple[Any, dict | None]:
    """``(method, method_settings)`` of a training tool, accepting the deprecated forms: the ``explainer=`` and
    ``composite=`` keywords, and a composite given by position where ``method_settings`` now stands."""
    if method_settings is not None and not isinstance(method_settings, dict) and composite is None:
        composite, method_settings = method_settings, None  # the old positional composite
    if explainer is None and composite is None:
        return method, method_settings
    if method_settings is not None:
        raise TypeError(f"{owner}: give method= and method_settings=, not the deprecated explainer=/composite=")
    return legacy_explainer(method, explainer, composite, owner, old_default, stacklevel=stacklevel)


class LossParts(NamedTuple):
    """What a loss module's call returns with ``return_parts=True``: the total ``loss`` (with its graph), the
    model's ``logits`` on the batch (with their graph) and the detached ``terms`` of the loss (floats)."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: dict[str, float]


def deprecated_last(owner: str, attribute: str) -> property:
    """The deprecated ``last`` (``terms``) or ``logits`` attribute of a loss module: the last call's value,
    detached; a ``DeprecationWarning`` names ``return_parts=True``."""
    index = {"last": 0, "logits": 1}[attribute]
    new = {"last": "terms", "logits": "logits"}[attribute]

    def get(self) -> Any:
        warn_renamed(f"{owner}.{attribute}", f"parts = loss_fn(..., return_parts=True); parts.{new}", 3)
        last = self.__dict__.get("_last")
        return ({}, None)[index] if last is None else last[index]

    return property(get, doc=f"Deprecated: ``loss_fn(..., return_parts=True).{new}`` (detached here).")


def attribution(method: Method, x: torch.Tensor, target: TargetSpec, second_order: bool = True) -> torch.Tensor:
    """``method``'s attribution for ``target``, differentiable w.r.t. the parameters (and ``x``'s history)
    when ``second_order``; otherwise a constant (detached)."""
    expl = method(x, target=target, create_graph=True)
    return expl.attribution if second_order else expl.attribution.detach()


def check_weight(value: Any, name: str = "lam") -> float:
    """A loss weight: a finite number ≥ 0."""
    check_positive(value, name, allow_zero=True)
    if value != value or value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def log_prob_sum(output: torch.Tensor) -> torch.Tensor:
    """``Σ_k log softmax(output)_k`` per sample: the score whose input gradient Ross et al. (2017, eq. 1)
    penalise."""
    return output.log_softmax(-1).sum(-1)
