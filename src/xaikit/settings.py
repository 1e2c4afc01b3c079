"""Constructor settings shared by methods and metrics: unknown settings are rejected by name."""
from __future__ import annotations

import inspect
from typing import Any


def bind_settings(obj: Any, signature: inspect.Signature, args: tuple, kwargs: dict,
                  hidden: tuple[str, ...] = ("self",)) -> inspect.BoundArguments:
    """Bind ``obj.__init__``'s arguments; a ``TypeError`` names an unknown setting and lists the valid ones."""
    try:
        return signature.bind(obj, *args, **kwargs)
    except TypeError as err:
        valid = ", ".join(p for p in signature.parameters if p not in hidden)
        unknown = [k for k in kwargs if k not in signature.parameters]
        name = type(obj).__name__
        if unknown:
            raise TypeError(f"{name} got unknown setting {unknown[0]!r}; valid settings: {valid}") from None
        raise TypeError(f"{name}: {err}; valid settings: {valid}") from None
