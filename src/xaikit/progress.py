"""One progress convention for every long loop of xaikit (methods, metrics, tools and the command line).

- On a terminal (or in a notebook): a ``tqdm`` bar with its rate and time left.
- Elsewhere (stderr redirected to a log file, a pipe, a batch job): one line every :data:`INTERVAL_S` seconds,
  ``xaikit: <what>: 40/150 inputs, 12.3 s, about 33 s left``, and a last line when the loop ends, if the loop
  lasted long enough to print a line at all (short inner loops stay silent, so a log never fills with them).
- ``progress=False`` (every tool's setting, the CLI's ``--quiet``): nothing.

The interval between lines is :data:`INTERVAL_S` seconds, or the ``XAIKIT_PROGRESS_INTERVAL`` environment
variable (seconds; ``0`` prints a line on every update).

>>> with Progress(total=len(chunks), desc="explain", unit="input", enabled=progress) as bar:
...     for chunk in chunks:
...         work(chunk)
...         bar.update(len(chunk))
"""
from __future__ import annotations

import contextvars
import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

#: seconds between two summary lines off a terminal
INTERVAL_S = 10.0
#: the environment variable that overrides :data:`INTERVAL_S`
INTERVAL_ENV = "XAIKIT_PROGRESS_INTERVAL"


_ACTIVE: contextvars.ContextVar[tuple["Progress", ...]] = contextvars.ContextVar("xaikit_progress", default=())


def active() -> "Progress | None":
    """The innermost enabled :class:`Progress` of the running code, if any (a tool's loop inside a command)."""
    stack = _ACTIVE.get()
    return stack[-1] if stack else None


def nested(total: int | None, desc: str, unit: str = "it") -> "Progress":
    """A :class:`Progress` for an inner loop (a metric's stages): shown only when an outer loop shows progress
    (``xaikit evaluate``, ``benchmark(progress=True)``), not kept on the terminal when done."""
    return Progress(total, desc, unit, enabled=active() is not None, leave=False)


def interval_s() -> float:
    """Seconds between summary lines: ``$XAIKIT_PROGRESS_INTERVAL`` if set to a number >= 0, else
    :data:`INTERVAL_S`."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return INTERVAL_S
    return value if value >= 0 else INTERVAL_S


def interactive(file: TextIO | None = None) -> bool:
    """Whether ``file`` (default ``sys.stderr``) is shown live: a terminal, or a Jupyter kernel's stream."""
    file = sys.stderr if file is None else file
    try:
        if file.isatty():
            return True
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False
    return "ipykernel" in sys.modules and type(file).__module__.startswith("ipykernel")


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """A progress display of a loop of ``total`` steps (see the module docstring for the convention).

    Parameters
    ----------
    total : int, optional
        Steps of the loop (``None``: unknown; no time left is estimated).
    desc : str
        What runs (the method, metric or tool).
    unit : str
        The name of a step (``"input"``, ``"sample"``, ``"eval"``).
    enabled : bool
        ``False`` shows nothing (``progress=False``, ``--quiet``).
    file : text stream, optional
        Where to write (default ``sys.stderr``).
    leave : bool
        Keep the finished bar on a terminal; off a terminal, print the last line even for a short loop.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True,
                 file: TextIO | None = None, leave: bool = True) -> None:
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.file = sys.stderr if file is None else file
        self.enabled = bool(enabled)
        self.n, self.began = 0, time.perf_counter()
        self.lines = 0  #: summary lines printed (off a terminal)
        self.postfix = ""
        self._last = self.began
        self._bar = None
        self._closed = False
        if self.enabled and interactive(self.file):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True, leave=leave,
                             smoothing=0.05)
        self._token = _ACTIVE.set(_ACTIVE.get() + (self,)) if self.enabled else None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def left_s(self) -> float | None:
        """Seconds left at the mean rate so far (``None`` before the first step or without a total)."""
        if not self.total or not self.n:
            return None
        return self.elapsed / self.n * max(0, self.total - self.n)

    def summary(self) -> str:
        """The one-line summary: ``xaikit: <desc>: n/total units, elapsed, about ... left``."""
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        text = f"xaikit: {self.desc or 'progress'}: {count} {self.unit}s, {duration(self.elapsed)}"
        left = self.left_s()
        if left is not None and self.n < (self.total or 0):
            text += f", about {duration(left)} left"
        return f"{text} ({self.postfix})" if self.postfix else text

    def update(self, n: int = 1) -> None:
        """``n`` more steps done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.perf_counter() - self._last >= interval_s():
            self._line(self.summary())

    def set_postfix(self, **values: Any) -> None:
        """Counters shown after the bar, and at the end of each summary line (``failed=0``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def write(self, text: str) -> None:
        """A message that does not break the bar (a warning, a time estimate)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            self._line(text)

    def estimate(self, what: str, seconds: float) -> None:
        """Say how long ``what`` is expected to take (expensive metrics: measured on a first part of the work);
        said only when it is at least the summary interval (a short wait needs no forecast)."""
        if seconds >= interval_s():
            self.write(f"xaikit: {what}: about {duration(seconds)} expected")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._token is not None:
            try:
                _ACTIVE.reset(self._token)
            except ValueError:  # closed in another context (a generator finished elsewhere): drop it by hand
                _ACTIVE.set(tuple(p for p in _ACTIVE.get() if p is not self))
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and (self.lines or (self.leave and self.elapsed >= interval_s())):
            self._line(self.summary() + " (done)" if self.total is None or self.n >= self.total else self.summary())

    def _line(self, text: str) -> None:
        print(text, file=self.file, flush=True)
        self.lines += 1
        self._last = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = True) -> Iterator[T]:
    """Iterate over ``iterable`` with a :class:`Progress` display, one step per item."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled, leave=leave) as bar:
        for item in iterable:
            yield item
            bar.update(1)
