"""Explanation-guided training (Sun et al., ICPR 2020, "Explanation-guided training for cross-domain few-shot
classification"; LRP-IFT, Sun et al., Information Fusion 2021).

At a chosen layer with output ``f`` the relevance ``R(f)`` of the true class (LRP by default), normalised per
sample to [−1, 1] by its largest magnitude, re-weights the features, and the loss adds the task loss of the
re-weighted prediction:

    f_lrp = (1 + R(f)) ⊙ f,        L = L(y, p(f)) + λ L(y, p(f_lrp))

Prediction at test time uses the unweighted features ``p(f)``: the model is unchanged, only its training
differs. ``R`` is recorded with :class:`~xaikit.propagation.record.Recorder` in one explained pass (eval
semantics, no buffer written) and enters the loss as a constant weighting, as in the paper.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_input
from ..layers import find_layer, hooked
from ..methods.base import Method
from ..propagation.record import Recorder
from .explain import check_weight, make_explainer


def normalised(relevance: torch.Tensor) -> torch.Tensor:
    """``R / max |R|`` per sample (in [−1, 1]; zero where a sample has no relevance)."""
    peak = relevance.flatten(1).abs().amax(1).view(-1, *([1] * (relevance.ndim - 1)))
    return torch.where(peak > 0, relevance / peak.clamp_min(torch.finfo(relevance.dtype).tiny), 0.0)


def layer_relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str,
                    explainer: str | Method = "lrp", composite: Any = "epsilon_plus") -> torch.Tensor:
    """``R = a ⊙ g`` at the output of ``layer`` for the classes ``y`` (detached), from one explained pass."""
    method = make_explainer(model, explainer, composite)
    with Recorder(model, [layer], keep=("relevance",)) as record:
        method(x.detach(), target=y, create_graph=True)  # the training-mode opt-in: no train-mode warning
    return record[layer].relevance.detach()


class ExplanationGuidedLoss(nn.Module):
    """``loss(model, x, y) = L(y, p(f)) + λ L(y, p((1 + R(f)) ⊙ f))`` at the layer named ``layer``.

    Parameters
    ----------
    layer : str
        The module (as in ``model.named_modules()``) whose output ``f`` is re-weighted.
    lam : float
        λ ≥ 0, the weight of the explanation-guided term (λ = 0: plain training).
    explainer, composite
        How ``R`` is computed: ``"lrp"`` with a composite (default ``"epsilon_plus"``), ``"input_x_gradient"``,
        ``"gradient"`` or a method object supporting ``create_graph=True``.
    task_loss : callable
        ``L(logits, y)``, cross entropy by default.

    Notes
    -----
    One training forward runs on the batch twice over (``[x, x]``); a forward hook, present only during that
    call, replaces the second half's ``f`` by ``f_lrp``. Layers after ``layer`` see both halves, so BatchNorm
    there in training mode takes its batch statistics over both. ``logits`` holds ``p(f)`` of the last call.
    """

    def __init__(self, layer: str, lam: float = 1.0, explainer: str | Method = "lrp",
                 composite: Any = "epsilon_plus",
                 task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> None:
        super().__init__()
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
        self.layer, self.lam = layer, check_weight(lam)
        self.explainer, self.composite, self.task_loss = explainer, composite, task_loss
        self.last: dict[str, float] = {}
        self.logits: torch.Tensor | None = None

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", model)
        _, module = find_layer(model, self.layer)
        if self.lam == 0:
            self.logits = model(x)
            task = self.task_loss(self.logits, y)
            self.last = {"task": float(task.detach()), "guided": 0.0}
            return task
        weights = 1 + normalised(layer_relevance(model, x, y, self.layer, self.explainer, self.composite))
        n = x.shape[0]

        def reweight(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor) or out.shape[0] != 2 * n:
                raise TypeError(f"layer {self.layer!r} must return one tensor with the batch first")
            return torch.cat([out[:n], out[n:] * weights])

        with hooked(module, forward=reweight):
            both = model(torch.cat([x, x]))
        self.logits = both[:n]
        task, guided = self.task_loss(both[:n], y), self.task_loss(both[n:], y)
        self.last = {"task": float(task.detach()), "guided": float(guided.detach())}
        return task + self.lam * guided
