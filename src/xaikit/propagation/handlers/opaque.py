"""Operations the engine cannot see, reported as unknown.

The engine sees torch operations through a ``TorchFunctionMode``. Two kinds of code run operations it does not
see: the ``forward`` of a custom ``torch.autograd.Function`` (run without an autograd graph, its backward is
the author's) and TorchScript (``torch.jit.script`` functions and modules run in the TorchScript interpreter).
Their outputs reach the engine as activations whose autograd node no dispatched operation made. Every
dispatched operation stamps the nodes of its outputs (``grad_fn.metadata``); an activation read by an
operation (not one that a handler dispatches as part of its own), or returned by the model, with an unstamped
node is reported once as unknown, named after the
``autograd.Function`` class, or after the TorchScript functions and modules the model's code calls.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..classify import is_inplace, tensors_in

if TYPE_CHECKING:
    from ..session import Session


_STAMP = "xaikit"


def stamp(out: Any) -> None:
    """Mark the autograd nodes of ``out`` as made by an operation the engine saw."""
    for t in tensors_in(out):
        node = t.grad_fn
        if node is not None:
            node.metadata[_STAMP] = True


def _seen(t: torch.Tensor) -> bool:
    node = t.grad_fn
    if node is None or _STAMP in node.metadata or type(node).__name__ == "CopySlices":
        return True  # (CopySlices: the base of a view written in place, by an operation that was seen)
    cls = getattr(node, "_forward_cls", None)
    if getattr(cls, "__module__", "").startswith("xaikit."):
        return True  # the engine's own functions (e.g. a module's identity rule, applied by a hook)
    if t._is_view():  # a view whose node autograd re-made after an in-place change of its base
        return _seen(t._base)
    return False


def script_functions(model: nn.Module) -> list[str]:
    """Names of the TorchScript functions that the model's ``forward`` methods call, and of its TorchScript
    submodules."""
    names = [name or type(m).__name__ for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)]
    for cls in {type(m) for m in model.modules()}:
        forward = getattr(cls, "forward", None)
        code, scope = getattr(forward, "__code__", None), getattr(forward, "__globals__", {})
        if code is None:
            continue
        for name in code.co_names:
            if isinstance(scope.get(name), torch.jit.ScriptFunction) and name not in names:
                names.append(name)
    return names


def _label(s: Session, node: Any) -> str:
    cls = getattr(node, "_forward_cls", None)
    if inspect.isclass(cls) and issubclass(cls, torch.autograd.Function):
        return f"{cls.__qualname__}:autograd.Function"
    scripts = s.extra_opaque_names if s.extra_opaque_names is not None else script_functions(s.model)
    s.extra_opaque_names = scripts
    return f"{'|'.join(scripts)}:torch.jit" if scripts else f"{type(node).__name__}:not_seen"


def report(s: Session, tensors: Any) -> None:
    """Report the activations among ``tensors`` that an unseen operation made (once per autograd node)."""
    for t in tensors:
        if not _seen(t) and s.is_activation(t):
            node = t.grad_fn
            if id(node) not in s.opaque:
                s.opaque[id(node)] = node
                s.coverage.add("unknown", _label(s, node))


def follow(s: Session, func: Callable, name: str, args: tuple, kwargs: dict, acts: list, out: Any,
           mark: int) -> None:
    """After each dispatched operation: report unseen inputs, stamp the outputs. (The parts of an operation
    that a handler dispatches read what the handler computed: they are not checked.)"""
    if s.depth == 0:
        first = args[0] if args and is_inplace(func, args, kwargs) else None  # its node is now this op's
        report(s, [t for t in acts if t is not first])
    stamp(out)


class ReportOutput:
    """On exit from the explained forward pass: the model output itself may come from an unseen operation."""

    def __init__(self, s: Session) -> None:
        self.s = s
        s.opaque, s.extra_opaque_names = {}, None

    def __enter__(self) -> "ReportOutput":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None and self.s.output is not None:
            report(self.s, list(tensors_in(self.s.output)))
        self.s.opaque.clear()
