"""Integrated Gradients at a layer: the relevance of a layer's output for :class:`xaikit.IntegratedGradients`.

IG evaluates many interpolated inputs per sample, so its relevance at a layer is not one ``a ⊙ g``. Here it
is Integrated Gradients of the model's upper part along the straight line in the layer's space, from the
baseline's activation ``a(b)`` to the sample's ``a(x)`` (Sundararajan et al. 2017, applied to the layer as
the input of the upper part): ``R = (a(x) − a(b)) ⊙ Σ_k w_k ∂f/∂a |_{a(b) + α_k (a(x) − a(b))}``, with IG's own
quadrature nodes ``α_k`` and weights ``w_k``. Completeness holds at the layer: ``Σ R = f(x) − f(b)`` up to the
quadrature error. The upper part runs on the interpolated activations through a forward hook that replaces
the layer output (removed in ``finally``); the interpolated rows are batched.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batching import chunked, max_chunk, select_batch
from ..layers import capture, find_layer, hooked
from ..methods.machinery.baselines import resolve_baseline
from ..methods.path import IntegratedGradients
from ..targets import resolve_target
from ..tokens import model_scores


def _capture(model: nn.Module, module: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict):
    with torch.no_grad(), capture(model, module) as seen:
        out = model_scores(model(x, *args, **kwargs))
    if not seen:
        raise ValueError("layer: the module was not called in the forward pass")
    return seen[-1], out


def integrated_layer_relevance(method: IntegratedGradients, x: torch.Tensor, target: Any, layer: str,
                               forward_args: tuple = (), forward_kwargs: dict | None = None) -> tuple:
    """``(R (N, *a.shape[1:]), a(x), resolved target index, f(x) − f(b))`` for Integrated Gradients at ``layer``."""
    model, kwargs = method.model, dict(forward_kwargs or {})
    _, module = find_layer(model, layer)
    n, steps = x.shape[0], method.steps
    baseline = resolve_baseline(method.baseline, x)
    both = torch.arange(2 * n) % n
    a, out = _capture(model, module, torch.cat([x, baseline]), select_batch(forward_args, both, n),
                      select_batch(kwargs, both, n))
    a_x, a_b = a[:n], a[n:]
    resolved = resolve_target(target, out[:n])
    difference = resolved.score(out[:n]) - resolved.score(out[n:])
    alphas, weights = method.nodes.to(a.device, a.dtype), method.weights.to(a.device, a.dtype)
    total = torch.zeros_like(a_x)
    shape = (-1,) + (1,) * (a.ndim - 1)

    def run(start: int, stop: int) -> None:
        rows = torch.arange(start, stop, device=x.device)
        owner, step = rows // steps, rows % steps
        point = torch.lerp(a_b[owner], a_x[owner], alphas[step].view(shape)).requires_grad_(True)
        owner_cpu = owner.cpu()
        with hooked(module, forward=lambda m, i, o: point if isinstance(o, torch.Tensor) else (point, *o[1:])), \
                torch.enable_grad():
            output = model_scores(model(x[owner], *select_batch(forward_args, owner_cpu, n),
                                        **select_batch(kwargs, owner_cpu, n)))
            score = resolved.select(owner_cpu).score(output)
            (grad,) = torch.autograd.grad(score.sum(), point)
        total.index_add_(0, owner, grad * weights[step].view(shape))

    item_bytes = x[0].numel() * x.element_size()
    chunked(run, n * steps, method.batch_size, key=("layer_ig", id(model), layer, tuple(x.shape[1:])),
            cap=max_chunk(item_bytes, x.device))
    return (a_x - a_b) * total, a_x, resolved.index, difference
