"""``xaikit explain --view dft|stft``: signals explained in the frequency or time-frequency domain.

Every method is put behind a virtual inspection layer (:class:`xaikit.signals.VirtualInspection`, Vielhaben et
al. 2024): LRP, gradient × input and Integrated Gradients redistribute their time-domain relevance through it,
the other methods run on the transform's coefficients. The raw attributions (``attributions.npz``) are then
shaped like the coefficients, and ``signal-<method>-<input>.png`` shows each signal with its relevance over time,
over frequency and (STFT) the spectrogram heatmap.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import viz
from ..explanation import Explanation
from ..methods.base import METHODS, Method
from ..signals import VirtualInspection
from ..signals.view import PROPAGATED
from .errors import UsageError
from .inputs import Inputs
from .specs import accepts, parse_spec

#: figures written per method (the first inputs); the raw attributions hold all of them
FIGURES = 8


def check_signals(inputs: Inputs) -> None:
    """``--view`` needs signals ``(N, C, T)`` (``.npy``/``.npz``/``.wav``): a usage error naming it else."""
    if inputs.kind != "tensor" or inputs.x.ndim != 3:
        raise UsageError(f"--view needs signals (N, C, T) from .npy, .npz or .wav inputs, got {inputs.kind} inputs "
                         f"of shape {tuple(inputs.x.shape)}; leave --view out for these inputs")


def in_view(args: argparse.Namespace, specs: list[str], methods: dict[str, Method], model: Any, regressor: bool
            ) -> dict[str, VirtualInspection]:
    """Each built method behind the virtual inspection layer ``args.view``, under the same label (a classifier's
    score: a regressor is a usage error).

    A propagated method (LRP, gradient × input, IG) is used as built; any other is built again by its spec on
    the model seen from the coefficients, with the run's ``batch_size`` and ``seed`` where it takes them.
    """
    if regressor:
        raise UsageError("--view explains a class score; this model has one output (a regressor): leave --view out")
    views = {}
    for spec, (label, method) in zip(specs, methods.items()):
        if _propagated(method):
            views[label] = VirtualInspection(model, args.view, method=method)
            continue
        given = parse_spec(spec)[1]
        extra = {key: value for key, value in (("batch_size", args.batch_size), ("seed", args.seed))
                 if key not in given and value is not None and accepts(type(method), key)}
        views[label] = VirtualInspection(model, args.view, method=spec, method_settings=extra or None)
    return views


def _propagated(method: Method) -> bool:
    return any(name in METHODS and isinstance(method, METHODS[name]) for name in PROPAGATED)


def write_figures(out: Path, inputs: Inputs, results: dict[str, Explanation]) -> list[str]:
    """``signal-<method>-<input>.png`` of the first :data:`FIGURES` inputs
    (:func:`xaikit.viz.plot_signal_relevance`)."""
    names = []
    for label, expl in results.items():
        for i, name in enumerate(inputs.names[:FIGURES]):
            file = f"signal-{viz.report.slug(label)}-{viz.report.slug(str(name))}.png"
            viz.save_figure(viz.plot_signal_relevance(expl, inputs.x, sample=i, title=f"{label}: {name}"), out / file)
            names.append(file)
    return names
