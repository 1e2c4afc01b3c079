"""One way to name the explainer inside every room: a name, a ``name:key=value`` spec or a method object.

Every tool that explains with another method (concepts, examples, improve, BiLRP, benchmark, generation)
takes ``method=`` and ``method_settings=`` and hands them to :func:`resolve_method`, which returns a
:class:`~xaikit.methods.base.Method` built on the tool's model:

- a registered method name (``"lrp"``, ``"integrated_gradients"``; the method's own defaults),
- a spec string ``"name:key=value,key=value"`` (``"lrp:composite=epsilon_plus"``,
  ``"integrated_gradients:steps=32"``), read by :func:`parse_spec` exactly as the CLI, ``xaikit run`` and
  ``xaikit tune`` read theirs,
- a method class (``xk.LRP``), built with the settings,
- a method object (``xk.LRP(model, composite="epsilon")``): used as it is; it must be built on the tool's
  model (a method explains the model it was built on), and it takes no ``method_settings``.

``method_settings`` (a dict) adds settings to a name or spec; a setting given in both is an error. ``None``
picks the room's documented default, one per task (:data:`DEFAULT_METHODS`); with ``method=None`` the
``method_settings`` adjust that default (``{"composite": "epsilon"}`` replaces its composite).
"""
from __future__ import annotations

import ast
import re
from typing import Any, Collection, Sequence

import torch
from torch import nn

from ..deprecation import warn_renamed
from ..errors import unknown_name
from ..explanation import Explanation
from ..propagation.composites import PRESETS, Composite
from ..targets import TargetSpec
from ..settings import settings_of
from .base import METHODS, Method, get_method

#: the default explainer of each task (a spec for :func:`resolve_method`); every room names its task
DEFAULT_METHODS: dict[str, str] = {
    # heatmaps and concept relevance of image classifiers (CRP, Achtibat et al. 2023; prototypes, Dreyer
    # et al. 2023): ε for dense layers, z+ for convolutions, flat at the input layer
    "image": "lrp:composite=epsilon_plus_flat",
    # token relevance and similarity of transformers (AttnLRP, Achtibat et al. 2024): BiLRP, generation
    "transformer": "lrp:composite=attnlrp",
    # explanations that enter a training loss or rank units (improve): the input layer keeps an
    # input-dependent rule (z+), so a penalty on input relevance depends on the pixels it masks
    "training": "lrp:composite=epsilon_plus",
    # the "right for the right reasons" penalty as Ross et al. (2017, eq. 1) define it: the input gradient
    "right_reasons": "gradient",
}

#: the single-pass methods whose relevance inside the network (activation × modified gradient) the engine's
#: recorder reads: the explainers of the tools that look at a layer (concepts, pruning)
RELEVANCE_METHODS = ("lrp", "gradient", "input_x_gradient", "guided_backprop", "deconv_net", "excitation_backprop")

_SETTING_START = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")


class SpecError(ValueError):
    """A malformed ``name:key=value`` spec."""


def literal_value(text: str) -> Any:
    """A setting's value: a Python literal where it parses (``0.5``, ``True``, ``None``, ``(8, 8)``), else the
    text itself (``epsilon_plus``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"lrp:composite=epsilon,epsilon=0.1"`` -> ``("lrp", {"composite": "epsilon", "epsilon": 0.1})``.

    Values are read by :func:`literal_value`; a comma starts a new setting only where ``key=`` follows it (so
    ``window=(8, 8)`` is one value). Raises :class:`SpecError` (a ``ValueError``) on a malformed spec.
    """
    if not isinstance(text, str):
        raise TypeError(f"a method spec must be a string NAME or NAME:key=value,key=value, got {type(text).__name__}")
    name, _, rest = text.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in _SETTING_START.split(rest))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise SpecError(f"bad setting {item!r} in {text!r}; write NAME:key=value,key=value")
        settings[key.strip()] = literal_value(value.strip())
    if not name.strip():
        raise SpecError(f"empty name in {text!r}; write NAME or NAME:key=value")
    return name.strip(), settings


def resolve_method(model: nn.Module | Any, method: str | Method | type | None = None,
                   method_settings: dict[str, Any] | None = None, *, default: str | None = None,
                   allowed: Collection[str] | None = None, reason: str = "cannot be used here",
                   argument: str = "method") -> Method:
    """The :class:`Method` that a tool built on ``model`` explains with (see the module docstring).

    Parameters
    ----------
    model : nn.Module or callable
        The tool's model: a name or spec is built on it; a method object must have been built on it.
    method : str, Method, Method subclass or None
        ``None``: ``default``.
    method_settings : dict, optional
        Settings added to a name or spec (not to a method object).
    default : str, optional
        The spec used when ``method`` is ``None`` (a value of :data:`DEFAULT_METHODS`).
    allowed : collection of str, optional
        The registered names the tool accepts (e.g. the methods with a relevance inside the network).
    reason : str
        Why another method is refused, for the message (e.g. "has no relevance inside the network").
    argument : str
        The argument's name, for the messages.

    Raises
    ------
    ValueError
        Unknown method name (with the close names), malformed spec, a setting given twice, a method not in
        ``allowed``, or a method object built on another model.
    TypeError
        ``method`` or ``method_settings`` of the wrong type, or an unknown setting (with the close names).
    """
    if method_settings is not None and not isinstance(method_settings, dict):
        raise TypeError(f"{argument}_settings must be a dict of the method's settings, got "
                        f"{type(method_settings).__name__}")
    from_default = method is None
    if from_default:
        if default is None:
            raise TypeError(f"{argument} is required: give a method name such as 'lrp', a spec such as "
                            "'lrp:composite=epsilon_plus' or a method object")
        method = default
    if isinstance(method, Method):
        if method_settings:
            raise ValueError(f"{argument}_settings apply to a method given by name or spec; configure the method "
                             f"object directly, e.g. xk.{type(method).__name__}(model, **settings)")
        if method.model is not model:
            raise ValueError(f"{argument} {method.name} was built on another model; build it on the model given "
                             "to this tool, or pass its name or spec (e.g. 'lrp:composite=epsilon_plus')")
        _check_allowed(type(method), allowed, argument, method.name, reason)
        return method
    if isinstance(method, type) and issubclass(method, Method):
        cls, settings, text = method, {}, method.__name__
    elif isinstance(method, str):
        name, settings = parse_spec(method)
        try:
            cls = get_method(name)
        except ValueError:
            raise unknown_name(f"{argument}", name, METHODS) from None
        text = method
    else:
        raise TypeError(f"{argument} must be a method name ('lrp'), a spec ('lrp:composite=epsilon_plus'), a "
                        f"method class or a method object, got {type(method).__name__}")
    _check_allowed(cls, allowed, argument, text, reason)
    twice = sorted(set(settings) & set(method_settings or {}))
    if from_default:  # method_settings adjust the default method: they replace the default's own settings
        settings = {k: v for k, v in settings.items() if k not in twice}
    elif twice:
        raise ValueError(f"setting(s) {', '.join(twice)} given both in {argument}={text!r} and in "
                         f"{argument}_settings; give each once")
    try:
        return cls(model, **settings, **(method_settings or {}))
    except TypeError as err:
        raise type(err)(f"{argument}={text!r}: {err}") from None


def passed_on(method: Any, method_settings: dict[str, Any] | None, default: str | None = None,
              **values: Any) -> dict[str, Any] | None:
    """``method_settings`` plus the tool's own ``values`` (its ``batch_size``, ``progress``) that the method accepts
    and that its spec and ``method_settings`` do not set already; a value ``None`` is the tool's "no opinion".

    ``method`` as :func:`resolve_method` takes it (``None``: ``default``). A method object keeps its own settings,
    and an unknown name is left to :func:`resolve_method` to refuse: both return ``method_settings`` unchanged.
    """
    values = {k: v for k, v in values.items() if v is not None}
    target = default if method is None else method
    if not values or target is None or isinstance(target, Method):
        return method_settings
    if isinstance(target, type):
        cls, spec = target, {}
    else:
        name, spec = parse_spec(target)
        try:
            cls = get_method(name)
        except ValueError:
            return method_settings
    accepted, given = settings_of(cls)[0], {**spec, **(method_settings or {})}
    extra = {k: v for k, v in values.items() if k in accepted and k not in given}
    return {**(method_settings or {}), **extra} if extra else method_settings


def _check_allowed(cls: type, allowed: Collection[str] | None, argument: str, text: str, reason: str) -> None:
    """Refuse a method class that is none of the ``allowed`` registered methods (nor a subclass of one)."""
    if allowed is not None and not any(name in METHODS and issubclass(cls, METHODS[name]) for name in allowed):
        raise ValueError(f"{argument} {text!r} {reason}; use one of: {', '.join(allowed)}")


def legacy_lrp_settings(method: Any, method_settings: dict[str, Any] | None, composite: Any,
                        settings: dict[str, Any], owner: str, stacklevel: int = 4) -> tuple[Any, dict | None]:
    """``(method, method_settings)`` from the deprecated ``composite=`` + ``**settings`` of the tools that
    explained with LRP only (BiLRP, ``FeatureIndex.heatmaps``, ``channel_relevance``).

    A composite given where ``method`` now stands (a preset name, a ``.json`` path, a dict or a
    :class:`~xaikit.propagation.composites.Composite`) counts as ``composite=``. Either gives LRP with that
    composite and the settings, with a ``DeprecationWarning`` naming the new form; otherwise nothing changes.
    """
    if isinstance(method, (Composite, dict)) or (isinstance(method, str) and (
            method in PRESETS or method.endswith(".json"))):
        if composite is not None:
            raise TypeError(f"{owner}: the composite is given twice (by position and as composite=)")
        method, composite = None, method
    if composite is None and not settings:
        return method, method_settings
    if method is not None:
        raise TypeError(f"{owner}: give method= and method_settings= only (composite= and LRP settings as "
                        "keywords are their deprecated form)")
    warn_renamed(f"{owner}(composite=..., **settings)",
                 "method='lrp:composite=NAME' (a method name, spec or object) and method_settings={...}",
                 stacklevel)
    merged = {**({"composite": composite} if composite is not None else {}), **settings, **(method_settings or {})}
    return ("lrp" if composite is not None else None), merged  # None: the tool's default, adjusted


def explain(model: nn.Module, x: torch.Tensor, target: TargetSpec = None, method: "str | Method" = "gradient",
            forward_args: Sequence[Any] = (), forward_kwargs: dict[str, Any] | None = None,
            **settings: Any) -> Explanation:
    """Functional shortcut: ``explain(model, x, y, method="integrated_gradients", steps=64)``; ``method`` is a
    name, a spec (``"lrp:composite=epsilon_gamma_box"``) or a method object, as everywhere
    (:func:`resolve_method`)."""
    built = resolve_method(model, method, settings or None)
    return built(x, target, forward_args=forward_args, forward_kwargs=forward_kwargs)
