"""``xaikit explain --methods anchors counterfactual:target=1`` on table rows and images: rules as text,
counterfactuals as tables with the changed cells marked (``rules.md``/``rules.txt``,
``counterfactuals.md``/``counterfactuals.csv``), and ``index.html`` with both (images: each anchor shown with the
other parts faded, each counterfactual beside its input with its change).

These explainers are not attribution methods. On tables they take the rows given with ``-i`` (a CSV) both as the
rows to explain and as the data set they sample from (anchors) or measure distances in (counterfactuals); on images
anchors fix superpixels (``slic:50`` by default) and counterfactuals search the pixels within the model's input
range (``counterfactuals.npz`` holds them).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..counterfactuals import Counterfactuals
from ..methods.resolve import parse_spec
from ..rules import Anchors
from .. import viz
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
                 specs: list[tuple[str, dict[str, Any]]], out: Path, input_names: list[str] | None = None,
                 low: float | None = None, high: float | None = None) -> list[str]:
    """Run each anchors/counterfactual spec on the rows ``x`` (N, D) or images (N, C, H, W); write the files and
    ``index.html``; return their names."""
    if x.ndim == 4 and x.is_floating_point():
        return explain_images(model, x, specs, out, input_names, low, high)
    if x.ndim != 2:
        raise UsageError("anchors and counterfactuals explain table rows (a CSV with -i, one sample per row) or "
                         f"images (N, C, H, W); got inputs of shape {tuple(x.shape)}")
    names = feature_names or [f"x{j}" for j in range(x.shape[1])]
    written, sections = [], []
    for kind, given in specs:
        target, settings = _settings(kind, given)
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
            sections.append(viz.rules_section([result.text(i) for i in range(len(result.rules))], input_names))
        else:
            if target is None:
                raise UsageError("counterfactual needs the wanted class: counterfactual:target=CLASS")
            result = built(x.double(), target=target)
            (out / "counterfactuals.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            result.to_csv(out / "counterfactuals.csv")
            written += ["counterfactuals.md", "counterfactuals.csv"]
            sections.append(viz.counterfactuals_section(
                result.x, result.counterfactuals, result.found, result.original, result.predicted, input_names,
                result.columns.names, labels=result.columns.label))
    viz.write_report(out, sections, title="xaikit explain: rules and counterfactuals")
    return written + ["index.html"]


def _settings(kind: str, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    settings = dict(settings)
    target = settings.pop("target", None)
    for key in ("immutable", "categorical"):
        if isinstance(settings.get(key), str):
            settings[key] = settings[key].split("+")  # several columns: immutable=age+sex
    return target, settings


def explain_images(model: Any, x: Any, specs: list[tuple[str, dict[str, Any]]], out: Path,
                   input_names: list[str] | None, low: float | None, high: float | None) -> list[str]:
    """Anchors (superpixels) and counterfactuals (pixels within ``[low, high]``, default the inputs' range) of
    images: ``rules.txt``/``rules.md``, ``counterfactuals.md``/``.csv``/``.npz`` and ``index.html``."""
    import numpy as np

    names = input_names or [f"input {i}" for i in range(x.shape[0])]
    written, sections = [], []
    span = (float(x.min()) if low is None else low, float(x.max()) if high is None else high)
    for kind, given in specs:
        target, settings = _settings(kind, given)
        try:
            if kind == "anchors":
                built = Anchors(model, **settings)
            else:
                built = Counterfactuals(model, **{"feature_range": span, **settings})
        except TypeError as err:
            raise UsageError(f"{kind}: {err}") from None
        if kind == "anchors":
            result = built(x, target=target)
            (out / "rules.txt").write_text(f"{result}\n", encoding="utf-8")
            (out / "rules.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            written += ["rules.txt", "rules.md"]
            sections.append(viz.rules_section([result.text(i) for i in range(len(result.rules))], names,
                                              folder=out, images=x, regions=built.regions(x, result), low=low,
                                              high=high))
        else:
            if target is None:
                raise UsageError("counterfactual needs the wanted class: counterfactual:target=CLASS")
            result = built(x, target=target)
            (out / "counterfactuals.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
            result.to_csv(out / "counterfactuals.csv")
            np.savez_compressed(out / "counterfactuals.npz", x=x.detach().cpu().numpy(),
                                counterfactuals=result.counterfactuals.detach().cpu().numpy(),
                                found=result.found.numpy(), target=result.target.numpy(),
                                predicted=result.predicted.numpy())
            written += ["counterfactuals.md", "counterfactuals.csv", "counterfactuals.npz"]
            sections.append(viz.counterfactuals_section(
                x, result.counterfactuals, result.found, result.original, result.predicted, names, folder=out,
                low=span[0], high=span[1], title=f"Counterfactuals (wanted class: {target})"))
    viz.write_report(out, sections, title="xaikit explain: rules and counterfactuals")
    return written + ["index.html"]



def report_section(model: Any, x: Any, names: list[str], out: Path, low: float | None, high: float | None,
                   title: str) -> "viz.Section":
    """``xaikit report --sections contrastive``: each image's anchor (``slic:25`` superpixels, τ = 0.95) and its
    counterfactual for its runner-up class (the model's second highest score), as one report section."""
    import torch

    from ..batching import batched_forward
    from ..modes import eval_semantics

    with torch.no_grad(), eval_semantics(model):
        runner_up = batched_forward(model, x, 16).topk(2, dim=1).indices[:, 1].cpu()
    anchors = Anchors(model, features="slic:25", samples=64, max_samples=1024)
    rules = anchors(x)
    span = (float(x.min()) if low is None else low, float(x.max()) if high is None else high)
    result = Counterfactuals(model, feature_range=span, steps=150, learning_rate=0.05)(x, target=runner_up)
    first = viz.rules_section([rules.text(i) for i in range(len(rules.rules))], names, folder=out, images=x,
                              regions=anchors.regions(x, rules), low=low, high=high, prefix="report_anchors_")
    second = viz.counterfactuals_section(x, result.counterfactuals, result.found, result.original, result.predicted,
                                         names, folder=out, low=span[0], high=span[1],
                                         prefix="report_counterfactuals_")
    body = (viz.report.about("Rules: the superpixels that hold the prediction (anchors, precision ≥ 0.95 on "
                             "samples where the other superpixels show the image's mean colour). "
                             "Counterfactuals: the smallest change of the pixels that makes the model choose its "
                             "runner-up class (gradient search within the input range).")
            + "<h3>Rules (anchors)</h3>" + first.html
            + "<h3>Counterfactuals (to the runner-up class)</h3>" + second.html)
    return viz.html_section(title, body)
