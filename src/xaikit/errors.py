"""Input checks shared by every method and metric: each message names the argument and the fix."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


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
            raise TypeError(
                f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with {name}.float()"
            )
    elif not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the input before explaining it")
    return x


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


def warn_if_training(model: Any) -> None:
    """Warn when the model is a module in training mode (dropout and batch statistics make explanations random)."""
    if isinstance(model, nn.Module) and model.training:
        warnings.warn(
            "model is in training mode: dropout and batch-norm batch statistics make the explanation random "
            "and batch-dependent; call model.eval() first",
            UserWarning,
            stacklevel=3,
        )


def check_choice(value: Any, name: str, choices: dict | list | tuple | set) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in sorted(choices, key=str))
        raise ValueError(f"unknown {name} {value!r}; valid: {valid}")


def check_positive(value: Any, name: str, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise when ``value`` is not a positive (or non-negative) number (integer if asked)."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value > 0 or (allow_zero and value == 0))
    if not ok:
        what = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a {what} {bound}, got {value!r}")
