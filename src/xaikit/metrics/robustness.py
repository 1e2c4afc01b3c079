"""Robustness: do similar inputs get similar explanations?

These metrics re-explain perturbed inputs, so they take the method object:
``xk.metrics.MaxSensitivity()(model, x, y, xk.Gradient(model))``. The perturbations of the whole batch are
built as one tensor and explained with one call of the method (which chunks them itself). Noise is drawn
once per call and shared by all samples, scaled by each sample's value range (max − min), so a sample's score
never depends on its batch mates.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import check_positive
from ..layers import capture, find_layer, last_layer
from ..methods.machinery.seeding import make_generator
from .base import Case, Metric, MetricResult, register
from .pixels import stable_order

__all__ = [
    "LocalLipschitzEstimate", "MaxSensitivity", "AvgSensitivity", "Continuity", "Consistency",
    "RelativeInputStability", "RelativeOutputStability", "RelativeRepresentationStability",
]


def _spread(x: torch.Tensor) -> torch.Tensor:
    """Each sample's value range, shaped to broadcast against ``x``."""
    dims = tuple(range(1, x.ndim))
    return (x.amax(dims, keepdim=True) - x.amin(dims, keepdim=True)).clamp_min(1e-12)


def _norm(v: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), ord=p, dim=1)


class _Reexplain(Metric):
    family = "robustness"
    needs_method = True
    higher_is_better = False

    def _noisy(self, case: Case, kind: str, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``samples`` perturbed copies per sample ``(N*samples, ...)`` (sample-major) and their owners."""
        x = case.x
        generator = make_generator(self.seed)
        shape = (self.samples, *x.shape[1:])
        draw = torch.randn(shape, generator=generator, dtype=x.dtype) if kind == "gaussian" else \
            (2 * torch.rand(shape, generator=generator, dtype=x.dtype) - 1)
        noise = draw.to(x.device)[None] * (scale * _spread(x))[:, None]
        owner = torch.arange(case.n, device=x.device).repeat_interleave(self.samples)
        return (x[:, None] + noise).reshape(-1, *x.shape[1:]), owner

    def _reexplain(self, case: Case, inputs: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Attributions of the perturbed inputs, ``(N, samples, ...)``."""
        return case.explain(inputs, owner).reshape(case.n, -1, *case.attribution.shape[1:])


@register
class LocalLipschitzEstimate(_Reexplain):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, eq. 5), estimated by sampling:
    max_{x'} ‖R(x) − R(x')‖₂ / ‖x − x'‖₂ over ``samples`` Gaussian perturbations x' = x + ε, ε ~ N(0, σ²) with
    σ = ``noise`` × the sample's value range. Lower is better."""

    def __init__(self, samples: int = 10, noise: float = 0.1, batch_size: int | str = "auto",
                 seed: int | None = 0) -> None:
        check_positive(samples, "samples", integer=True)
        check_positive(noise, "noise")
        self._common(batch_size, False, seed)
        self.samples, self.noise = samples, noise

    def compute(self, case: Case) -> MetricResult:
        inputs, owner = self._noisy(case, "gaussian", self.noise)
        again = self._reexplain(case, inputs, owner)
        change = _norm((again - case.attribution[:, None]).flatten(0, 1)).reshape(case.n, -1)
        distance = _norm((inputs.reshape(case.n, self.samples, -1) - case.x.reshape(case.n, 1, -1)).flatten(0, 1))
        return MetricResult((change / distance.reshape(case.n, -1)).amax(1))


@register
class MaxSensitivity(_Reexplain):
    """Max-sensitivity (Yeh et al. 2019, eq. 5): max_{‖δ‖∞ ≤ r} ‖R(x + δ) − R(x)‖₂, estimated with ``samples``
    uniform draws in the L∞ ball of radius r = ``radius`` × the sample's value range. With ``normalise=True``
    (default) divided by ‖R(x)‖₂, so the score does not depend on the attribution's scale. Lower is better."""

    reduction = "max"

    def __init__(self, samples: int = 10, radius: float = 0.02, normalise: bool = True,
                 batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_positive(samples, "samples", integer=True)
        check_positive(radius, "radius")
        self._common(batch_size, False, seed)
        self.samples, self.radius, self.normalise = samples, radius, bool(normalise)

    def compute(self, case: Case) -> MetricResult:
        inputs, owner = self._noisy(case, "uniform", self.radius)
        again = self._reexplain(case, inputs, owner)
        change = _norm((again - case.attribution[:, None]).flatten(0, 1)).reshape(case.n, -1)
        if self.normalise:
            change = change / _norm(case.attribution)[:, None]
        return MetricResult(change.amax(1) if self.reduction == "max" else change.mean(1))


@register
class AvgSensitivity(MaxSensitivity):
    """Avg-sensitivity (Yeh et al. 2019, eq. 6): as :class:`MaxSensitivity` with the mean over the draws."""

    reduction = "mean"


@register
class Continuity(_Reexplain):
    """Explanation continuity (Montavon et al. 2018, Sec. 4.2): max_{x'} ‖R(x) − R(x')‖₁ / ‖x − x'‖₂ over nearly
    equivalent inputs x', here the input translated by 1..``shifts`` pixels along its last axis (edge values
    repeated). Lower is better."""

    def __init__(self, shifts: int = 5, batch_size: int | str = "auto") -> None:
        check_positive(shifts, "shifts", integer=True)
        self._common(batch_size, False, None)
        self.shifts = shifts

    def compute(self, case: Case) -> MetricResult:
        x = case.x
        width = x.shape[-1]
        if self.shifts >= width:
            raise ValueError(f"shifts must be smaller than the input width {width}, got {self.shifts}")
        index = torch.arange(width, device=x.device)
        moved = [x.index_select(-1, (index - t).clamp_min(0)) for t in range(1, self.shifts + 1)]
        inputs = torch.stack(moved, 1).reshape(-1, *x.shape[1:])
        owner = torch.arange(case.n, device=x.device).repeat_interleave(self.shifts)
        again = self._reexplain(case, inputs, owner)
        change = _norm((again - case.attribution[:, None]).flatten(0, 1), 1).reshape(case.n, -1)
        distance = _norm((inputs.reshape(case.n, self.shifts, -1) - x.reshape(case.n, 1, -1)).flatten(0, 1))
        return MetricResult((change / distance.reshape(case.n, -1).clamp_min(1e-12)).amax(1))


@register
class Consistency(Metric):
    """Consistency (Dasgupta et al. 2022): the probability that samples with the same (discretised) explanation
    get the same prediction.

    An explanation is discretised as the set of its ``k`` most relevant pixels (ties by index); a sample's score
    is the fraction of the other samples of the batch with the same set that have the same predicted class. A
    data-set-level criterion: a score depends on the other samples *by definition*; a sample whose set no other
    sample shares scores NaN (with a warning). Higher is better.
    """

    family = "robustness"
    higher_is_better = True

    def __init__(self, k: int = 5, batch_size: int | str = "auto") -> None:
        check_positive(k, "k", integer=True)
        self._common(batch_size, False, None)
        self.k = k

    def compute(self, case: Case) -> MetricResult:
        top = stable_order(case.pixels, descending=True)[:, : self.k].sort(1).values  # the set, as sorted indices
        same_explanation = (top[:, None] == top[None]).all(2)
        same_explanation.fill_diagonal_(False)
        predicted = case.output.flatten(1).argmax(1)
        same = same_explanation & (predicted[:, None] == predicted[None])
        count = same_explanation.sum(1)
        if (count == 0).any():
            warnings.warn(f"Consistency: no other sample shares the explanation of sample(s) "
                          f"{(count == 0).nonzero().flatten().tolist()}; their score is NaN", UserWarning, stacklevel=4)
        scores = same.sum(1) / count.clamp_min(1)
        return MetricResult(torch.where(count > 0, scores.float(), torch.full_like(scores.float(), float("nan"))))


class _RelativeStability(_Reexplain):
    """Relative stability (Agarwal et al. 2022): max over perturbations x' with the same predicted class of
    ‖(R(x) − R(x'))/R(x)‖_p divided by a change of the input, output or representation (at least ``eps_min``).
    Element-wise divisions use ``eps`` where a value is smaller in magnitude. Lower is better."""

    def __init__(self, samples: int = 10, noise: float = 0.05, p: float = 2.0, eps: float = 1e-6,
                 eps_min: float = 1e-6, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_positive(samples, "samples", integer=True)
        check_positive(noise, "noise")
        check_positive(p, "p")
        check_positive(eps, "eps")
        check_positive(eps_min, "eps_min")
        self._common(batch_size, False, seed)
        self.samples, self.noise, self.p, self.eps, self.eps_min = samples, noise, p, eps, eps_min

    def _relative(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        safe = torch.where(old.abs() < self.eps, torch.full_like(old, self.eps) * torch.where(old < 0, -1.0, 1.0), old)
        return _norm((new - old) / safe, self.p)

    def _denominator(self, case: Case, inputs: torch.Tensor, outputs: torch.Tensor, extra: Any,
                     owner: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, case: Case, inputs: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return case.forward(inputs, owner), None

    def compute(self, case: Case) -> MetricResult:
        inputs, owner = self._noisy(case, "gaussian", self.noise)
        outputs, extra = self._forward(case, inputs, owner)
        again = self._reexplain(case, inputs, owner).flatten(0, 1)
        numerator = self._relative(again, case.attribution[owner])
        denominator = self._denominator(case, inputs, outputs, extra, owner).clamp_min(self.eps_min)
        ratio = (numerator / denominator).reshape(case.n, self.samples)
        same_class = (outputs.flatten(1).argmax(1) == case.output.flatten(1).argmax(1)[owner]).reshape(case.n, -1)
        ratio = torch.where(same_class, ratio, torch.full_like(ratio, float("-inf"))).amax(1)
        none = ~same_class.any(1)
        if none.any():
            warnings.warn(f"{self.name}: every perturbation changed the predicted class of sample(s) "
                          f"{none.nonzero().flatten().tolist()}; their score is NaN (lower noise)", UserWarning,
                          stacklevel=4)
        return MetricResult(torch.where(none, torch.full_like(ratio, float("nan")), ratio))


@register
class RelativeInputStability(_RelativeStability):
    """Relative input stability (Agarwal et al. 2022, eq. 2): the denominator is ‖(x − x')/x‖_p."""

    def _denominator(self, case, inputs, outputs, extra, owner):
        return self._relative(inputs, case.x[owner])


@register
class RelativeOutputStability(_RelativeStability):
    """Relative output stability (Agarwal et al. 2022, eq. 5): the denominator is ‖h(x) − h(x')‖_p on the
    model output (logits)."""

    def _denominator(self, case, inputs, outputs, extra, owner):
        return _norm(outputs - case.output[owner], self.p)


@register
class RelativeRepresentationStability(_RelativeStability):
    """Relative representation stability (Agarwal et al. 2022, eq. 3): the denominator is ‖(L(x) − L(x'))/L(x)‖_p
    for the output of the module ``layer`` (a name from ``model.named_modules()``; default: the input of the
    last layer with parameters, i.e. the penultimate representation)."""

    needs_module = "it reads a layer's representation through a hook"

    def __init__(self, layer: str | None = None, samples: int = 10, noise: float = 0.05, p: float = 2.0,
                 eps: float = 1e-6, eps_min: float = 1e-6, batch_size: int | str = "auto",
                 seed: int | None = 0) -> None:
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"layer must be a module name (str) or None, got {type(layer).__name__}")
        super().__init__(samples, noise, p, eps, eps_min, batch_size, seed)
        self.layer = layer

    def _module(self, model: nn.Module) -> tuple[nn.Module, bool]:
        """The hooked module and whether its input (True) or output (False) is the representation."""
        if self.layer is not None:
            return find_layer(model, self.layer)[1], False
        return last_layer(model)[1], True

    def _representations(self, case: Case, inputs: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        module, use_input = self._module(case.model)
        with capture(case.model, module, inputs=use_input) as captured:
            outputs = case.forward(inputs, owner)
        return outputs, torch.cat([value.detach().flatten(1) for value in captured])

    def _forward(self, case, inputs, owner):
        outputs, rep = self._representations(case, inputs, owner)
        _, rep0 = self._representations(case, case.x, torch.arange(case.n, device=case.x.device))
        return outputs, (rep, rep0)

    def _denominator(self, case, inputs, outputs, extra, owner):
        rep, rep0 = extra
        return self._relative(rep, rep0[owner])
