"""The representation of a sample at a named layer: a module ``φ(x)`` that runs the model up to that layer.

:class:`LayerFeatures` wraps the user's model without changing it: a forward hook registered for one call
captures the layer's output (or, by default, the input of the last layer with parameters, the penultimate
representation a classifier head sees), stops the forward pass there and pools the result to ``(N, D)``.
Because it is an ``nn.Module`` whose output is that representation, every method of xaikit (LRP, BiLRP,
gradients) can explain it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import check_choice
from ..layers import capture, find_layer, last_layer
from ..modes import FollowsModel
from ..settings import checked_init

POOLS = ("mean", "max", "flatten")


class LayerFeatures(FollowsModel, nn.Module):
    """``φ(x)``: the model's representation of ``x`` at a named layer, pooled to ``(N, D)``.

    Parameters
    ----------
    model : nn.Module
        The model (not modified; the hook lives for one call).
    layer : str, optional
        A name from ``model.named_modules()``: its *output* is the representation. Default ``None``: the
        *input* of the last layer with parameters (the penultimate features of a classifier). A wrong name
        raises a ValueError that suggests the closest names.
    pool : "mean", "max", "flatten" or callable
        How a representation with more than two dimensions ``(N, C, *spatial)`` becomes ``(N, D)``: the mean
        or maximum over the spatial positions (``D = C``), every value (``D = C·H·W``), or a function.
    """

    @checked_init
    def __init__(self, model: nn.Module, layer: str | None = None, pool: str | Callable[[torch.Tensor], torch.Tensor] = "mean") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(pool):
            check_choice(pool, "pool", POOLS)
        self.model = model
        if layer is None:
            self.layer, self.module = last_layer(model)
            self.use_input = True
        else:
            self.layer, self.module = find_layer(model, layer)
            self.use_input = False
        self.pool = pool

    @property
    def label(self) -> str:
        """``"input of head"`` or ``"features.9"``: what the representation is."""
        name = self.layer or "the model"  # "": the model itself is the layer
        return f"input of {name}" if self.use_input else name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with capture(self.model, self.module, inputs=self.use_input, stop=True) as captured:
            self.model(x, *args, **kwargs)  # stops once the layer has run
        if not captured:
            raise ValueError(f"layer {self.label!r} was not used in the model's forward pass; choose another layer")
        value = captured[0]
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != x.shape[0]:
            raise ValueError(f"layer {self.label!r} gives {type(value).__name__}, not a (batch, ...) tensor")
        return pool_features(value, self.pool)


def pool_features(value: torch.Tensor, pool: str | Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, D)`` by ``pool`` (see :class:`LayerFeatures`)."""
    if callable(pool):
        out = pool(value)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != value.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"pool must return a ({value.shape[0]}, D) tensor, got {got}")
        return out
    if value.ndim == 1:
        return value[:, None]
    if value.ndim == 2 or pool == "flatten":
        return value.flatten(1)
    spatial = tuple(range(2, value.ndim))
    return value.mean(spatial) if pool == "mean" else value.amax(spatial)
