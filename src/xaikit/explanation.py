"""The result object every attribution method returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Explanation:
    """An attribution and everything needed to interpret it.

    Attributes
    ----------
    attribution : torch.Tensor
        Relevance of every input element, shaped like the explained input ``x``.
    target : torch.LongTensor
        ``(N,)`` index of the explained output per sample (``-1`` where the target was a callable; for
        :class:`~xaikit.NextToken` the token).
    output : torch.Tensor
        Model output ``(N, ...)`` of the forward pass that was explained (detached).
    method : str
        Human-readable method name with its main setting, e.g. ``"LRP(epsilon_gamma_box)"``.
    info : dict
        Method-specific diagnostics: ``"conservation"`` (LRP), ``"convergence_delta"`` (IG/Shapley),
        ``"coverage"`` (propagation), ``"time_s"``, ``"seed"``, ...
    """

    attribution: torch.Tensor
    target: torch.Tensor
    output: torch.Tensor
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shape = tuple(self.attribution.shape)
        return f"Explanation(method={self.method!r}, attribution={shape}, target={self.target.tolist()})"

    def __len__(self) -> int:
        return self.attribution.shape[0]
