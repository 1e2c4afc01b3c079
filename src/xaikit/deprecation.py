"""Renamed public API: the old name keeps working for one release and warns, naming the new one."""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (a ``DeprecationWarning`` shown at the caller)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new} instead",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """Decorator: accept the old keyword names ``renames`` (``old="new"``) with a ``DeprecationWarning``.

    >>> @renamed_keywords(eps="epsilon")
    ... def rule(epsilon=1e-6): return epsilon
    """

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__qualname__}() got both {old!r} (deprecated) and {new!r}; "
                                        f"give {new!r} only")
                    warn_renamed(f"the keyword {old!r} of {func.__qualname__}()", f"{new!r}")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def renamed(module: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that keeps the old names of ``names`` (old -> new) importable for one release,
    each use warning with a ``DeprecationWarning`` that names the new one.

    ``__getattr__ = renamed(__name__, {"OldResult": "NewResult"}, globals())``
    """
    def __getattr__(name: str) -> Any:
        if name in names:
            warn_renamed(f"{module}.{name}", f"{module}.{names[name]}")
            return namespace[names[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
