"""Right for the right reasons (Ross, Hughes & Doshi-Velez, IJCAI 2017), and its relevance variant.

Ross et al. (eq. 1) add to the cross entropy the squared input gradient of the summed log-probabilities inside
annotation masks ``A`` (1 = "this input is a wrong reason"):

    L = CE(y, ŷ) + λ Σ_n Σ_d (A_nd ∂/∂x_nd Σ_k log ŷ_nk)²

The relevance variant penalises the LRP relevance (or gradient × input) of the true class inside the masks
instead (as in Schramowski et al. 2020 and Rieger et al. 2020 with other explainers). Both are plain functions
and an ``nn.Module`` loss for any training loop; the explanation is computed in training mode
(``create_graph=True``), so the parameters' gradients include the penalty's, and nothing else is touched.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_input
from ..methods.base import Method
from ..methods.gradient import Gradient
from ..methods.resolve import DEFAULT_METHODS
from ..settings import checked_init
from .explain import (LossParts, attribution, check_method, check_weight, deprecated_last, from_legacy,
                      log_prob_sum, make_explainer)


def check_masks(masks: Any, x: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """Masks that broadcast to ``x`` with one mask per sample: shaped like ``x``, or with size 1 in some
    non-batch dimensions (e.g. ``(N, 1, H, W)`` for all channels); bool or float in [0, 1]. Image masks
    ``(N, H, W)`` for images ``(N, C, H, W)`` (as the data sets of :mod:`xaikit.zoo` and the localisation
    metrics hold them) apply to every channel: they are read as ``(N, 1, H, W)``."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped like x, got {type(masks).__name__}")
    if x.ndim >= 4 and masks.ndim == x.ndim - 1 and masks.shape[0] == x.shape[0] and masks.shape[1:] == x.shape[2:]:
        masks = masks.unsqueeze(1)  # (N, H, W) pixel masks: one per sample, for all channels
    ok = masks.ndim == x.ndim and masks.shape[0] == x.shape[0] and all(
        m in (1, d) for m, d in zip(masks.shape[1:], x.shape[1:]))
    if not ok:
        raise ValueError(f"{name} has shape {tuple(masks.shape)} but x has {tuple(x.shape)}; give one mask per "
                         "sample shaped like x, or with size 1 where it applies to all entries (e.g. (N, 1, H, W))")
    if masks.device != x.device:
        raise ValueError(f"{name} is on {masks.device} but x is on {x.device}")
    if masks.dtype == torch.bool:
        return masks.to(x.dtype)
    if not masks.is_floating_point() or not torch.isfinite(masks).all():
        raise TypeError(f"{name} must be bool or finite floating point, got dtype {masks.dtype}")
    return masks.to(x.dtype)


def rrr_penalty(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, y: torch.Tensor | None = None,
                method: str | Method | None = None, method_settings: dict[str, Any] | None = None, *,
                explainer: str | Method | None = None, composite: Any = None) -> torch.Tensor:
    """The "wrong reason" penalty ``Σ_d (A_d · E_d)²`` averaged over the batch (a scalar with a graph).

    Parameters
    ----------
    model : nn.Module
    x : (N, ...) inputs
    masks : (N, ...) 1 (or True) where the model must not look, broadcastable to ``x`` per sample
    y : (N,) labels; the relevance variant explains the true class (required there)
    method : str, Method or None
        The explainer (:func:`~xaikit.methods.resolve.resolve_method`): ``None`` or ``"gradient"`` is Ross et
        al.'s ``E = ∂ Σ_k log ŷ_k / ∂x`` (``DEFAULT_METHODS["right_reasons"]``); any other method that supports
        ``create_graph=True`` gives the relevance of the true class, e.g. ``"lrp:composite=epsilon_plus"``,
        ``"input_x_gradient"`` or a method object built on ``model``.
    method_settings : dict, optional
        Settings added to a method given by name or spec.
    explainer, composite
        Deprecated: ``explainer="lrp", composite=C`` is ``method="lrp:composite=C"`` (``composite`` defaulted
        to ``"epsilon_plus"``).
    """
    method, method_settings = from_legacy(method, method_settings, explainer, composite, "rrr_penalty", "gradient")
    check_input(x, "x", model)
    weights = check_masks(masks, x)
    explaining = make_explainer(model, method, method_settings, default=DEFAULT_METHODS["right_reasons"])
    if type(explaining) is Gradient:  # Ross et al. (eq. 1): the input gradient of the summed log-probabilities
        target: Any = log_prob_sum
    else:
        if y is None:
            raise ValueError("y (the labels) is required for the relevance variant: it explains the true class")
        target = y
    attr = attribution(explaining, x, target)
    return (weights * attr).pow(2).flatten(1).sum(1).mean()


class RightForRightReasonsLoss(nn.Module):
    """``loss(model, x, y, masks) = CE(y, model(x)) + λ · rrr_penalty(...)`` (Ross et al. 2017, eq. 1).

    Parameters
    ----------
    lam : float
        λ ≥ 0, the weight of the penalty.
    method, method_settings
        The explainer, as for :func:`rrr_penalty` (default: the input gradient, as Ross et al.).
    task_loss : callable
        ``L(logits, y)``, cross entropy by default.
    explainer, composite
        Deprecated names of ``method`` (see :func:`rrr_penalty`).

    Calling it returns the total loss; ``return_parts=True`` returns a :class:`LossParts` (the loss, the
    logits with their graph and the detached terms ``"task"`` and ``"penalty"``). The module keeps no state
    of a call (``last`` and ``logits`` are deprecated views of the last call, detached).
    """

    @checked_init
    def __init__(self, lam: float = 10.0, method: str | Method | None = None,
                 method_settings: dict[str, Any] | None = None,
                 task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy, *,
                 explainer: str | Method | None = None, composite: Any = None) -> None:
        super().__init__()
        self.lam = check_weight(lam)
        method, method_settings = from_legacy(method, method_settings, explainer, composite,
                                              "RightForRightReasonsLoss", "gradient", stacklevel=6)
        check_method(method, method_settings)
        self.method, self.method_settings, self.task_loss = method, method_settings, task_loss

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *,
                return_parts: bool = False) -> torch.Tensor | LossParts:
        check_masks(masks, x)
        logits = model(x)
        task = self.task_loss(logits, y)
        if self.lam == 0:
            total, terms = task, {"task": float(task.detach()), "penalty": 0.0}
        else:
            penalty = rrr_penalty(model, x, masks, y, self.method, self.method_settings)
            total, terms = task + self.lam * penalty, {"task": float(task.detach()), "penalty": float(penalty.detach())}
        self._last = (terms, logits.detach())  # for the deprecated `last` and `logits` only (no graph kept)
        return LossParts(total, logits, terms) if return_parts else total

    last = deprecated_last("RightForRightReasonsLoss", "last")
    logits = deprecated_last("RightForRightReasonsLoss", "logits")
