"""Pruning by explaining (Yeom et al., Pattern Recognit. 2021): rank the channels (or units) of named layers by
their relevance over reference samples and remove the least relevant, compared with the classic criteria.

Criteria (``channel_importance``), each per output channel of a layer, averaged over reference samples ``x``
explained for their classes ``y``:

- ``"lrp"``: the summed relevance ``Σ_{h,w} R`` at the layer output (Yeom et al. eq. 9), recorded with
  :class:`~xaikit.propagation.record.Recorder` in one LRP pass (composite ``epsilon_plus`` by default);
- ``"taylor"``: ``|Σ_{h,w} a ∂f_y/∂a|`` (first-order Taylor expansion, Molchanov et al. 2017);
- ``"gradient"``: ``Σ_{h,w} |∂f_y/∂a|``;
- ``"weight"``: the L2 norm of the layer's weights of that output channel (Li et al. 2017).

Pruning a channel sets the layer's output in that channel to zero, through a forward hook that exists only
inside :func:`pruned` (the model's weights are not changed; equal to removing the filter when the layer is a
convolution followed by a ReLU).

Yeom et al.'s setting: the criteria are computed on a few reference samples per class
(:func:`reference_samples`), each layer's scores are normalised (:func:`layer_normalised`: relevance by the
layer's total, which LRP conserves; weight norms L1; Taylor and gradient L2) and the units of all layers are
ranked together (``prune_plan(..., scope="global")``), so that a layer that matters less loses more units.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import check_choice, check_input
from ..layers import Hooks, find_layers
from ..methods.base import Method
from ..methods.resolve import DEFAULT_METHODS, RELEVANCE_METHODS, legacy_lrp_settings, resolve_method
from ..modes import eval_semantics
from ..propagation.record import Recorder, channel_axis
from .layers import capture

CRITERIA = ("lrp", "taylor", "gradient", "weight")
SCOPES = ("layer", "global")


def _channel_sums(t: torch.Tensor, axis: int) -> torch.Tensor:
    """``(N, C)``: ``t`` summed over every axis but the batch and the channel axis."""
    moved = t.movedim(axis, -1)
    return moved.reshape(moved.shape[0], -1, moved.shape[-1]).sum(1)


def channel_importance(model: nn.Module, layers: Sequence[str] | str, x: torch.Tensor, y: torch.Tensor,
                       criterion: str = "lrp", method: str | Method | None = None,
                       method_settings: dict[str, Any] | None = None, *,
                       composite: Any = None) -> dict[str, torch.Tensor]:
    """``{layer: (C,) importance}`` of every output channel of the named layers (see the module docstring).

    ``method``/``method_settings``: the explainer of the relevance criterion ``"lrp"``
    (:func:`~xaikit.methods.resolve.resolve_method`; default ``DEFAULT_METHODS["training"]``, LRP
    ``epsilon_plus``; any method with a relevance inside the network); ``composite=C`` is deprecated for
    ``method="lrp:composite=C"``."""
    check_choice(criterion, "criterion", CRITERIA)
    given = (method is not None and composite is None) or method_settings is not None
    method, method_settings = legacy_lrp_settings(method, method_settings, composite, {}, "channel_importance", 4)
    explaining = None
    if criterion == "lrp":
        explaining = resolve_method(model, method, method_settings, default=DEFAULT_METHODS["training"],
                                    allowed=RELEVANCE_METHODS, reason="has no relevance inside the network")
    elif given:
        raise ValueError(f"method applies to the relevance criterion 'lrp', not to criterion {criterion!r}")
    layers = [layers] if isinstance(layers, str) else list(layers)
    modules = find_layers(model, layers)
    check_input(x, "x", model)
    if criterion == "weight":
        scores = {}
        for name, module in modules.items():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
                raise ValueError(f"criterion 'weight' needs a layer with a weight matrix or kernel; {name!r} is a "
                                 f"{type(module).__name__}")
            scores[name] = weight.detach().flatten(1).norm(dim=1)
        return scores
    if criterion == "lrp":
        with Recorder(model, layers, keep=("relevance",)) as record:
            explaining(x, target=y)
        return {name: record[name].per_channel().mean(0) for name in layers}
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_semantics(model))
        outputs = {name: stack.enter_context(capture(model, name)) for name in layers}
        with torch.enable_grad():
            logits = model(x)
            score = logits.gather(1, torch.as_tensor(y, device=logits.device).view(-1, 1)).sum()
            acts = [outputs[name][0] for name in layers]
            grads = torch.autograd.grad(score, acts)
    scores = {}
    for name, a, g in zip(layers, acts, grads):
        axis = channel_axis(modules[name], a.ndim)
        if criterion == "taylor":
            scores[name] = _channel_sums(a.detach() * g, axis).abs().mean(0)
        else:
            scores[name] = _channel_sums(g.abs(), axis).mean(0)
    return scores


def prune_plan(scores: dict[str, torch.Tensor], fraction: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """``{layer: keep (C,) bool}`` removing the least important channels (ties broken by layer order, then
    channel index).

    ``scope="layer"``: ``round(fraction · C)`` channels of each layer; ``scope="global"``: ``round(fraction ·
    Σ C)`` channels of all layers ranked together (Yeom et al. 2021; normalise the scores first with
    :func:`layer_normalised` so that the layers are comparable). A layer may then lose every channel."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    check_choice(scope, "scope", SCOPES)
    groups = [[name] for name in scores] if scope == "layer" else [list(scores)]
    plan = {}
    for names in groups:
        flat = torch.cat([scores[name].detach().double().flatten().cpu() for name in names])
        count = int(round(fraction * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:count]] = False
        for name, part in zip(names, keep.split([scores[name].numel() for name in names])):
            plan[name] = part
    return plan


def layer_normalised(scores: dict[str, torch.Tensor], criterion: str) -> dict[str, torch.Tensor]:
    """The scores of each layer rescaled as Yeom et al. (2021) do before ranking the layers together: ``"lrp"``
    divided by ``|Σ R|`` (the layer's share of the explained output: relevance is conserved from layer to
    layer), ``"weight"`` by its L1 norm, ``"taylor"`` and ``"gradient"`` by their L2 norm. A layer whose scores
    are all zero is returned as it is."""
    check_choice(criterion, "criterion", CRITERIA)
    out = {}
    for name, score in scores.items():
        score = score.detach().double()
        if criterion == "lrp":
            scale = score.sum().abs()
        elif criterion == "weight":
            scale = score.abs().sum()
        else:
            scale = score.norm()
        out[name] = score / scale if scale > 0 else score
    return out


def reference_samples(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` samples of each class in ``y`` (drawn without replacement with ``seed``; all of a
    class that has fewer), sorted: the reference set on which Yeom et al. (2021) compute the criteria."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError(f"y must be a 1-D tensor of class indices, got shape {tuple(y.shape)} of {y.dtype}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        picked.append(members[torch.randperm(members.numel(), generator=g)[:per_class]])
    return torch.sort(torch.cat(picked)).values


@contextlib.contextmanager
def pruned(model: nn.Module, plan: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Inside the block, the channels of each layer with ``keep == False`` output zero; hooks removed after."""
    modules = find_layers(model, list(plan), "plan")

    def make_hook(name: str, keep: torch.Tensor):
        def hook(module: nn.Module, args, out):
            axis = channel_axis(module, out.ndim)
            if out.shape[axis] != keep.numel():
                raise ValueError(f"plan[{name!r}] has {keep.numel()} channels but the layer outputs "
                                 f"{out.shape[axis]} along axis {axis}")
            shape = [1] * out.ndim
            shape[axis] = keep.numel()
            return out * keep.to(out.device, out.dtype).view(shape)

        return hook

    with Hooks() as hooks:
        for name, keep in plan.items():
            hooks.forward(modules[name], make_hook(name, keep))
        yield model
