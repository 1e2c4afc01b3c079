"""Input checks shared by every method and metric: each message names the argument and the fix."""
from __future__ import annotations

import difflib
from typing import Any, Iterable

import torch
from torch import nn

from .deprecation import warn_renamed


class NotApplicable(TypeError):
    """The method or metric does not apply to this kind of input (for example token ids for RISE); callers
    that run several methods skip it and go on with the others."""


def check_input(x: Any, name: str = "x", model: nn.Module | None = None, allow_int: bool = False) -> torch.Tensor:
    """Validate an input batch: a finite floating-point tensor with a batch dimension on the model's device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor with a leading batch dimension, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got shape {tuple(x.shape)}")
    if model is not None:
        device = model_device(model)
        if device is not None and x.device != device:
            raise ValueError(
                f"{name} is on device {x.device} but the model is on {device}; move it with {name}.to('{device}')"
            )
    if not x.is_floating_point():
        if not (allow_int and not x.is_complex() and x.dtype != torch.bool):
            raise NotApplicable(
                f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with {name}.float() "
                "if it holds numbers; if it holds token ids, this method does not apply to them (for token ids: "
                "Gradient, InputXGradient, IntegratedGradients, SmoothGrad, LRP, Occlusion, LIME, KernelSHAP, "
                "ExactShapley, PermutationShapley)"
            )
    elif not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the input before explaining it")
    if model is not None:
        _check_matches_model(x, name, model)
    return x


def _check_matches_model(x: torch.Tensor, name: str, model: nn.Module) -> None:
    """A float input of another precision than the model's weights, or an image missing its batch dimension."""
    if not isinstance(model, nn.Module):
        return
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if x.is_floating_point() and weight is not None and x.dtype != weight.dtype:
        short = {torch.float32: "float", torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}
        fix = f"{name}.{short[weight.dtype]}()" if weight.dtype in short else f"{name}.to({weight.dtype})"
        raise TypeError(f"{name} has dtype {x.dtype} but the model's weights are {weight.dtype}; convert it with {fix}")
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first is not None and x.is_floating_point():
        dims = len(first.kernel_size) + 2  # (N, C, *spatial)
        if x.ndim == dims - 1 and x.shape[0] == first.in_channels:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, but the model's first convolution takes {dims}-d input "
                f"(N, C, ...): add the batch dimension with {name}[None] (or {name}.unsqueeze(0))"
            )


#: the methods that need only a function ``x -> scores`` (named in the error for a non-module model)
AGNOSTIC_METHODS = "Occlusion, RISE, LIME, ExactShapley, KernelSHAP, PermutationShapley"


def check_model(model: Any, name: str = "model", needs_module: str | None = None) -> None:
    """Accept a ``torch.nn.Module``, or any callable ``x -> tensor of scores`` when ``needs_module`` is ``None``.

    ``needs_module`` says why a module is required (e.g. "it back-propagates through the layers"); the error
    then names the methods that accept a plain function.
    """
    if isinstance(model, nn.Module):
        return
    if needs_module is not None:
        raise TypeError(
            f"{name} must be a torch.nn.Module because {needs_module}; got {type(model).__name__}. A plain "
            f"function x -> scores works with the model-agnostic methods ({AGNOSTIC_METHODS}) and the metrics "
            "that only need outputs"
        )
    if not callable(model):
        raise TypeError(
            f"{name} must be a torch.nn.Module or a callable x -> tensor of scores, got {type(model).__name__}; "
            "wrap a NumPy function (e.g. sklearn's predict_proba) with xk.NumpyModel(fn)"
        )


def model_device(model: Any) -> torch.device | None:
    """The device of the model's first parameter or buffer (``None`` for a model without tensors or a function)."""
    if not isinstance(model, nn.Module):
        return None
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """``"did you mean 'a' or 'b'? "`` for the valid names closest to ``value`` (difflib), or ``""``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def unknown_name(what: str, value: Any, choices: Iterable[Any]) -> ValueError:
    """The error for an unknown name: the closest valid names first (difflib), then all of them."""
    choices = sorted(choices, key=str)
    hint = did_you_mean(value, choices)
    return ValueError(f"unknown {what} {value!r}; {hint}valid: {', '.join(str(c) for c in choices)}")


def check_choice(value: Any, name: str, choices: dict | list | tuple | set) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise unknown_name(name, value, choices)


def check_positive(value: Any, name: str, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise when ``value`` is not a positive (or non-negative) number (integer if asked)."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        what = "an integer" if integer else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {what} {bound}, got {value!r}")


def unknown_module(what: str, name: str, names: Iterable[str], problem: str = "is not a module of the model",
                 limit: int | None = None) -> ValueError:
    """A ``ValueError`` for a module name that is not among ``names`` (in the model's order): it names it,
    suggests the close ones (difflib) and lists the valid names (all, or the first ``limit``)."""
    names = list(dict.fromkeys(n for n in names if n))
    hint = did_you_mean(name, names).strip()
    hint = f" ({hint})" if hint else ""
    listed = ", ".join(names[:limit]) + (" ..." if limit is not None and len(names) > limit else "")
    return ValueError(f"{what} {name!r} {problem}{hint}; valid names: {listed or 'none'}")


def __getattr__(name: str) -> Any:
    """``eval_semantics`` and ``explains_in_eval`` moved to :mod:`xaikit.modes` (importable from here, with a
    ``DeprecationWarning``, for one release)."""
    if name in ("eval_semantics", "explains_in_eval"):
        from . import modes

        warn_renamed(f"xaikit.errors.{name}", f"xaikit.modes.{name}")
        return getattr(modes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
