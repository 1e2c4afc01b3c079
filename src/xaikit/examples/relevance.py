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

from ..batching import check_batch_size
from ..layers import find_layer
from ..methods.base import Method
from ..methods.resolve import DEFAULT_METHODS, RELEVANCE_METHODS, legacy_lrp_settings, passed_on, resolve_method
from ..propagation.composites import Composite
from ..propagation.record import Recorder
from ..targets import TargetSpec


def channel_relevance(model: nn.Module, x: torch.Tensor, layer: str, target: TargetSpec = None,
                      method: str | Method | None = None, normalise: bool = True, batch_size: int | str = "auto",
                      *, method_settings: dict[str, Any] | None = None, axis: int | str = "auto",
                      composite: str | Composite | None = None, **settings: Any) -> torch.Tensor:
    """Relevance per channel ``(N, C)`` of the output of module ``layer`` for ``target``.

    The relevance at the layer is :class:`~xaikit.propagation.record.Recorder`'s, summed over every axis but
    the batch and the channels. ``axis`` is the channel axis (``"auto"``: 1 for convolutions and outputs of 4
    or more dimensions, the last axis otherwise, e.g. the hidden units of an ``(N, L, D)`` transformer output;
    see :func:`~xaikit.propagation.record.channel_axis`; ``1`` gives the tokens of such an output).

    ``method``/``method_settings``: the explainer (:func:`~xaikit.methods.resolve.resolve_method`), default
    ``DEFAULT_METHODS["image"]`` (LRP ``epsilon_plus_flat``); any method with a relevance inside the network
    (``"input_x_gradient"``, ``"lrp:composite=epsilon_gamma_box"``) or such a method object built on
    ``model``. ``batch_size`` reaches a method given by name or spec unless its settings set it.
    ``composite=`` and LRP settings as keywords are deprecated (``method="lrp:composite=NAME"``).

    ``normalise``: divide each sample's vector by the sum of its absolute values (so samples with large and
    small logits are comparable, as in Dreyer et al. 2023); otherwise the vectors sum to the relevance that
    reaches the layer (the logit, up to what biases and ε absorb above it).
    """
    check_batch_size(batch_size)
    method, method_settings = legacy_lrp_settings(method, method_settings, composite, settings,
                                                  "channel_relevance", 4)
    method_settings = passed_on(method, method_settings, DEFAULT_METHODS["image"],
                                batch_size=None if batch_size == "auto" else batch_size)
    explaining = resolve_method(model, method, method_settings, default=DEFAULT_METHODS["image"],
                                allowed=RELEVANCE_METHODS, reason="has no relevance inside the network")
    name, _ = find_layer(model, layer)
    with Recorder(model, [name], axis=axis, keep=("relevance",)) as rec:
        explaining(x, target)
    relevance = rec[name].per_channel()
    if relevance.shape[0] != x.shape[0]:
        raise ValueError(f"layer {name!r} was called {relevance.shape[0] // x.shape[0]} times per pass; choose a "
                         "layer used once")
    if normalise:
        relevance = relevance / relevance.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return relevance.detach()
