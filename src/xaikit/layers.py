"""Layers by name and hooks for one call: the plumbing every room uses (foundation floor).

- :func:`find_layer` / :func:`find_layers`: the module(s) of a model called by a name from
  ``model.named_modules()`` (or given as a module of the model). An unknown name raises one error for the
  whole package (:func:`xaikit.errors.unknown_module`): the name, the close names, the valid names. The model
  itself is ``""``, as ``named_modules()`` names it: a model that is a single layer (``nn.Linear(4, 3)``) is its
  own layer, and every name these functions return is accepted back.
- :func:`last_layer` / :func:`last_of_type`: the default layers of the rooms (the last module with parameters,
  the last of some types), the model itself included.
- :class:`Hooks` and :func:`hooked`: forward, forward-pre and backward hooks registered for the duration of a
  ``with`` block and removed in ``finally``, also when the block raises; nothing is left on the user's model.
- :func:`capture`: the outputs (or inputs) of a layer during the block, optionally stopping the forward pass
  once the layer has run.

Example
-------
>>> import torch
>>> from xaikit.layers import capture, find_layer, hooked
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> find_layer(model, "1")
('1', ReLU())
>>> with capture(model, "1", stop=True) as seen:       # the forward stops after module "1"
...     model(torch.randn(5, 3))
>>> seen[0].shape
torch.Size([5, 4])
>>> with hooked(model[0], forward=lambda m, args, out: out * 0):   # the output of "0" zeroed in the block
...     model(torch.randn(1, 3)).shape
torch.Size([1, 2])
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import unknown_module

__all__ = ["find_layer", "find_layers", "last_layer", "last_of_type", "first_tensor", "Hooks", "hooked", "capture"]


def find_layer(model: nn.Module, layer: str | nn.Module, argument: str = "layer") -> tuple[str, nn.Module]:
    """``(name, module)`` of ``layer``: a name from ``model.named_modules()`` or a module of ``model``.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        The module's name (``"features.3"``; ``""`` is the model itself, as in ``model.named_modules()``) or the
        module itself (``model`` or one of its sub-modules).
    argument : str
        The argument's name in the errors (e.g. ``"layers"``, ``"cav.layer"``, ``"--concept-layer"``).

    Raises
    ------
    ValueError
        For an unknown name (naming it, the close names and the valid names) or a module not in the model.
    TypeError
        For anything else than a name or a module.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:  # the model itself is ""
                return name, module
        raise ValueError(f"{argument}: the {type(layer).__name__} given is not a sub-module of the model; pass "
                         "one of its modules or a name from model.named_modules()")
    if not isinstance(layer, str):
        raise TypeError(f"{argument} must be a module name (str) as in model.named_modules() or a module, got "
                        f"{type(layer).__name__}")
    module = _named(model).get(layer)
    if module is None:
        raise unknown_module(argument, layer, _named(model))
    return layer, module


def find_layers(model: nn.Module, layers: Sequence[str | nn.Module] | str | nn.Module,
                argument: str = "layers") -> dict[str, nn.Module]:
    """``{name: module}`` of several layers (names or modules of ``model``), in the order given.

    A single name or module is one layer. Errors as in :func:`find_layer`.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    found = {}
    for layer in layers:
        name, module = find_layer(model, layer, argument)
        found[name] = module
    return found


def last_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the last module (in definition order) that holds parameters of its own, e.g. a
    classifier's head (whose input is the penultimate representation); the model itself (name ``""``) when only
    it holds parameters."""
    with_params = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not with_params:
        raise ValueError("the model has no layer with parameters; pass layer= (a module name)")
    return with_params[-1]


def last_of_type(model: nn.Module, kinds: type | tuple[type, ...], argument: str = "layer") -> tuple[str, nn.Module]:
    """``(name, module)`` of the last module (in definition order) that is one of ``kinds``: the default layer
    of a room that needs a layer of a kind (TracIn's last ``nn.Linear``, Grad-CAM's last convolution). The model
    itself (name ``""``) counts: ``nn.Linear(4, 3)`` is its own last linear layer.

    Raises ``ValueError`` naming ``argument`` and the kinds when the model has none.
    """
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if not found:
        names = ", ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        valid = ", ".join(n for n, _ in model.named_modules() if n)
        raise ValueError(f"the model has no {names} to default to; pass {argument}= a module name"
                         + (f" (one of: {valid})" if valid else ""))
    return found[-1]


def _named(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` by name; the model itself is ``""``."""
    return dict(model.named_modules())


def first_tensor(value: Any) -> torch.Tensor | None:
    """The value itself if it is a tensor, else the first tensor of a tuple/list (``None`` if there is none)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


class Hooks:
    """Hooks registered for the duration of a ``with`` block, all removed on leaving it (also when it raised).

    >>> with Hooks() as hooks:                        # doctest: +SKIP
    ...     hooks.forward(module, fn)                 # fn(module, args, output) -> new output or None
    ...     hooks.pre(model, fn)                      # fn(module, args) -> new args or None
    ...     hooks.backward(module, fn)                # fn(module, grad_input, grad_output) -> grads or None
    ...     model(x)

    Hooks may also be added before ``__enter__`` (then :meth:`close` must run: use the ``with`` block).
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def forward(self, module: nn.Module, hook: Callable, **options: Any) -> None:
        """``module.register_forward_hook(hook, **options)`` until the block ends."""
        self._handles.append(module.register_forward_hook(hook, **options))

    def pre(self, module: nn.Module, hook: Callable, **options: Any) -> None:
        """``module.register_forward_pre_hook(hook, **options)`` until the block ends."""
        self._handles.append(module.register_forward_pre_hook(hook, **options))

    def backward(self, module: nn.Module, hook: Callable, **options: Any) -> None:
        """``module.register_full_backward_hook(hook, **options)`` until the block ends."""
        self._handles.append(module.register_full_backward_hook(hook, **options))

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def hooked(module: nn.Module, forward: Callable | None = None, pre: Callable | None = None,
           backward: Callable | None = None) -> Iterator[nn.Module]:
    """One call's hooks on one module: ``with hooked(layer, forward=fn): model(x)``.

    ``forward(module, args, output)``, ``pre(module, args)`` and ``backward(module, grad_input,
    grad_output)`` as for ``register_forward_hook``, ``register_forward_pre_hook`` and
    ``register_full_backward_hook``; each given hook is removed when the block ends, also when it raised.
    Yields the module.
    """
    with Hooks() as hooks:
        if pre is not None:
            hooks.pre(module, pre)
        if forward is not None:
            hooks.forward(module, forward)
        if backward is not None:
            hooks.backward(module, backward)
        yield module


class _Reached(Exception):
    """Raised by a capturing hook with ``stop=True``: the rest of the forward pass is not needed."""


@contextlib.contextmanager
def capture(model: nn.Module, layer: str | nn.Module, inputs: bool = False, stop: bool = False,
            argument: str = "layer") -> Iterator[list[torch.Tensor]]:
    """Inside the block, each output of ``layer`` (its first input with ``inputs=True``) is appended to the
    yielded list, as the forward pass made it (graph kept; detach it if you keep it).

    ``stop=True`` ends the forward pass once the layer has run (the model's output is then not computed and
    the ``with`` block ends at the forward call, without error). A layer output without a tensor raises a
    ``TypeError`` naming the layer.
    """
    name, module = find_layer(model, layer, argument)
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, out: Any) -> None:
        value = first_tensor(args if inputs else out)
        if value is None:
            what = "its inputs hold" if inputs else "it returns"
            raise TypeError(f"{argument} {name!r}: {what} {type(args if inputs else out).__name__} without a tensor; "
                            "choose another layer")
        seen.append(value)
        if stop:
            raise _Reached

    try:
        with hooked(module, forward=hook):
            yield seen
    except _Reached:
        pass
