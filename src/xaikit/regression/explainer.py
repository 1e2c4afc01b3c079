"""The regression explainer: ``f_k(x) - f_k(x_ref)`` by any method, with the prediction and the base value.

A regression model's output is a value, not a class score: what an attribution decomposes is the *change* of
that value from a reference input ``x_ref`` (Sundararajan et al. 2017; Lundberg & Lee 2017, with
``φ_0 = f(x_ref)``). :class:`Regression` binds the reference to the method:

- a method with a ``baseline`` setting (Integrated Gradients, Occlusion, the Shapley family, LIME, RISE, ...)
  takes ``x_ref`` as its baseline;
- a method without one (gradient × input, LRP and the other propagation methods) explains the shifted model
  ``h(z) = f(z + x_ref)`` at ``z = x - x_ref``, so its relevance is the relevance of the difference
  ``x - x_ref``. On a linear model ``f(x) = w·x + b`` both give ``R = w ⊙ (x - x_ref)`` exactly.

Every explanation carries ``info["prediction"] = f_k(x)``, ``info["base_value"] = f_k(x_ref)`` (tensors
``(N,)``) and ``info["completeness_gap"] = Σ_i R_i - (f_k(x) - f_k(x_ref))``: zero up to quadrature for IG and
exactly for the exact Shapley values (completeness); for LRP-0/ε on a model without biases and ``x_ref = 0``,
``f(0) = 0`` and the gap is the conservation error (Bach et al. 2015, Eq. 2). The gap is reported, never forced.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check_input
from ..explanation import Explanation
from ..methods.base import Method
from ..methods.machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from ..methods.machinery.scoring import forward_output
from ..methods.resolve import resolve_method
from ..modes import FollowsModel, eval_semantics
from ..settings import checked_init, settings_of
from ..targets import Value, resolve_target

#: the explainer of a regression when none is named: completeness holds for it (Sundararajan et al. 2017)
DEFAULT_METHOD = "integrated_gradients"


class Shifted(FollowsModel, nn.Module):
    """``h(z) = f(z + x_ref)``: the model seen from the reference (a view for methods without a baseline).

    The model is a submodule, not a copy: nothing of it changes; the training flag is the model's own.
    """

    def __init__(self, model: nn.Module, reference: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("reference", reference, persistent=False)

    def forward(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.model(z + self.reference, *args, **kwargs)


class Regression:
    """Explain the value of a regression model's output relative to a reference input.

    Parameters
    ----------
    model : nn.Module or callable
        The regressor, ``x -> (N,)`` or ``(N, K)`` values.
    method : str, Method class or object, optional
        The explainer (a name, a spec ``"lrp:composite=epsilon"``, a class or an object built on ``model``);
        default ``"integrated_gradients"``.
    method_settings : dict, optional
        Settings added to a method given by name or spec.
    reference : number, tensor, "zero" or "mean"
        The reference input ``x_ref`` (a baseline spec, :mod:`xaikit.methods.machinery.baselines`): one
        sample, a batch shaped like ``x``, or e.g. the training data's mean ``X.mean(0)``. Default ``"zero"``; with
        a method object that has a baseline, that baseline.

    Notes
    -----
    Calling ``tool(x, target=k)`` returns an :class:`~xaikit.explanation.Explanation` of output ``k`` (default:
    the single output; a per-sample sequence of outputs is accepted) whose ``info`` holds ``prediction``,
    ``base_value``, ``completeness_gap`` (see the module docstring) and ``regression = True`` (the metrics then
    score the raw value). A per-sample reference needs a method with a ``baseline`` setting.
    """

    @checked_init
    def __init__(self, model: nn.Module, method: Any = None, method_settings: dict[str, Any] | None = None,
                 reference: BaselineSpec = "zero") -> None:
        self.model, self.method, self.method_settings, self.reference = model, method, method_settings, reference
        resolve_method(model, method, method_settings, default=DEFAULT_METHOD)  # the settings are checked now

    def _reference(self) -> BaselineSpec:
        """The reference: the given one, or a method object's own baseline where the reference is left at zero."""
        own = getattr(self.method, "baseline", None) if isinstance(self.method, Method) else None
        if own is not None and isinstance(self.reference, str) and self.reference == "zero":
            return own
        return self.reference

    def _method(self, reference: torch.Tensor, per_sample: bool) -> tuple[Method, nn.Module]:
        """The method bound to the reference, and the model it runs on."""
        method, zero = self.method, not bool(reference.ne(0).any())
        if isinstance(method, Method):
            own = getattr(method, "baseline", None) is not None and isinstance(self.reference, str) \
                and self.reference == "zero"
            if not (zero or own):
                raise ValueError("reference: a method object keeps its own settings (its baseline is the reference), "
                                 "so another reference cannot be bound to it; give the method by name or spec (e.g. "
                                 "'integrated_gradients')")
            return resolve_method(self.model, method, None), self.model
        built = resolve_method(self.model, method, self.method_settings, default=DEFAULT_METHOD)
        if "baseline" in settings_of(type(built))[0]:
            settings = {**(self.method_settings or {}), "baseline": reference}
            return resolve_method(self.model, method, settings, default=DEFAULT_METHOD), self.model
        if zero:
            return built, self.model
        if per_sample:
            raise ValueError(f"reference: {built.name} has no baseline setting, so it explains the model shifted by "
                             "one reference input; give one sample (shape of x[0]) or a method with a baseline "
                             "(integrated_gradients, occlusion, exact_shapley, kernel_shap, ...)")
        shifted = Shifted(self.model, reference[:1])
        return resolve_method(shifted, method, self.method_settings, default=DEFAULT_METHOD), shifted

    def __call__(self, x: torch.Tensor, target: Any = None, *, forward_args: tuple = (),
                 forward_kwargs: dict[str, Any] | None = None) -> Explanation:
        """Explain ``f_target(x) - f_target(x_ref)`` (see the class docstring)."""
        check_input(x, "x", self.model if isinstance(self.model, nn.Module) else None)
        reference = resolve_baseline(self._reference(), x, "reference").detach()
        per_sample = x.shape[0] > 1 and not bool((reference == reference[:1]).all())
        args, kwargs = tuple(forward_args), dict(forward_kwargs or {})
        with eval_semantics(self.model, warn=False):
            output = forward_output(self.model, x.detach(), args, kwargs)
            base_output = forward_output(self.model, reference, args, kwargs)
        spec = target.output if isinstance(target, Value) else target
        if spec is None:
            width = output[0].numel()
            if width != 1:
                raise ValueError(f"target: the model has {width} outputs; give the one to explain (an int, or one per "
                                 "sample), e.g. target=0")
            spec = 0
        resolved = resolve_target(Value(spec), output)
        method, runs_on = self._method(reference, per_sample)
        z = x if runs_on is self.model else (x - reference[:1]).detach()
        expl = method(z, Value(resolved.index), forward_args=args, forward_kwargs=kwargs)
        prediction, base_value = resolved.score(output), resolved.score(base_output)
        expl.output = output
        gap = expl.attribution.flatten(1).sum(1).to(prediction.dtype) - (prediction - base_value)
        expl.info.update({"prediction": prediction, "base_value": base_value, "completeness_gap": gap,
                          "reference": describe_baseline(self._reference()), "regression": True,
                          "shifted": runs_on is not self.model})
        return expl

    def __repr__(self) -> str:
        return f"Regression({type(self.model).__name__}, method={self.method!r})"
