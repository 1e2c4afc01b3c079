"""Method and metric specs on the command line: ``NAME`` or ``NAME:key=value,key=value``.

``lrp:composite=epsilon_gamma_box,gamma=0.5`` builds ``LRP(model, composite="epsilon_gamma_box", gamma=0.5)``.
Values are read as Python literals where they parse (numbers, ``True``, ``None``, tuples such as
``window=(8, 8)``) and as strings otherwise; a comma starts a new setting only where ``key=`` follows it.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import nn

from ..methods.base import METHODS, Method, get_method
from ..methods.resolve import SpecError
from ..methods.resolve import parse_spec as _parse_spec
from .errors import UsageError


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"lrp:composite=epsilon,epsilon=0.1"`` -> ``("lrp", {"composite": "epsilon", "epsilon": 0.1})``.

    The one spec parser of xaikit (:func:`xaikit.methods.resolve.parse_spec`); a malformed spec is a
    :class:`UsageError` here."""
    try:
        return _parse_spec(text)
    except SpecError as err:
        raise UsageError(str(err)) from None


def method_class(name: str) -> type[Method]:
    """The registered method class, or a :class:`UsageError` listing the valid names."""
    try:
        return get_method(name)
    except ValueError as err:  # get_method's message names the closest valid names
        raise UsageError(str(err)) from None


def accepts(cls: type, keyword: str) -> bool:
    """Whether ``cls(...)`` takes ``keyword`` as a named parameter."""
    init = inspect.unwrap(cls.__init__)
    return keyword in inspect.signature(init).parameters


def build_methods(specs: Sequence[str], model: nn.Module, batch_size: int | str, seed: int | None,
                  mask_token: int | None = None, composite: str | None = None) -> dict[str, Method]:
    """Build every method of ``specs`` on ``model``: label -> method object.

    ``batch_size`` and ``seed`` are passed to the methods that take them unless the spec sets them, and for
    text the tokenizer's ``mask_token`` id is the baseline of the methods that switch tokens off and
    ``composite`` the LRP composite where the spec names none. Labels are
    the methods' display names (``LRP(epsilon_gamma_box)``), or the spec itself where two would coincide.
    """
    built: dict[str, Method] = {}
    for text in specs:
        name, settings = parse_spec(text)
        cls = method_class(name)
        masks_tokens = mask_token is not None and getattr(cls, "not_for_token_ids", "") is None
        lrp = issubclass(cls, METHODS["lrp"]) and accepts(cls, "composite")
        defaults = (("batch_size", batch_size), ("seed", seed), ("baseline", mask_token if masks_tokens else None),
                    ("composite", composite if lrp else None))
        for key, value in defaults:
            if value is not None and key not in settings and accepts(cls, key):
                settings[key] = value
        try:
            method = cls(model, **settings)
        except (TypeError, ValueError) as err:
            raise UsageError(f"method {text!r}: {err}") from None
        label = method.name if method.name not in built else text
        built[label] = method
    return built


def build_metrics(specs: Sequence[str], registry: dict[str, type], batch_size: int | str = "auto",
                  seed: int | None = None) -> dict[str, Any]:
    """Build every metric of ``specs`` from ``registry`` (name -> class): label -> metric object.

    ``batch_size`` and ``seed`` are passed to the metrics that take them unless the spec sets them."""
    built: dict[str, Any] = {}
    for text in specs:
        name, settings = parse_spec(text)
        if name not in registry:
            raise UsageError(f"unknown metric {name!r}; valid: {', '.join(sorted(registry))}")
        for key, value in (("batch_size", batch_size), ("seed", seed)):
            if value is not None and key not in settings and accepts(registry[name], key):
                settings[key] = value
        try:
            built[text if settings else name] = registry[name](**settings)
        except (TypeError, ValueError) as err:
            raise UsageError(f"metric {text!r}: {err}") from None
    return built
