"""Concept-relevance vectors: the LRP relevance of each channel of a layer, per sample.

Under the engine's convention (relevance = activation × modified gradient) the relevance of a layer's output
``a`` is ``R = a ⊙ g_a``; summed over the spatial positions it gives one value per channel, the
concept-relevance vector that Dreyer et al. (2023) build prototypes from (CRP's relevance of concepts,
Achtibat et al. 2023). The modified gradient ``g_a`` is read with a tensor hook during one batched LRP call.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..methods.cam import find_layer
from ..methods.propagation import LRP
from ..propagation.composites import Composite
from ..targets import TargetSpec


def channel_relevance(model: nn.Module, x: torch.Tensor, layer: str, target: TargetSpec = None,
                      composite: str | Composite = "epsilon_plus_flat", normalise: bool = True,
                      batch_size: int | str = "auto", **settings: Any) -> torch.Tensor:
    """Relevance per channel ``(N, C)`` of the output of module ``layer`` for ``target``.

    ``normalise``: divide each sample's vector by the sum of its absolute values (so samples with large and
    small logits are comparable, as in Dreyer et al. 2023); otherwise the vectors sum to the relevance that
    reaches the layer (the logit, up to what biases and ε absorb above it).
    """
    name, module = find_layer(model, layer)
    pieces: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        activation = output.detach()
        output.register_hook(lambda grad: pieces.append((activation * grad).flatten(2).sum(2)
                                                        if activation.ndim > 2 else activation * grad))

    handle = module.register_forward_hook(hook)
    try:
        LRP(model, composite, batch_size=batch_size, **settings)(x, target)
    finally:
        handle.remove()
    if not pieces:
        raise ValueError(f"no relevance reached layer {name!r}; is it used in the forward pass?")
    relevance = torch.cat(pieces)  # chunks run in the order of the samples
    if relevance.shape[0] != x.shape[0]:
        raise ValueError(f"layer {name!r} was called {len(pieces)} times per pass; choose a layer used once")
    if normalise:
        relevance = relevance / relevance.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return relevance.detach()
