"""The calling convention shared by every metric.

``metric = Name(**settings)`` checks the settings (unknown ones are rejected with the list of valid ones);
``scores = metric(model, x, target, explanation, mask=None, forward_args=(), forward_kwargs=None)`` returns
one score per sample ``(N,)``. ``explanation`` is an attribution tensor, an :class:`~xaikit.Explanation` or a
:class:`~xaikit.Method` (metrics that re-explain perturbed inputs or randomised models need the method).
``metric.curve(...)`` returns the per-step values ``(N, S)`` of metrics that have a curve, and
``metric.evaluate(...)`` both at once as a :class:`MetricResult`. ``metric.higher_is_better`` gives the
direction as in the metric's paper.

Undefined cases give NaN with a warning that says why, never a silent "hit": a sample whose attribution is
all zero, and for localisation metrics a sample whose mask is empty.
"""
from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..batching import batched_forward, check_batch_size, select_batch
from ..errors import check_input, check_model
from ..explanation import Explanation
from ..methods.base import Method
from ..methods.machinery.seeding import check_seed
from ..methods.resolve import resolve_method
from ..modes import eval_semantics
from ..registry import Registry
from ..results import ResultExport
from ..settings import bind_settings
from ..targets import Contrast, ResolvedTarget, TargetSpec, Value, resolve_target
from .pixels import Layout, average_ranks, to_pixels



@dataclass
class MetricResult(ResultExport):
    """Scores ``(N,)``, the curve ``(N, S)`` where the metric has one, and extra per-sample details."""

    scores: torch.Tensor
    curve: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per sample: its score (and its curve, where the metric has one)."""
        rows = [{"sample": i, "score": s} for i, s in enumerate(self.scores.double().tolist())]
        if self.curve is not None:
            for row, curve in zip(rows, self.curve.double().tolist()):
                row["curve"] = curve
        return rows


@dataclass
class Case:
    """One validated metric call: the model, the batch, the bound target and the explanation."""

    metric: "Metric"
    model: nn.Module
    x: torch.Tensor
    forward_args: tuple
    forward_kwargs: dict
    target: ResolvedTarget
    output: torch.Tensor
    layout: Layout
    attribution: torch.Tensor | None = None
    method: Method | None = None
    mask: torch.Tensor | None = None  #: (N, P) bool pixel mask

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def pixels(self) -> torch.Tensor:
        """Pixel relevance ``(N, P)`` (sum over channels)."""
        return to_pixels(self.attribution, self.layout)

    # -- model outputs --------------------------------------------------------------------------------------
    def select(self, output: torch.Tensor, owner: torch.Tensor, softmax: bool | None = None) -> torch.Tensor:
        """The target value of each row of ``output``, whose rows belong to samples ``owner``."""
        if (self.metric.softmax if softmax is None else softmax) and not isinstance(self.target.spec, Value):
            output = output.flatten(1).softmax(1)  # a regression target (Value) is scored as the raw value
        spec = self.target.spec
        if callable(spec) and not isinstance(spec, Contrast):
            return self.target.score(output)
        return self.target.select(owner.to(self.target.index.device)).score(output)

    def base_scores(self, softmax: bool | None = None) -> torch.Tensor:
        """Target values ``(N,)`` of the unperturbed inputs."""
        return self.select(self.output, torch.arange(self.n, device=self.output.device), softmax)

    def forward(self, inputs: torch.Tensor, owner: torch.Tensor,
                reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Outputs for ``inputs`` (M, ...) whose rows belong to samples ``owner`` (M,), in chunks."""
        return batched_forward(
            self.model, inputs, self.metric.batch_size, owner=owner, batch=self.n,
            forward_args=self.forward_args, forward_kwargs=self.forward_kwargs, reduce=reduce,
        )

    def scores(self, inputs: torch.Tensor, owner: torch.Tensor, softmax: bool | None = None) -> torch.Tensor:
        """Target values ``(M,)`` of ``inputs`` whose rows belong to samples ``owner``."""
        return self.forward(inputs, owner, lambda out, rows: self.select(out, owner[rows.to(owner.device)], softmax))

    # -- re-explanation --------------------------------------------------------------------------------------
    def target_for(self, owner: torch.Tensor) -> TargetSpec:
        """The target spec for rows belonging to samples ``owner`` (for re-explaining)."""
        spec = self.target.spec
        if callable(spec) and not isinstance(spec, Contrast):
            return spec
        owner = owner.to(self.target.index.device)
        if isinstance(spec, Value):
            return Value(self.target.index[owner])
        if self.target.contrast is not None:
            return Contrast(self.target.index[owner], self.target.contrast[owner])
        return self.target.index[owner]

    def explain(self, inputs: torch.Tensor, owner: torch.Tensor, method: Method | None = None,
                target: TargetSpec | None = None) -> torch.Tensor:
        """Attributions of ``inputs`` (rows of samples ``owner``) by ``method`` in one call."""
        method = method or self.method
        rows = owner.to(self.x.device)
        expl = method(
            inputs, target=self.target_for(owner) if target is None else target,
            forward_args=select_batch(self.forward_args, rows, self.n),
            forward_kwargs=select_batch(self.forward_kwargs, rows, self.n),
        )
        return expl.attribution.detach()


def _record_settings(init: Callable) -> Callable:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = bind_settings(self, signature, args, kwargs)
        init(self, *args, **kwargs)
        if type(self).__init__ is wrapper or not hasattr(self, "_settings"):
            bound.apply_defaults()
            self._settings = {k: v for k, v in bound.arguments.items() if k != "self"}

    return wrapper


class Metric:
    """Base class of the evaluation metrics.

    Subclasses set ``higher_is_better`` (as in the paper), ``family``, ``needs_method`` (re-explaining
    metrics), ``needs_mask`` (localisation), ``needs_module`` (metrics that change or hook the model's layers;
    the others accept any callable ``x -> tensor of scores``), ``has_curve``, and implement :meth:`compute`. A metric is
    found by name (:func:`get_metric`, the CLI, ``run``, tune objectives) once registered with :func:`register`
    (``xk.metrics.register_metric``); subclassing registers nothing.
    """

    higher_is_better: ClassVar[bool] = True
    family: ClassVar[str] = ""
    needs_method: ClassVar[bool] = False
    needs_mask: ClassVar[bool] = False
    #: why the metric needs a ``torch.nn.Module`` (randomises or hooks layers); ``None``: any callable model
    needs_module: ClassVar[str | None] = None
    has_curve: ClassVar[bool] = False
    #: False for metrics that never read or perturb the input's values (complexity, localisation): they also
    #: score explanations of token ids; the others refuse token ids with :class:`~xaikit.errors.NotApplicable`
    reads_input_values: ClassVar[bool] = True
    #: a sample whose attribution is all zero gets NaN (the metric is undefined for it)
    zero_attribution_undefined: ClassVar[bool] = True
    softmax: bool = False
    batch_size: int | str = "auto"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_settings(cls.__dict__["__init__"])

    def _common(self, batch_size: int | str = "auto", softmax: bool = False, seed: int | None = 0) -> None:
        check_batch_size(batch_size)
        if not isinstance(softmax, bool):
            raise TypeError(f"softmax must be True or False, got {softmax!r}")
        check_seed(seed)
        self.batch_size, self.softmax, self.seed = batch_size, softmax, seed

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_settings", {}).items()
                             if not isinstance(v, torch.Tensor))
        return f"{self.name}({settings})"

    # -- public calls ---------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, target: TargetSpec = None, explanation: Any = None,
                 mask: torch.Tensor | None = None, *, forward_args: Sequence[Any] = (),
                 forward_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
        """Per-sample scores ``(N,)`` (direction: :attr:`higher_is_better`)."""
        return self.evaluate(model, x, target, explanation, mask, forward_args=forward_args,
                             forward_kwargs=forward_kwargs).scores

    def curve(self, model: nn.Module, x: torch.Tensor, target: TargetSpec = None, explanation: Any = None,
              mask: torch.Tensor | None = None, *, forward_args: Sequence[Any] = (),
              forward_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
        """Per-step values ``(N, S)`` of the metric's curve (first column: the unperturbed input)."""
        if not self.has_curve:
            raise TypeError(f"{self.name} has no curve; metrics with one: {', '.join(sorted(curve_metrics()))}")
        return self.evaluate(model, x, target, explanation, mask, forward_args=forward_args,
                             forward_kwargs=forward_kwargs).curve

    def evaluate(self, model: nn.Module, x: torch.Tensor, target: TargetSpec = None, explanation: Any = None,
                 mask: torch.Tensor | None = None, *, forward_args: Sequence[Any] = (),
                 forward_kwargs: dict[str, Any] | None = None) -> MetricResult:
        """Scores and curve (where the metric has one) in one pass."""
        with eval_semantics(model):
            case = self._case(model, x, target, explanation, mask, forward_args, forward_kwargs)
            result = self.compute(case)
            return self._finish(case, result)

    def compute(self, case: Case) -> MetricResult:
        """Compute the metric on a validated case."""
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------------------------------
    def _case(self, model, x, target, explanation, mask, forward_args, forward_kwargs) -> Case:
        check_model(model, f"the model of {self.name}", self.needs_module)
        check_input(x, "x", model, allow_int=not self.reads_input_values)
        if not isinstance(forward_args, (tuple, list)):
            raise TypeError(f"forward_args must be a tuple of extra positional inputs, got {type(forward_args).__name__}")
        if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
            raise TypeError(f"forward_kwargs must be a dict of keyword inputs, got {type(forward_kwargs).__name__}")
        args, kwargs = tuple(forward_args), dict(forward_kwargs or {})
        if isinstance(explanation, str):  # a method name or spec, built on the model (as everywhere)
            explanation = resolve_method(model, explanation, argument="explanation")
        attribution, method, expl_target = self._unpack(explanation, x)
        if target is None and expl_target is not None:
            target = expl_target
        rows = torch.arange(x.shape[0], device=x.device)
        output = batched_forward(model, x, self.batch_size, owner=rows, batch=x.shape[0],
                                 forward_args=args, forward_kwargs=kwargs)
        if self.softmax and not isinstance(target, Value) and (output.ndim < 2 or output[0].numel() == 1):
            raise ValueError(
                f"{self.name}(softmax=True) needs a model output with several classes (N, K), got shape "
                f"{tuple(output.shape)}: the softmax of a single output is always 1, so every score would be "
                "perfect; set softmax=False (or return one score per class, e.g. predict_proba); for a regression "
                "model give target=xaikit.targets.Value(0): the raw output value is scored"
            )
        case = Case(self, model, x, args, kwargs, resolve_target(target, output), output,
                    Layout(tuple(x.shape[1:])), method=method)
        if attribution is None:
            attribution = case.explain(x, rows)
        self._check_attribution(attribution, case)
        case.attribution = attribution.detach()
        if self.needs_mask:
            case.mask = self._check_mask(mask, case)
        elif mask is not None:
            raise ValueError(f"{self.name} does not use a mask; leave mask=None (localisation metrics take masks)")
        return case

    def _unpack(self, explanation: Any, x: torch.Tensor):
        if isinstance(explanation, Method):
            return None, explanation, None
        if self.needs_method:
            raise TypeError(
                f"{self.name} re-explains perturbed inputs or randomised models, so it needs the method object "
                f"(e.g. xk.Gradient(model)) or its name or spec ('gradient'), not {type(explanation).__name__}"
            )
        if isinstance(explanation, Explanation):
            index = explanation.target
            flat = explanation.output is None or explanation.output.ndim != 3  # (N, L, V): tokens, not flat indices
            expl_target = index if flat and index.numel() == x.shape[0] and bool((index >= 0).all()) else None
            if expl_target is not None and explanation.info.get("regression"):  # xaikit.regression's value
                expl_target = Value(expl_target)
            return explanation.attribution, None, expl_target
        if isinstance(explanation, torch.Tensor):
            return explanation, None, None
        raise TypeError(
            f"explanation must be an attribution tensor, an xk.Explanation, an xk.Method or a method name or "
            f"spec ('lrp:composite=epsilon_plus'), "
            f"got {type(explanation).__name__}"
        )

    def _check_attribution(self, attribution: torch.Tensor, case: Case) -> None:
        if attribution.shape[:1] != case.x.shape[:1]:
            raise ValueError(
                f"attribution has {attribution.shape[0] if attribution.ndim else 0} samples but x has "
                f"{case.x.shape[0]}; pass the attribution of this batch"
            )
        to_pixels(attribution, case.layout)  # raises on a shape mismatch
        if not attribution.is_floating_point():
            raise TypeError(f"attribution must be a floating-point tensor, got dtype {attribution.dtype}")
        if not torch.isfinite(attribution).all():
            raise ValueError("attribution contains NaN or infinite values; check the method that produced it")
        if attribution.device != case.x.device:
            raise ValueError(f"attribution is on {attribution.device} but x is on {case.x.device}; move it")

    def _check_mask(self, mask: Any, case: Case) -> torch.Tensor:
        if mask is None:
            raise ValueError(
                f"{self.name} compares the attribution with a ground-truth mask: pass mask= (boolean, shaped "
                f"(N, H, W), (N, 1, H, W) or like x)"
            )
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(
                    "mask must be binary (bool or 0/1); a weighted mask would be silently binarised - threshold "
                    "it yourself, e.g. mask > 0.5"
                )
            mask = mask != 0
        mask = mask.to(case.x.device)
        layout = case.layout
        if layout.has_channels and tuple(mask.shape[1:]) == layout.shape:
            if not bool((mask == mask[:, :1]).all()):
                raise ValueError("mask differs between channels of a pixel; give one mask per pixel (N, H, W)")
            mask = mask[:, :1]
        if mask.shape[0] != case.n:
            raise ValueError(f"mask has {mask.shape[0]} samples but x has {case.n}")
        return to_pixels(mask.long(), layout, "mask") > 0

    def _finish(self, case: Case, result: MetricResult) -> MetricResult:
        undefined = torch.zeros(case.n, dtype=torch.bool, device=result.scores.device)
        if self.zero_attribution_undefined and case.attribution is not None:
            zero = (case.attribution.flatten(1) == 0).all(1).to(undefined.device)
            if zero.any():
                warnings.warn(
                    f"{self.name}: the attribution of sample(s) {zero.nonzero().flatten().tolist()} is all zero, so "
                    "the metric is undefined for them; their score is NaN", UserWarning, stacklevel=3)
            undefined |= zero
        if case.mask is not None:
            empty = ~case.mask.any(1).to(undefined.device)
            if empty.any():
                warnings.warn(
                    f"{self.name}: the mask of sample(s) {empty.nonzero().flatten().tolist()} is empty (no object "
                    "pixel), so the metric is undefined for them; their score is NaN", UserWarning, stacklevel=3)
            undefined |= empty
        if undefined.any():
            result.scores = result.scores.to(torch.get_default_dtype() if not result.scores.is_floating_point()
                                             else result.scores.dtype).clone()
            result.scores[undefined] = float("nan")
            if result.curve is not None:
                result.curve = result.curve.clone()
                result.curve[undefined.to(result.curve.device)] = float("nan")
        return result


#: the registry of metrics by name (:class:`xaikit.registry.Registry`); the built-ins register themselves
REGISTRY: Registry[type[Metric]] = Registry("metric", Metric, "xk.metrics.register_metric")
#: registered name -> metric class, a read-only live view (add a metric with :func:`register`)
METRICS: Mapping[str, type[Metric]] = REGISTRY.view


def register(cls: type[Metric] | None = None, name: str | None = None) -> Any:
    """Register a :class:`Metric` subclass under ``name`` (default: its class name in snake_case), so that the
    CLI, ``run``, ``tune`` objectives and metric specs find it by name; as a function or a class decorator
    (``xk.metrics.register_metric``). A name another class holds is refused with a ``ValueError``: subclassing
    registers nothing, so a class of one's own never replaces a built-in. See
    :meth:`xaikit.registry.Registry.register`."""
    return REGISTRY.register(cls, name)


def curve_metrics() -> list[str]:
    """Names of the metrics that have a curve."""
    return REGISTRY.names(lambda cls: cls.has_curve)


def get_metric(name: str) -> type[Metric]:
    """Look up a registered metric class by its registered name or its class name."""
    return REGISTRY.get(name)


def check_order(order: str) -> bool:
    """``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first); returns ``True`` for MoRF."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"unknown order {order!r}; valid: 'morf' (most relevant first), 'lerf' (least relevant first)")
    return order == "morf"


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation along ``dim`` (NaN where either side is constant)."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    denominator = (a.square().sum(dim) * b.square().sum(dim)).sqrt()
    value = (a * b).sum(dim) / denominator
    return torch.where(denominator > 0, value, torch.full_like(value, float("nan")))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of ``(N, K)`` tensors (ties get average ranks)."""
    return pearson(average_ranks(a), average_ranks(b))


def trapezoid_mean(curve: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """Area under ``curve`` (N, S) over [0, 1] (positions ``x`` in [0, 1], default equally spaced)."""
    if curve.shape[1] == 1:
        return curve[:, 0]
    if x is None:
        return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)
    return torch.trapezoid(curve, x.to(curve), dim=1)
