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
from ..settings import checked_init
from .explain import LossParts, check_method, check_weight, deprecated_last, from_legacy, make_explainer


def normalised(relevance: torch.Tensor) -> torch.Tensor:
    """``R / max |R|`` per sample (in [−1, 1]; zero where a sample has no relevance)."""
    peak = relevance.flatten(1).abs().amax(1).view(-1, *([1] * (relevance.ndim - 1)))
    return torch.where(peak > 0, relevance / peak.clamp_min(torch.finfo(relevance.dtype).tiny), 0.0)


def layer_relevance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str,
                    method: str | Method | None = None, method_settings: dict[str, Any] | None = None, *,
                    explainer: str | Method | None = None, composite: Any = None) -> torch.Tensor:
    """``R = a ⊙ g`` at the output of ``layer`` for the classes ``y`` (detached), from one explained pass.

    ``method``/``method_settings``: the explainer (:func:`~xaikit.methods.resolve.resolve_method`), default
    ``DEFAULT_METHODS["training"]`` (LRP ``epsilon_plus``); ``explainer``/``composite`` are deprecated."""
    method, method_settings = from_legacy(method, method_settings, explainer, composite, "layer_relevance", "lrp")
    explaining = make_explainer(model, method, method_settings)
    with Recorder(model, [layer], keep=("relevance",)) as record:
        explaining(x.detach(), target=y, create_graph=True)  # the training-mode opt-in: no train-mode warning
    return record[layer].relevance.detach()


class ExplanationGuidedLoss(nn.Module):
    """``loss(model, x, y) = L(y, p(f)) + λ L(y, p((1 + R(f)) ⊙ f))`` at the layer named ``layer``.

    Parameters
    ----------
    layer : str
        The module (as in ``model.named_modules()``) whose output ``f`` is re-weighted.
    lam : float
        λ ≥ 0, the weight of the explanation-guided term (λ = 0: plain training).
    method, method_settings
        How ``R`` is computed (:func:`~xaikit.methods.resolve.resolve_method`): default
        ``DEFAULT_METHODS["training"]``, LRP with ``epsilon_plus``; any method supporting ``create_graph=True``
        by name or spec (``"input_x_gradient"``, ``"lrp:composite=epsilon"``) or as an object.
    task_loss : callable
        ``L(logits, y)``, cross entropy by default.
    explainer, composite
        Deprecated: ``explainer="lrp", composite=C`` is ``method="lrp:composite=C"``.

    Notes
    -----
    One training forward runs on the batch twice over (``[x, x]``); a forward hook, present only during that
    call, replaces the second half's ``f`` by ``f_lrp``. Layers after ``layer`` see both halves, so BatchNorm
    there in training mode takes its batch statistics over both. ``return_parts=True`` returns a
    :class:`~xaikit.improve.explain.LossParts` (the loss, ``p(f)`` with its graph, the terms ``"task"`` and
    ``"guided"``); the module keeps no state of a call (``last`` and ``logits`` are deprecated).
    """

    @checked_init
    def __init__(self, layer: str, lam: float = 1.0, method: str | Method | None = None,
                 method_settings: dict[str, Any] | None = None,
                 task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, *,
                 explainer: str | Method | None = None, composite: Any = None) -> None:
        super().__init__()
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
        self.layer, self.lam = layer, check_weight(lam)
        method, method_settings = from_legacy(method, method_settings, explainer, composite,
                                              "ExplanationGuidedLoss", "lrp", stacklevel=6)
        check_method(method, method_settings)
        self.method, self.method_settings, self.task_loss = method, method_settings, task_loss

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, return_parts: bool = False,
                explain_with: nn.Module | None = None) -> torch.Tensor | LossParts:
        """The loss on a batch. ``explain_with``: the module whose relevance at ``layer`` gives ``R`` (default
        ``model``); it must have a module named ``layer`` and give ``model``'s logits in eval semantics — for
        an episode of a prototypical network, :meth:`~xaikit.improve.fewshot.PrototypicalEpisode.classifier`
        (the prototypes as constant weights of the last layer)."""
        check_input(x, "x", model)
        _, module = find_layer(model, self.layer)
        if self.lam == 0:
            logits = model(x)
            task = self.task_loss(logits, y)
            return self._result(task, logits, {"task": float(task.detach()), "guided": 0.0}, return_parts)
        explained = model if explain_with is None else explain_with
        weights = 1 + normalised(layer_relevance(explained, x, y, self.layer, self.method, self.method_settings))
        n = x.shape[0]

        def reweight(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor) or out.shape[0] != 2 * n:
                raise TypeError(f"layer {self.layer!r} must return one tensor with the batch first")
            return torch.cat([out[:n], out[n:] * weights])

        with hooked(module, forward=reweight):
            both = model(torch.cat([x, x]))
        task, guided = self.task_loss(both[:n], y), self.task_loss(both[n:], y)
        terms = {"task": float(task.detach()), "guided": float(guided.detach())}
        return self._result(task + self.lam * guided, both[:n], terms, return_parts)

    def _result(self, total: torch.Tensor, logits: torch.Tensor, terms: dict[str, float],
                return_parts: bool) -> torch.Tensor | LossParts:
        self._last = (terms, logits.detach())  # for the deprecated `last` and `logits` only (no graph kept)
        return LossParts(total, logits, terms) if return_parts else total

    last = deprecated_last("ExplanationGuidedLoss", "last")
    logits = deprecated_last("ExplanationGuidedLoss", "logits")
