"""Concept-relevance vectors: the LRP relevance of each channel of a layer, per sample.

Under the engine's convention (relevance = activation × modified gradient) the relevance of a layer's output
``a`` is ``R = a ⊙ g_a``; summed over the spatial positions it gives one value per channel, the
concept-relevance vector that Dreyer et al. (2023) build prototypes from (CRP's relevance of concepts,
Achtibat et al. 2023). It is read by :class:`~xaikit.propagation.record.Recorder`, the one definition of
relevance at a layer: for a layer whose BatchNorm the engine folds into it, that of the folded output (what the
layer's rule redistributes), not the unfolded output times the folded layer's gradient.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers import find_layer
from ..methods.propagation import LRP
from ..propagation.composites import Composite
from ..propagation.record import Recorder
from ..targets import TargetSpec


def channel_relevance(model: nn.Module, x: torch.Tensor, layer: str, target: TargetSpec = None,
                      composite: str | Composite = "epsilon_plus_flat", normalise: bool = True,
                      batch_size: int | str = "auto", axis: int | str = "auto", **settings: Any) -> torch.Tensor:
    """Relevance per channel ``(N, C)`` of the output of module ``layer`` for ``target``.

    The relevance at the layer is :class:`~xaikit.propagation.record.Recorder`'s, summed over every axis but
    the batch and the channels. ``axis`` is the channel axis (``"auto"``: 1 for convolutions and outputs of 4
    or more dimensions, the last axis otherwise, e.g. the hidden units of an ``(N, L, D)`` transformer output;
    see :func:`~xaikit.propagation.record.channel_axis`; ``1`` gives the tokens of such an output).

    ``normalise``: divide each sample's vector by the sum of its absolute values (so samples with large and
    small logits are comparable, as in Dreyer et al. 2023); otherwise the vectors sum to the relevance that
    reaches the layer (the logit, up to what biases and ε absorb above it).
    """
    name, _ = find_layer(model, layer)
    with Recorder(model, [name], axis=axis, keep=("relevance",)) as rec:
        LRP(model, composite, batch_size=batch_size, **settings)(x, target)
    relevance = rec[name].per_channel()
    if relevance.shape[0] != x.shape[0]:
        raise ValueError(f"layer {name!r} was called {relevance.shape[0] // x.shape[0]} times per pass; choose a "
                         "layer used once")
    if normalise:
        relevance = relevance / relevance.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return relevance.detach()
