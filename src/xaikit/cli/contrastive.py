"""``xaikit explain --methods anchors counterfactual:target=1`` on table rows: rules as text, counterfactuals as
tables with the changed cells marked (``rules.md``/``rules.txt``, ``counterfactuals.md``/``counterfactuals.csv``).

These explainers are not attribution methods: they take the rows given with ``-i`` (a CSV) both as the rows to
explain and as the data set they sample from (anchors) or measure distances in (counterfactuals).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..counterfactuals import Counterfactuals
from ..methods.resolve import parse_spec
from ..rules import Anchors
from .errors import UsageError

#: spec names that this module handles (the others are attribution methods)
NAMES = {"anchors": "anchors", "anchor": "anchors", "counterfactual": "counterfactuals",
         "counterfactuals": "counterfactuals"}


def split(specs: list[str]) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """``(attribution specs, [(kind, settings), …])``: anchors and counterfactual specs taken out."""
    plain, special = [], []
    for text in specs:
        name = text.partition(":")[0].strip()
        if name not in NAMES:
            plain.append(text)  # an attribution method (checked, and its spec parsed, where methods are)
            continue
        try:
            special.append((NAMES[name], parse_spec(text)[1]))
        except ValueError as err:
            raise UsageError(f"{text!r}: {err}") from None
    return plain, special


def explain_rows(args: argparse.Namespace, model: Any, x: Any, feature_names: list[str] | None,
                 specs: list[tuple[str, dict[str, Any]]], out: Path) -> list[str]:
    """Run each anchors/counterfactual spec on the rows ``x`` (N, D); write the files; return their names."""
    if x.ndim != 2:
        raise UsageError("anchors and counterfactuals explain table rows: give a CSV with -i (one sample per row)")
    names = feature_names or [f"x{j}" for j in range(x.shape[1])]
    written = []
    for kind, settings in specs:
        settings = dict(settings)
        target = settings.pop("target", None)
        for key in ("immutable", "categorical"):
            if isinstance(settings.get(key), str):
                settings[key] = settings[key].split("+")  # several columns: immutable=age+sex
        tool = Anchors if kind == "anchors" else Counterfactuals
        try:
            built = tool(model, data=x.double(), feature_names=names, **settings)
        except TypeError as err:
            raise UsageError(f"{kind}: {err}") from None
        if kind == "anchors":
            result = built(x.double(), target=target)
            (out / "rules.txt").write_text(f"{result}\n", encoding="utf-8")
            (out / "rules.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            written += ["rules.txt", "rules.md"]
        else:
            if target is None:
                raise UsageError("counterfactual needs the wanted class: counterfactual:target=CLASS")
            result = built(x.double(), target=target)
            (out / "counterfactuals.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            result.to_csv(out / "counterfactuals.csv")
            written += ["counterfactuals.md", "counterfactuals.csv"]
    return written

