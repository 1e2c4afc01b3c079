"""Registries of named classes (methods, metrics): explicit registration that refuses a name collision.

A class is found by name (``xk.get_method("lrp")``, ``xk.metrics.get_metric("pixel_flipping")``, the CLI,
specs such as ``"lrp:composite=epsilon"``) once it is registered; subclassing registers nothing, so a user's
class that happens to share a built-in's name (``class LRP(xk.Method)``) never replaces it.
"""
from __future__ import annotations

import re
import types
from typing import Any, Callable, Generic, Mapping, TypeVar

from .errors import unknown_name

T = TypeVar("T", bound=type)
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def snake_case(name: str) -> str:
    """``IntegratedGradients`` -> ``integrated_gradients``; ``LRP`` -> ``lrp``; ``GradCAMPlusPlus`` -> ..."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def qualified(cls: type) -> str:
    """``module.QualifiedName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry(Generic[T]):
    """Named subclasses of ``base``: :meth:`register` adds one, :meth:`get` finds one, :attr:`view` reads all.

    Parameters
    ----------
    kind : str
        What the classes are, for messages (``"method"``, ``"metric"``).
    base : type
        The class every registered class derives from.
    public : str
        The public name of :meth:`register` (``"xk.register_method"``), for messages.
    """

    def __init__(self, kind: str, base: type, public: str) -> None:
        self.kind, self.base, self.public = kind, base, public
        self._classes: dict[str, T] = {}
        #: registered name -> class, a read-only live view (add a class with :meth:`register`)
        self.view: Mapping[str, T] = types.MappingProxyType(self._classes)

    def register(self, cls: T | None = None, name: str | None = None) -> Any:
        """Register ``cls`` under ``name`` (default: its class name in snake_case); as a function or a class
        decorator, with or without ``name=``. Returns ``cls`` (or a decorator).

        Raises ``ValueError`` when another class holds ``name`` (registering the same class again, or a class
        redefined with the same module and qualified name, e.g. a re-run notebook cell, is no collision) or
        the name is not lower-case snake_case; ``TypeError`` when ``cls`` is not a subclass of the base.
        """
        if cls is None:
            return lambda decorated: self.register(decorated, name)
        base = f"{self.base.__module__.split('.')[0]}.{self.base.__name__}"
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            got = f"class {qualified(cls)}" if isinstance(cls, type) else type(cls).__name__
            raise TypeError(f"{self.public.rpartition('.')[2]} takes a subclass of {base}, got {got}")
        if name is None:
            name = snake_case(cls.__name__).lstrip("_")
        if not isinstance(name, str):
            raise TypeError(f"name must be a string such as 'my_{self.kind}', got {type(name).__name__}")
        if not _NAME.fullmatch(name):
            raise ValueError(f"{self.kind} name must be lower-case letters, digits and underscores starting with a "
                             f"letter (it is written in specs such as 'NAME:key=value'), got {name!r}")
        held = self._classes.get(name)
        if held is not None and held is not cls and qualified(held) != qualified(cls):
            raise ValueError(f"{self.kind} name {name!r} is already registered to {qualified(held)}; register "
                             f"{cls.__name__} under another name, e.g. {self.public}({cls.__name__}, "
                             f"name={('my_' + name)!r})")
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> T:
        """The class registered as ``name`` or whose class name is ``name`` (``"lrp"``, ``"LRP"``)."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string such as {next(iter(self._classes), 'name')!r}, "
                            f"got {type(name).__name__}")
        key = name if name in self._classes else snake_case(name)
        if key not in self._classes:
            error = unknown_name(self.kind, name, self._classes)
            raise ValueError(f"{error}; a {self.kind} of your own is found by name once registered with "
                             f"{self.public}(My{self.kind.capitalize()})")
        return self._classes[key]

    def names(self, where: Callable[[T], bool] = lambda cls: True) -> list[str]:
        """Registered names, in registration order, of the classes for which ``where`` holds."""
        return [name for name, cls in self._classes.items() if where(cls)]
