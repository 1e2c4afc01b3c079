"""The calling convention of the concept tools: ``Tool(model, layer=..., **settings)(x, ...)``.

A tool is built with the model, the layer (a module name as in ``model.named_modules()``) and its settings,
which are checked at once (unknown ones are rejected by name); it explains with any gradient-based method of
xaikit (default: LRP with the ``epsilon_plus_flat`` composite, as in Achtibat et al. 2023) and reads the
relevance inside the network through :class:`xaikit.propagation.record.Recorder`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..data import Data
from ..errors import check_input
from ..layers import capture, find_layer
from ..methods.base import Method, _checked_init
from ..methods.path import IntegratedGradients
from ..methods.resolve import DEFAULT_METHODS, RELEVANCE_METHODS, resolve_method
from ..modes import eval_semantics
from ..propagation.record import Recorder, Through, channel_axis, condition_masks, through_rows

#: methods whose relevance at a layer is defined (one backward pass per sample; input × modified gradient), and
#: Integrated Gradients (its layer relevance integrated along the path, :mod:`.layer_ig`)
GRADIENT_METHODS = (*RELEVANCE_METHODS, "integrated_gradients")


def make_method(model: nn.Module, method: str | Method | None, settings: dict | None) -> Method:
    """The method a concept tool explains with (:func:`~xaikit.methods.resolve.resolve_method`): a gradient-based
    method by name or spec, or a method object built on ``model``; default LRP ``epsilon_plus_flat``."""
    return resolve_method(model, method, settings, default=DEFAULT_METHODS["image"], allowed=GRADIENT_METHODS,
                          reason="has no relevance inside the network")


class ConceptTool:
    """Base of the concept tools: the model, one layer, the method that explains, and the channel axis.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Module name (``model.named_modules()``) whose output channels are the concepts.
    method : str, Method or None
        A gradient-based method: a name (``"lrp"``), a spec (``"lrp:composite=epsilon_gamma_box"``) or a method
        object built on ``model``; ``None``: ``DEFAULT_METHODS["image"]``, LRP with ``epsilon_plus_flat``
        (see :func:`~xaikit.methods.resolve.resolve_method`).
    method_settings : dict, optional
        Settings added to a method given by name or spec.
    axis : int or "auto"
        Channel axis of the layer output (``"auto"``: 1 for convolutions, the last for dense/transformer
        layers; ``1`` for the tokens of an ``(N, L, D)`` output).
    """

    def __init__(self, model: nn.Module, layer: str, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer, self.module = find_layer(model, layer)
        self.method = make_method(model, method, method_settings)
        if axis != "auto" and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be 'auto' or an int, got {axis!r}")
        self.axis = axis

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_init(cls.__dict__["__init__"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, layer={self.layer!r})"

    def check(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "x", self.model, allow_int=self.method.allow_integer_input)
        return x

    def record(self, x: torch.Tensor, target: Any = None, layers: list[str] | None = None,
               masks: dict[str, torch.Tensor] | None = None, keep=("relevance", "activation"), **call: Any):
        """Explain ``x`` with the method, recording ``layers`` (default: the tool's layer) under ``masks``.

        Returns ``(explanation, recorder)``.
        """
        layers = [self.layer] if layers is None else layers
        with eval_semantics(self.model):  # a model in training mode is explained in eval mode (restored after)
            if isinstance(self.method, IntegratedGradients):
                return self._record_ig(x, target, layers, masks, keep, **call)
            with Recorder(self.model, layers, masks=masks, axis=self.axis, keep=keep) as rec:
                expl = self.method(x, target, **call)
        return expl, rec

    def conditional(self, x: torch.Tensor, target: Any, sample: torch.Tensor, masks: dict[str, torch.Tensor],
                    layers: list[str] | None = None, **call: Any) -> tuple[Any, Recorder, Through]:
        """Explain ``x[sample[k]]`` under mask row ``k`` of each conditioned layer, keeping only the relevance
        that flows through all of them (CRP; the shortcut's relevance is excluded, see
        :func:`~xaikit.propagation.record.through_rows`).

        ``target`` is one class for all, one per sample of ``x`` or ``None`` (the prediction). Returns
        ``(explanation, recorder, through)`` over the batch rows that were run: ``through(expl.attribution)``
        are the ``K`` conditional heatmaps, ``through(rec[name].per_channel())`` a lower layer's relevance that
        flows through the conditions, ``expl.target[through.full]`` the explained output of each condition.
        """
        rows = through_rows(sample, masks)
        expl, rec = self.record(x[rows.sample], _per_row(target, x.shape[0], rows.sample), layers=layers or [],
                                masks=rows.masks, keep=("relevance",), **call)
        return expl, rec, rows

    def layer_output(self, x: torch.Tensor, args: tuple = (), kwargs: dict | None = None,
                     grad: bool = False) -> tuple[torch.Tensor, int, int]:
        """``(output, channels, axis)`` of the layer on ``x`` (one forward pass, no gradients unless ``grad``)."""
        with torch.set_grad_enabled(grad), eval_semantics(self.model), capture(self.model, self.module) as seen:
            self.model(x, *args, **(kwargs or {}))
        if not seen:
            raise ValueError(f"layer {self.layer!r} was not called in the forward pass; choose another layer")
        out = seen[-1]
        axis = channel_axis(self.module, out.ndim) if self.axis == "auto" else self.axis % out.ndim
        return out, out.shape[axis], axis

    def _record_ig(self, x, target, layers, masks, keep, **call):
        """Integrated Gradients: its relevance at each layer (:mod:`.layer_ig`), in a recorder-like result."""
        from .layer_ig import integrated_layer_relevance

        if masks:
            raise ValueError("method: conditioning (CRP) needs a single-pass method such as LRP or "
                             "InputXGradient; Integrated Gradients integrates over many passes")
        rec = Recorder(self.model, layers, axis=self.axis, keep=keep)
        for name in layers:
            relevance, activation, index, _ = integrated_layer_relevance(
                self.method, x, target, name, tuple(call.get("forward_args", ())), call.get("forward_kwargs"))
            recorded = rec[name]
            recorded.axis = channel_axis(rec.modules[name], activation.ndim) if self.axis == "auto" else \
                self.axis % activation.ndim
            recorded.shapes.append(activation.shape)
            recorded.activations.append(activation if "activation" in keep else None)
            recorded.relevances.append(relevance if "relevance" in keep else None)
        expl = self.method(x, target, **call)  # the input attribution and the resolved target
        return expl, rec

    def masks(self, concepts: Iterable, channels: int, argument: str = "concepts") -> torch.Tensor:
        return condition_masks(list(concepts), channels, argument)


def _per_row(target: Any, n: int, sample: torch.Tensor) -> Any:
    """The target of each batch row ``x[sample]``: a per-sample tensor or sequence is indexed by ``sample``."""
    if isinstance(target, torch.Tensor) and target.ndim == 1 and target.shape[0] == n:
        return target[sample]
    if isinstance(target, (list, tuple)) and len(target) == n:
        return [target[i] for i in sample.tolist()]
    if callable(target) and not isinstance(target, torch.Tensor):
        raise ValueError("target: conditional heatmaps need a class index per sample (an int, a sequence or "
                         "None for the prediction), not a callable")
    return target


def iterate_batches(data: Any, argument: str = "data") -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x, y)`` batches of ``data`` in any form of :class:`xaikit.data.Data` (data held in memory as one batch;
    a DataLoader or iterable in its own batches; a Dataset, folder or table 256 samples at a time)."""
    for x, y, _ in Data(data, batch_size=None, name=argument).batches():
        yield x, y
