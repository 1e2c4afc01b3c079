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

from ..errors import check_choice, check_input
from ..methods.base import Method
from .explain import EXPLAINERS, attribution, check_weight, log_prob_sum, make_explainer


def check_masks(masks: Any, x: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """Masks that broadcast to ``x`` with one mask per sample: shaped like ``x``, or with size 1 in some
    non-batch dimensions (e.g. ``(N, 1, H, W)`` for all channels); bool or float in [0, 1]."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped like x, got {type(masks).__name__}")
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
                explainer: str | Method = "gradient", composite: Any = "epsilon_plus") -> torch.Tensor:
    """The "wrong reason" penalty ``Σ_d (A_d · E_d)²`` averaged over the batch (a scalar with a graph).

    Parameters
    ----------
    model : nn.Module
    x : (N, ...) inputs
    masks : (N, ...) 1 (or True) where the model must not look, broadcastable to ``x`` per sample
    y : (N,) labels; the relevance variant explains the true class (required there)
    explainer : ``"gradient"`` (Ross et al.: ``E = ∂ Σ_k log ŷ_k / ∂x``), ``"input_x_gradient"`` or ``"lrp"``
        (``E`` = relevance of the true class), or a method object that supports ``create_graph=True``
    composite : the LRP composite for ``explainer="lrp"``
    """
    check_input(x, "x", model)
    weights = check_masks(masks, x)
    method = make_explainer(model, explainer, composite)
    if explainer == "gradient":
        target: Any = log_prob_sum
    else:
        if y is None:
            raise ValueError("y (the labels) is required for the relevance variant: it explains the true class")
        target = y
    attr = attribution(method, x, target)
    return (weights * attr).pow(2).flatten(1).sum(1).mean()


class RightForRightReasonsLoss(nn.Module):
    """``loss(model, x, y, masks) = CE(y, model(x)) + λ · rrr_penalty(...)`` (Ross et al. 2017, eq. 1).

    Returns the total loss; ``last`` holds the parts (``"task"``, ``"penalty"``, detached floats) and
    ``logits`` the model output of the last call (with its graph).
    """

    def __init__(self, lam: float = 10.0, explainer: str | Method = "gradient", composite: Any = "epsilon_plus",
                 task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> None:
        super().__init__()
        self.lam = check_weight(lam)
        if not isinstance(explainer, Method):
            check_choice(explainer, "explainer", EXPLAINERS)
        self.explainer, self.composite, self.task_loss = explainer, composite, task_loss
        self.last: dict[str, float] = {}
        self.logits: torch.Tensor | None = None

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        check_masks(masks, x)
        self.logits = model(x)
        task = self.task_loss(self.logits, y)
        if self.lam == 0:
            self.last = {"task": float(task.detach()), "penalty": 0.0}
            return task
        penalty = rrr_penalty(model, x, masks, y, self.explainer, self.composite)
        self.last = {"task": float(task.detach()), "penalty": float(penalty.detach())}
        return task + self.lam * penalty
