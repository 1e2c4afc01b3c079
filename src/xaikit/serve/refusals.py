"""What the app refuses, as HTTP answers with one clear message: ``{"error": "..."}`` and a status code.

- :class:`Refused` (a status and a message) is raised by the views;
- :func:`library_call` turns the library's own errors about the request (an unknown method or setting, a bad
  target, an input the method does not apply to: ``ValueError``/``TypeError``) into 400 with its message;
- a path outside the served folders is 403, a missing file 404, an upload too large 413, of the wrong type 415.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .paths import PathRefused


class Refused(Exception):
    """A request the app refuses: ``status`` (an HTTP code) and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def library_call(what: str = "", model_errors: bool = False) -> Iterator[None]:
    """Run library code on the user's choices: its ``ValueError``/``TypeError``/``KeyError`` (the library's
    messages about bad names, settings and inputs) become a 400 answer with the message, prefixed by ``what``.
    ``model_errors``: the model's own ``RuntimeError`` too (an input of a shape the model does not take)."""
    try:
        yield
    except (Refused, PathRefused, FileNotFoundError):
        raise
    except (ValueError, TypeError, KeyError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise Refused(400, f"{what}: {text}" if what else str(text)) from err
    except RuntimeError as err:
        if not model_errors:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise Refused(400, f"{what}: the input does not fit the model: {first}") from err


def status_of(err: BaseException) -> int:
    """The HTTP status of an error the views let through."""
    if isinstance(err, Refused):
        return err.status
    if isinstance(err, PathRefused):
        return 403
    if isinstance(err, FileNotFoundError):
        return 404
    return 500


def message_of(err: BaseException) -> str:
    if isinstance(err, Refused):
        return err.message
    if isinstance(err, FileNotFoundError) and err.args:
        return str(err.args[0]) if len(err.args) == 1 else str(err)
    return str(err) or type(err).__name__
