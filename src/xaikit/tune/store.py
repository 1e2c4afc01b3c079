"""The results file of a search: every score computed, appended as it comes, read back to resume.

JSON lines: the first line is the run's fingerprint (spaces, objectives, data, seed); each further line holds
the scores of one configuration on some samples of the tuning pool, ``{"key": ..., "samples": [...],
"scores": {objective: [...]}}``. A search replays deterministically and takes the scores it finds here
instead of computing them again, so an interrupted run resumes where it stopped. A file written by another
run (other fingerprint) is refused; a last line cut off by the interruption is ignored.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence


class Store:
    """Scores by configuration key, objective and sample index; backed by a JSON-lines file if ``path``."""

    def __init__(self, fingerprint: dict[str, Any], path: str | Path | None = None) -> None:
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.path = None if path is None else Path(path)
        self.scores: dict[str, dict[str, dict[int, float]]] = {}
        self.loaded = 0  #: score lines read back from an earlier run
        if self.path is not None:
            if self.path.exists() and self.path.stat().st_size > 0:
                self._read()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._append({"fingerprint": self.fingerprint})

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])["fingerprint"]
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise ValueError(f"results file {str(self.path)!r} is not a tuning results file; "
                             "give another results path or delete it") from None
        if header != self.fingerprint:
            changed = sorted(k for k in set(header) | set(self.fingerprint) if header.get(k) != self.fingerprint.get(k))
            raise ValueError(f"results file {str(self.path)!r} was written by a different search (differs in: "
                             f"{', '.join(changed)}); give another results path or delete it to start again")
        for number, line in enumerate(lines[1:], 2):
            try:
                row = json.loads(line)
                self._remember(row["key"], row["samples"], row["scores"])
                self.loaded += 1
            except (json.JSONDecodeError, KeyError, TypeError):
                if number != len(lines):
                    raise ValueError(f"results file {str(self.path)!r}: line {number} is damaged") from None
                warnings.warn(f"results file {self.path}: the last line was cut off (interrupted run); it is "
                              "dropped and computed again", UserWarning, stacklevel=3)
                self.path.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
                return
        if not self.path.read_text(encoding="utf-8").endswith("\n"):
            with self.path.open("a", encoding="utf-8") as handle:  # so the next line starts on its own
                handle.write("\n")

    def _append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def _remember(self, key: str, samples: Sequence[int], scores: dict[str, Sequence[float | None]]) -> None:
        table = self.scores.setdefault(key, {})
        for objective, values in scores.items():
            column = table.setdefault(objective, {})
            for sample, value in zip(samples, values):
                column[int(sample)] = math.nan if value is None else float(value)

    def missing(self, key: str, samples: Sequence[int], objectives: Sequence[str]) -> list[int]:
        """The samples of ``samples`` that lack a score for some objective."""
        table = self.scores.get(key, {})
        return [s for s in samples if any(s not in table.get(o, {}) for o in objectives)]

    def add(self, key: str, samples: Sequence[int], scores: dict[str, Sequence[float]]) -> None:
        """Record scores (and append them to the file)."""
        self._remember(key, samples, scores)
        if self.path is not None:
            clean = {o: [None if math.isnan(v) else v for v in map(float, values)] for o, values in scores.items()}
            self._append({"key": key, "samples": [int(s) for s in samples], "scores": clean})

    def values(self, key: str, objective: str, samples: Sequence[int]) -> list[float]:
        """Scores of ``key`` on ``samples`` (all must be present)."""
        column = self.scores[key][objective]
        return [column[s] for s in samples]
