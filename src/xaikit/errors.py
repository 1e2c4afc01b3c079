"""Input checks shared by every method and metric: each message names the argument and the fix."""
from __future__ import annotations

import difflib
import warnings
from typing import Any, Iterable

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


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (``None`` for a model without tensors)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def warn_if_training(model: nn.Module) -> None:
    """Warn when the model is in training mode (dropout and batch statistics make explanations random)."""
    if model.training:
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


def unknown_name(what: str, name: str, names: Iterable[str], problem: str = "is not a module of the model",
                 limit: int | None = None) -> ValueError:
    """A ``ValueError`` for a name that is not among ``names``: it names it, suggests the close ones (difflib)
    and lists the valid names (all, or the first ``limit``)."""
    names = list(dict.fromkeys(n for n in names if n))
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    listed = ", ".join(names[:limit]) + (" ..." if limit is not None and len(names) > limit else "")
    return ValueError(f"{what} {name!r} {problem}{hint}; valid names: {listed or 'none'}")
