"""Explanations that enter a loss: the methods of :mod:`xaikit.methods` called with ``create_graph=True``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check_choice, check_positive
from ..methods.base import Method
from ..methods.gradient import Gradient, InputXGradient
from ..methods.propagation import LRP
from ..targets import TargetSpec

#: explainers by name for the training tools: "gradient" (input gradient), "input_x_gradient", "lrp"
EXPLAINERS = ("gradient", "input_x_gradient", "lrp")


def make_explainer(model: nn.Module, explainer: str | Method = "gradient", composite: Any = "epsilon_plus") -> Method:
    """A method object for a training-time explanation: a name of :data:`EXPLAINERS` or a method object
    that supports ``create_graph=True`` (its model must be ``model``)."""
    if isinstance(explainer, Method):
        if not explainer.differentiable:
            raise ValueError(f"explainer {explainer.name} does not support create_graph=True; use one of "
                             f"{', '.join(EXPLAINERS)} or an LRP object")
        if explainer.model is not model:
            raise ValueError("explainer was built for another model; build it with the model being trained")
        return explainer
    check_choice(explainer, "explainer", EXPLAINERS)
    if explainer == "lrp":
        return LRP(model, composite=composite)
    return Gradient(model) if explainer == "gradient" else InputXGradient(model)


def attribution(method: Method, x: torch.Tensor, target: TargetSpec, second_order: bool = True) -> torch.Tensor:
    """``method``'s attribution for ``target``, differentiable w.r.t. the parameters (and ``x``'s history)
    when ``second_order``; otherwise a constant (detached)."""
    expl = method(x, target=target, create_graph=True)
    return expl.attribution if second_order else expl.attribution.detach()


def check_weight(value: Any, name: str = "lam") -> float:
    """A loss weight: a finite number ≥ 0."""
    check_positive(value, name, allow_zero=True)
    if value != value or value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def log_prob_sum(output: torch.Tensor) -> torch.Tensor:
    """``Σ_k log softmax(output)_k`` per sample: the score whose input gradient Ross et al. (2017, eq. 1)
    penalise."""
    return output.log_softmax(-1).sum(-1)
