"""The coverage report: which operations of the explained forward pass the engine handled, passed through as
safe under the input × gradient convention, or did not know."""
from __future__ import annotations

from collections import Counter


class Coverage:
    """Counts of operations seen on activations, by kind: ``handled``, ``linear`` or ``unknown``."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {"handled": Counter(), "linear": Counter(), "unknown": Counter()}
        self.log: list[tuple[str, str]] = []  #: every (kind, op) added, in order

    def add(self, kind: str, op: str) -> None:
        self.counts[kind][op] += 1
        self.log.append((kind, op))

    def since(self, mark: int) -> list[tuple[str, str]]:
        """The operations added since ``mark`` (a length of :attr:`log`)."""
        return self.log[mark:]

    def undo(self, mark: int) -> None:
        """Remove the operations added since ``mark``, e.g. to count a module's operations as one."""
        for kind, op in self.log[mark:]:
            self._remove(kind, op)
        del self.log[mark:]

    def move(self, kind: str, op: str, new_kind: str, new_op: str) -> None:
        """Re-classify one counted operation (e.g. a BatchNorm fold that turned out not to hold); only after
        the forward pass (the log keeps the first classification)."""
        self._remove(kind, op)
        self.counts[new_kind][new_op] += 1

    def _remove(self, kind: str, op: str) -> None:
        self.counts[kind][op] -= 1
        if not self.counts[kind][op]:
            del self.counts[kind][op]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {kind: dict(sorted(c.items())) for kind, c in self.counts.items()}
