"""One export for every result: its rows as pandas, Markdown, CSV and JSON (foundation module).

Every result a public tool returns is named ``<Tool>Result`` (``TuneResult``, ``BenchmarkResult``,
``ReferenceSamplesResult`` ...) and derives from :class:`ResultExport`. A result class implements one method,
``_rows()``: its table as a list of dicts of plain values (str, int, float, bool, None, or lists of them), one
dict per row, the same keys in every row. The four exports are built on it and have one signature each:

- ``to_pandas()``: a ``pandas.DataFrame`` of the rows (pandas is needed only here: ``pip install pandas`` or the
  extra ``xaikit[run]``);
- ``to_markdown(digits=4, limit=None)``: a Markdown table of the rows (numbers to ``digits`` significant digits,
  ``limit``: the first rows only), with the class's notes around it;
- ``to_csv(path=None)``: the rows as CSV (one line per row, a header);
- ``to_json(path=None)``: ``{"result": class name, "rows": [...], ...}`` with the class's extra keys (e.g. the
  per-sample scores of a benchmark); NaN and infinities become ``null``.

``to_csv``/``to_json`` return the text, or, given ``path``, write it there and return the ``Path``.
A class may present its cells in Markdown (:meth:`ResultExport._markdown_cell`), add text around the table
(:meth:`ResultExport._markdown_notes`) and keys to the JSON (:meth:`ResultExport._json_extra`); the rows stay the
same in every export.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any


__all__ = ["ResultExport", "plain"]


def plain(value: Any) -> Any:
    """``value`` as a plain Python value: tensors and arrays become numbers or (nested) lists, paths and other
    objects their text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    tolist = getattr(value, "tolist", None)  # torch tensors, numpy arrays and numpy scalars
    if callable(tolist):
        return plain(tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _text(value: Any, digits: int | None = None) -> str:
    """A cell as text: ``None`` empty, floats to ``digits`` significant digits (all of them without)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a" if digits is not None else "nan"
        return f"{value:.{digits}g}" if digits is not None else repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


class ResultExport:
    """The exports of a result (see the module docstring); subclasses implement :meth:`_rows`."""

    def _rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must implement _rows() to be exported")

    # -- hooks a result class may override ------------------------------------------------------------------
    def _markdown_cell(self, row: dict[str, Any], key: str, digits: int) -> str:
        """The Markdown text of ``row[key]`` (default: numbers to ``digits`` significant digits)."""
        return _text(row[key], digits)

    def _markdown_notes(self) -> tuple[str, str]:
        """Text before and after the Markdown table (default: none)."""
        return "", ""

    def _json_extra(self) -> dict[str, Any]:
        """Keys the JSON holds besides ``result`` and ``rows`` (default: none)."""
        return {}

    # -- the exports -----------------------------------------------------------------------------------------
    def _plain_rows(self) -> tuple[list[str], list[dict[str, Any]]]:
        rows = [{str(k): plain(v) for k, v in row.items()} for row in self._rows()]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return columns, [{k: row.get(k) for k in columns} for row in rows]

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (one row per row of the result)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(f"{type(self).__name__}.to_pandas() needs pandas: pip install pandas (or the extra "
                              "xaikit[run]); to_csv(), to_json() and to_markdown() work without it") from err
        columns, rows = self._plain_rows()
        return pd.DataFrame(rows, columns=columns)

    def to_markdown(self, digits: int = 4, limit: int | None = None) -> str:
        """The rows as a Markdown table: numbers to ``digits`` significant digits, the first ``limit`` rows
        (``None``: all), with the result's notes before and after it."""
        if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
            raise ValueError(f"digits must be an int >= 1, got {digits!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be None (all rows) or an int >= 0, got {limit!r}")
        columns, rows = self._plain_rows()
        shown = rows if limit is None else rows[:limit]
        numeric = [all(isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows if r[k] is not None)
                   and any(r[k] is not None for r in rows) for k in columns]
        escape = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(escape(k) for k in columns) + " |",
                 "|" + "".join("---:|" if n else "---|" for n in numeric)]
        lines += ["| " + " | ".join(escape(self._markdown_cell(row, k, digits)) for k in columns) + " |"
                  for row in shown]
        if len(shown) < len(rows):
            lines.append(f"\n({len(rows) - len(shown)} more rows: to_csv() and to_json() hold all)")
        before, after = self._markdown_notes()
        return "\n\n".join(part for part in (before, "\n".join(lines), after) if part)

    def to_csv(self, path: str | Path | None = None) -> str | Path:
        """The rows as CSV text (a header, one line per row); written to ``path`` (and the ``Path`` returned)
        when given."""
        columns, rows = self._plain_rows()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(row[k]) for k in columns] for row in rows)
        return _write(buffer.getvalue(), path)

    def to_json(self, path: str | Path | None = None) -> str | Path:
        """``{"result": class name, "rows": [...], ...extra}`` as JSON text (NaN as ``null``); written to ``path``
        (and the ``Path`` returned) when given."""
        _, rows = self._plain_rows()
        document = {"result": type(self).__name__, "rows": rows, **plain(self._json_extra())}
        text = json.dumps(_json_safe(document), indent=1, ensure_ascii=False)
        return _write(text + "\n", path)


def _write(text: str, path: str | Path | None) -> str | Path:
    if path is None:
        return text
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path
