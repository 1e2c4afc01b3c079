"""Errors of the command line: each becomes one line on stderr and an exit code (see ``docs/cli.md``)."""
from __future__ import annotations

#: exit codes
OK, FAILED, USAGE, NOT_FOUND, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130


class CLIError(Exception):
    """An error with a one-line message for the user and an exit code."""

    code = FAILED


class UsageError(CLIError):
    """Bad arguments: unknown method, metric, setting or option value."""

    code = USAGE


class NotFound(CLIError):
    """A file, model or input that does not exist or cannot be loaded."""

    code = NOT_FOUND
