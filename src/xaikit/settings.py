"""Constructor settings of every public tool: unknown settings are rejected by name, with the close names.

``bind_settings`` binds a constructor's arguments; :func:`checked_init` wraps an ``__init__`` with it (a
decorator, also applied by the ``__init_subclass__`` hooks of :class:`~xaikit.methods.base.Method` and the
concept tools), and :class:`CheckedSettings` is the same as a base class for any other public class. A
misspelt setting (``composit=``) raises :class:`UnknownSetting`, a ``TypeError`` whose message names it and
suggests the closest valid names ("did you mean 'composite'?"), then lists every valid one.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable

from .errors import did_you_mean


class UnknownSetting(TypeError, ValueError):
    """An unknown setting of a constructor. A ``TypeError`` (as Python's own for an unexpected keyword), and a
    ``ValueError`` too, for the tools that refused unknown settings with one before."""


def unknown_setting(owner: str, key: str, valid: Iterable[str], forwarded: bool = False) -> UnknownSetting:
    """The error for the unknown setting ``key`` of ``owner``: the close names first (difflib), then all.

    ``forwarded``: ``key`` went to a ``**settings`` parameter ("unknown LRP setting 'gama'")."""
    valid = [v for v in valid if v]
    hint = did_you_mean(key, valid)
    head = f"unknown {owner} setting {key!r}" if forwarded else f"{owner} got unknown setting {key!r}"
    return UnknownSetting(f"{head}; {hint}valid settings: {', '.join(valid)}")


def _named(params: Any, hidden: tuple[str, ...]) -> list[str]:
    """The parameters a caller may give by name (not ``self``/``model``, ``*args`` or ``**kwargs``)."""
    return [p for p, v in params.items() if p not in hidden and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]


def bind_settings(obj: Any, signature: inspect.Signature, args: tuple, kwargs: dict,
                  hidden: tuple[str, ...] = ("self",), extra: Iterable[str] | None = None) -> inspect.BoundArguments:
    """Bind ``obj.__init__``'s arguments; an unknown setting raises :class:`UnknownSetting` with the close names.

    ``extra``: the names that a ``**settings`` parameter accepts (it forwards them, e.g. LRP's ``epsilon``);
    given, any other keyword is refused too. ``None``: a ``**settings`` parameter takes any keyword.
    """
    params = signature.parameters
    if extra is not None:
        extra = list(extra)
        for key in kwargs:
            if key not in params and key not in extra:
                valid = _named(params, hidden)
                raise unknown_setting(type(obj).__name__, key, valid + [e for e in extra if e not in valid], True)
    try:
        return signature.bind(obj, *args, **kwargs)
    except TypeError as err:
        valid = _named(params, hidden) + [e for e in extra or () if e not in params]
        takes_any = any(v.kind is v.VAR_KEYWORD for v in params.values())
        unknown = [k for k in kwargs if k not in params] if not takes_any else []
        name = type(obj).__name__
        if unknown:
            raise unknown_setting(name, unknown[0], valid) from None
        raise TypeError(f"{name}: {err}; valid settings: {', '.join(valid)}") from None


def checked_init(init: Callable, hidden: tuple[str, ...] = ("self", "model")) -> Callable:
    """Wrap a constructor so that unknown settings are refused by :func:`bind_settings` before it runs.

    A class whose constructor forwards ``**settings`` lists the names it forwards in a ``forwarded_settings``
    attribute; any other keyword is then refused too, with the close names among both."""
    if getattr(init, "__checked_settings__", False):
        return init
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bind_settings(self, signature, args, kwargs, hidden=hidden, extra=getattr(self, "forwarded_settings", None))
        init(self, *args, **kwargs)

    wrapper.__checked_settings__ = True
    return wrapper


def settings_of(cls: type, hidden: tuple[str, ...] = ("self", "model")) -> tuple[list[str], bool]:
    """``(names, takes_any)``: the settings that ``cls(...)`` accepts by name (its parameters and the
    ``forwarded_settings`` of a ``**settings`` parameter), and whether it takes any other keyword too."""
    params = inspect.signature(inspect.unwrap(cls.__init__)).parameters
    names = _named(params, hidden)
    forwarded = getattr(cls, "forwarded_settings", None)
    names += [f for f in forwarded or () if f not in names]
    takes_any = any(v.kind is v.VAR_KEYWORD for v in params.values()) and forwarded is None
    return names, takes_any


class CheckedSettings:
    """Base class: the ``__init__`` of every subclass refuses unknown settings through :func:`checked_init`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checked_init(cls.__dict__["__init__"])
