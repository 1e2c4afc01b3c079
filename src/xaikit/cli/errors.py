"""Errors of the command line: each becomes one line on stderr and an exit code (see ``docs/cli.md``)."""
from __future__ import annotations

#: exit codes
OK, FAILED, USAGE, NOT_FOUND, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130


def one_line(err: BaseException, limit: int = 400) -> str:
    """An exception as one readable line: every line of its message joined (a message such as "Error(s) in
    loading state_dict for Linear:" continues on the next lines), with the type where the text alone says
    little (``101`` from a failed unpickling)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if len(text) < 24 or not any(c.isalpha() for c in text):
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


class CLIError(Exception):
    """An error with a one-line message for the user and an exit code."""

    code = FAILED


class UsageError(CLIError):
    """Bad arguments: unknown method, metric, setting or option value."""

    code = USAGE


class NotFound(CLIError):
    """A file, model or input that does not exist or cannot be loaded."""

    code = NOT_FOUND
