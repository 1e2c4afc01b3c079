"""Layer and neuron attribution as methods with a ``layer=`` setting.

- :class:`LayerGradientXActivation`: ``a ⊙ ∂f_t/∂a`` at a layer's output ``a`` — the relevance at a layer of
  xaikit's one definition (:class:`~xaikit.propagation.record.Recorder`, ``R = a ⊙ g``) under the plain
  gradient (Captum's ``LayerGradientXActivation``).
- :class:`LayerConductance`: the conductance of each unit ``y`` of a layer (Dhamdhere, Sundararajan & Yan,
  ICLR 2019, "How important is a neuron?", Eq. 2), the flow of Integrated Gradients through ``y``:
  ``Cond_y = ∫_0^1 ∂f_t/∂y (γ(α)) · dy(γ(α))/dα dα`` on the straight path ``γ(α) = x̄ + α (x − x̄)``.
- :class:`NeuronAttribution`: the attribution of one unit of a layer to the input, by any method: the
  method explains the layer's output as if it were the model's output, and the target names the unit.

The layer attributions are shaped like the layer's output (per sample), not like the input.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batching import check_batch_size, chunked, max_chunk, select_batch
from ..errors import check_positive
from ..explanation import Explanation
from ..layers import capture, find_layer
from ..modes import FollowsModel
from ..propagation.record import Recorder
from ..targets import resolve_target
from .base import Method, register
from .gradient import Gradient
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from .machinery.scoring import forward_output
from .resolve import passed_on, resolve_method


@register
class LayerGradientXActivation(Method):
    """Layer gradient × activation: ``a ⊙ ∂f_t/∂a`` at the output ``a`` of ``layer`` (Shrikumar et al. 2016's
    input × gradient, at a layer), read with :class:`~xaikit.propagation.record.Recorder`.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        The layer, named as in ``model.named_modules()`` or given as a module of the model.
    batch_size : int or "auto"
        Samples per backward pass.
    progress : bool
        Show a progress bar.

    Notes
    -----
    For a layer all paths pass through, on a ReLU network without biases after the layer, the attributions of a
    sample sum to ``f_t(x)`` (the network is then homogeneous in ``a``).
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        self.layer = _find(model, layer)
        self.batch_size, self.progress = batch_size, bool(progress)

    @property
    def name(self) -> str:
        return f"LayerGradientXActivation({self.layer})"

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        gradient = Gradient(self.model, batch_size=self.batch_size, progress=self.progress)
        with Recorder(self.model, [self.layer]) as recorder:
            expl = gradient.explain(x, target, forward_args, forward_kwargs)
        relevance = recorder[self.layer].relevance
        info = {"layer": self.layer, "score": expl.info["score"]}
        return Explanation(relevance, expl.target, expl.output, self.name, info)


@register
class LayerConductance(Method):
    """Conductance of the units of a layer (Dhamdhere et al. 2019, Eq. 2-3): for each unit ``y`` of the output of
    ``layer``, ``Cond_y = Σ_{k<K} ∂f_t/∂y(γ(α_k)) · (y(γ(α_{k+1})) − y(γ(α_k)))`` with ``α_k = k/K``, the
    Riemann–Stieltjes sum of ``∫ ∂f_t/∂y dy`` along the straight path from the baseline to ``x``.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        The layer whose output units are explained.
    steps : int
        K, the number of intervals of the path (K + 1 points are evaluated).
    baseline : number, tensor, "zero", "mean" or "blur"
        The path's start x̄ (default ``"zero"``).
    batch_size : int or "auto"
        Points of the path per forward/backward pass.
    progress : bool
        Show a progress bar.

    Notes
    -----
    The differences ``y(α_{k+1}) − y(α_k)`` telescope to ``y(x) − y(x̄)``, so for a layer every path from the
    input to the output passes through, ``Σ_y Cond_y → f_t(x) − f_t(x̄)`` as K grows (completeness, Prop. 1
    of the paper), exactly when ``f_t`` is affine in the layer's output (a layer followed by linear layers).
    ``info["base_value"]`` is ``f_t(x̄)``; ``info["convergence_delta"]`` is ``Σ_y Cond_y − (f_t(x) − f_t(x̄))``.
    Captum's ``LayerConductance`` computes this sum with ``method="riemann_trapezoid"`` (``n_steps`` = K); its
    default, ``"gausslegendre"``, evaluates the same sum on Gauss–Legendre nodes, which do not reach 0 and 1,
    so its differences do not telescope to ``y(x) − y(x̄)`` (here the paper's partition of [0, 1] is kept).
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, steps: int = 50, baseline: BaselineSpec = "zero",
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_positive(steps, "steps", integer=True)
        check_batch_size(batch_size)
        self.layer = _find(model, layer)
        self.steps, self.baseline = steps, baseline
        self.batch_size, self.progress = batch_size, bool(progress)

    @property
    def name(self) -> str:
        return f"LayerConductance({self.layer}, {self.steps})"

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        x = x.detach()
        n, points = x.shape[0], self.steps + 1
        baseline = resolve_baseline(self.baseline, x)
        both = torch.arange(2 * n) % n
        ends = forward_output(self.model, torch.cat([x, baseline]), select_batch(forward_args, both, n),
                              select_batch(forward_kwargs, both, n))
        output, base_output = ends[:n], ends[n:]
        resolved = resolve_target(target, output)
        alphas = torch.arange(points, dtype=torch.float64).div(self.steps).to(x.device, x.dtype)
        store: dict[str, torch.Tensor] = {}

        def run(start: int, stop: int) -> None:
            rows = torch.arange(start, stop, device=x.device)
            owner, step = rows // points, rows % points
            owner_cpu = owner.cpu()
            shape = (-1,) + (1,) * (x.ndim - 1)
            path = torch.lerp(baseline[owner], x[owner], alphas[step].view(shape))
            with torch.enable_grad(), capture(self.model, self.layer) as seen:
                out = self.model(path, *select_batch(forward_args, owner_cpu, n),
                                 **select_batch(forward_kwargs, owner_cpu, n))
                if len(seen) != 1:
                    raise ValueError(f"layer {self.layer!r} ran {len(seen)} times in one forward pass; "
                                     "LayerConductance needs a layer that runs once")
                score = resolved.select(owner_cpu).score(out if isinstance(out, torch.Tensor) else out[0])
                (grad,) = torch.autograd.grad(score.sum(), seen[0])
            if not store:
                store["a"] = x.new_zeros(n, points, *seen[0].shape[1:])
                store["g"] = x.new_zeros(n, points, *seen[0].shape[1:])
            store["a"][owner, step] = seen[0].detach()
            store["g"][owner, step] = grad.detach()

        item_bytes = x[0].numel() * x.element_size()
        key = ("layer_conductance", id(self.model), self.layer, tuple(x.shape[1:]), x.dtype, str(x.device))
        chunked(run, n * points, self.batch_size, key=key, cap=max_chunk(item_bytes, x.device),
                progress=self.progress, desc=self.name)
        a, g = store["a"], store["g"]
        conductance = (g[:, :-1] * (a[:, 1:] - a[:, :-1])).sum(1)
        score, base = resolved.score(output), resolved.score(base_output)
        delta = conductance.flatten(1).sum(1) - (score - base)
        info = {"layer": self.layer, "steps": self.steps, "baseline": describe_baseline(self.baseline),
                "base_value": base, "score": score, "convergence_delta": delta}
        return Explanation(conductance, resolved.index, output, self.name, info)


def _find(model: nn.Module, layer: str | int | nn.Module) -> str:
    """The layer's name; an int is a name of ``nn.Sequential`` (a spec ``"layer=3"`` reads as the int 3)."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        layer = str(layer)
    return find_layer(model, layer, "layer")[0]


class _LayerOutput(FollowsModel, nn.Module):
    """The output of ``layer`` as the model's output, one row per sample (the forward pass stops there); its
    training flag is the model's (:class:`~xaikit.modes.FollowsModel`)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with capture(self.model, self.layer, stop=True) as seen:
            self.model(x, *args, **kwargs)
        if not seen:
            raise ValueError(f"layer {self.layer!r} did not run in the forward pass")
        return seen[0].flatten(1)


@register
class NeuronAttribution(Method):
    """The attribution of one unit of a layer's output to the input, by any attribution method.

    The method explains ``u(x) = layer_output(x)[unit]`` instead of a model output; the *target* names the unit:
    an index into the layer's output flattened per sample (as a target indexes a model's output), one per
    sample or shared, or ``None`` for each sample's most active unit. Captum's ``NeuronGradient``,
    ``NeuronIntegratedGradients``, ``NeuronDeepLift``, ... are ``method="gradient"``, ``"integrated_gradients"``,
    ``"deep_lift"``, ... here.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        The layer whose unit is explained.
    method : str, class or None
        The attribution method (a name, spec or class; default ``"gradient"``), built on the model cut at the
        layer (the forward pass stops once the layer has run).
    method_settings : dict, optional
        Its settings.
    batch_size : int or "auto"
        Passed to the method when it is built from a name or spec (unless its settings set it).
    progress : bool
        Passed to the method built from a name or spec.

    Notes
    -----
    ``expl.target`` holds the unit index; ``expl.output`` the layer's output (flattened per sample);
    ``expl.info["unit"]`` the unit as an index tuple into the layer's output shape.
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module, method: str | type | None = "gradient",
                 method_settings: dict[str, Any] | None = None, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        if isinstance(method, Method):
            raise TypeError("method must be a name, spec or class for NeuronAttribution: it is built on the model "
                            "cut at the layer, not on the model itself")
        self.layer = _find(model, layer)
        self.cut = _LayerOutput(model, self.layer)
        settings = passed_on(method or "gradient", method_settings, batch_size=batch_size, progress=progress or None)
        self.inner = resolve_method(self.cut, method or "gradient", settings)

    @property
    def name(self) -> str:
        return f"NeuronAttribution({self.layer}, {self.inner.name})"

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        expl = self.inner.explain(x, target, forward_args, forward_kwargs)
        with torch.no_grad(), capture(self.model, self.layer, stop=True) as seen:
            self.model(x[:1], *select_batch(forward_args, torch.arange(1), x.shape[0]),
                       **select_batch(forward_kwargs, torch.arange(1), x.shape[0]))
        unit_shape = tuple(seen[0].shape[1:])
        index = expl.target if isinstance(expl.target, torch.Tensor) else torch.as_tensor(expl.target)
        units = [tuple(int(i) for i in u) for u in zip(*torch.unravel_index(index.cpu(), unit_shape))]
        expl.info.update({"layer": self.layer, "unit": units, "inner": self.inner.name})
        expl.method = self.name
        return expl
