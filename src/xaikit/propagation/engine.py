"""The propagation engine: LRP as "input × modified gradient", applied for one forward pass.

A :class:`Session` runs the model's forward pass under a ``TorchFunctionMode`` that sees every torch
operation. Operations on activations are dispatched to small handlers (:mod:`.ops`) that return the same
values as the plain operation but change what the backward pass carries, so that for every tensor
``R_t = t ⊙ g_t``. Nothing is registered on the user's modules: the mode is active only inside
:meth:`Session.forward` and leaves with it (also when the forward raises); the modifications live on the
autograd graph of that one call and are freed with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .composites import Composite
from .coverage import Coverage
from .rules import Rule, redistribute

Replay = Callable[[torch.Tensor], torch.Tensor]


def op_name(func: Callable) -> str:
    """Normalised op name: ``__iadd__``/``add_``/``__radd__`` -> ``add``; ``Tensor.T.__get__`` -> ``T``."""
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return getattr(owner, "__name__", "get")
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name[:1] in ("i", "r") and name[1:] in _DUNDER:
            name = name[1:]
        return {"truediv": "div", "floordiv": "floor_divide"}.get(name, name)
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


_DUNDER = {"add", "sub", "mul", "truediv", "matmul", "floordiv", "pow", "and", "or", "xor", "mod"}


def tensors_in(obj: Any):
    """All tensors in nested args (lists/tuples/dicts)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


@dataclass
class LayerState:
    """What a layer handler remembers for BN folding and its modified backward."""

    rule: Rule
    kind: str
    layer: Callable | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    z: torch.Tensor | None = None  #: output value that the relevance R = z ⊙ g refers to
    scale: torch.Tensor | None = None  #: ε gradient rescaling at the output
    absorb: torch.Tensor | None = None  #: per-element relevance absorbed by bias and ε (per unit gradient)
    fold: tuple[torch.Tensor, torch.Tensor] | None = None  #: (per-channel scale, folded bias) of a BatchNorm
    replay: Replay | None = None  #: for first-layer direct rules: recompute the layer input from x
    extra: dict = field(default_factory=dict)


class _Mode(TorchFunctionMode):
    def __init__(self, session: "Session") -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.session.dispatch(func, args, kwargs or {})


class Session:
    """One explained forward pass of ``model`` under ``composite``.

    After the backward pass, :attr:`direct` holds relevance written at the input by first-layer rules,
    :attr:`absorbed` the per-sample relevance absorbed by biases and stabilisers, and :attr:`coverage` the
    operations seen.
    """

    def __init__(self, model: nn.Module, composite: Composite) -> None:
        from . import ops  # the handlers import this module

        self.model = model
        self.composite = composite
        self.handlers = ops.HANDLERS
        self.coverage = Coverage()
        self.owners = {
            id(p): (name, module) for name, module in model.named_modules() for p in module.parameters(recurse=False)
        }
        self.input: torch.Tensor | None = None
        self.chain: dict[int, tuple[torch.Tensor, Replay]] = {}
        self.layers: dict[int, LayerState] = {}
        self.gates: dict[int, torch.Tensor] = {}
        self.direct: torch.Tensor | None = None
        self.absorbed: torch.Tensor | None = None

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run the model on ``x`` (a leaf that requires grad) with the rules applied."""
        self.input = x
        self.chain = {id(x): (x, lambda base: base)}
        self.absorbed = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        with _Mode(self):
            return self.model(x, *args, **kwargs)

    def is_activation(self, t: Any) -> bool:
        """A tensor that depends on the explained input (not a parameter, buffer or constant)."""
        return isinstance(t, torch.Tensor) and t.requires_grad and (t.grad_fn is not None or t is self.input)

    def dispatch(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        activations = [t for t in tensors_in((args, kwargs)) if self.is_activation(t)]
        if not activations:
            return func(*args, **kwargs)
        name = op_name(func)
        handler = self.handlers.get(name)
        if handler is not None:
            return handler(self, func, name, args, kwargs, activations)
        from .ops import classify_plain

        return classify_plain(self, func, name, args, kwargs, activations)

    def remember(self, out: torch.Tensor, state: LayerState) -> None:
        """Remember a layer output (kept alive for the call, so tensor ids stay unique)."""
        self.layers[id(out)] = state
        state.extra["out"] = out

    def tag_gate(self, out: torch.Tensor) -> None:
        self.gates[id(out)] = out

    # -- backward bookkeeping ------------------------------------------------------------------------------
    def absorb(self, amount: torch.Tensor) -> None:
        """Add per-sample absorbed relevance ``(N,)`` (called from backward hooks)."""
        self.absorbed = self.absorbed + amount.detach().to(self.absorbed.dtype)

    def write_direct(self, relevance: torch.Tensor, replay: Replay) -> None:
        """Add relevance computed at a first layer's input, mapped back to the model input through ``replay``."""
        base = torch.zeros_like(self.input).requires_grad_(True)
        with torch.enable_grad():
            (mapped,) = torch.autograd.grad(replay(base), base, relevance, allow_unused=True)
        mapped = torch.zeros_like(base) if mapped is None else mapped.detach()
        self.direct = mapped if self.direct is None else self.direct + mapped

    def bounds(self, rule: Rule, replay: Replay) -> dict[str, torch.Tensor]:
        """Constant inputs of a direct rule at the first layer's input: ones, and the box bounds."""
        x = self.input.detach()
        consts = {"ones": replay(torch.ones_like(x))}  # padding added on the way gets no relevance
        if any(t.input in ("low", "high") for p in rule.parts for t in p.terms):
            dims = tuple(range(2, x.ndim)) if x.ndim > 2 else tuple(range(1, x.ndim))
            for key, bound, default in (("low", rule.low, x.amin), ("high", rule.high, x.amax)):
                value = default(dim=dims, keepdim=True) if bound is None else _broadcast_bound(bound, x, key)
                consts[key] = replay(value.expand_as(x))
        return consts


def _broadcast_bound(bound: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    value = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
    if value.ndim == 1 and x.ndim > 2 and value.shape[0] == x.shape[1]:  # per channel
        value = value.view(1, -1, *([1] * (x.ndim - 2)))
    try:
        return torch.broadcast_to(value, x.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the input {tuple(x.shape)}; "
            "give a scalar, one value per channel, or a tensor shaped like the input"
        ) from None


class Redistribute(torch.autograd.Function):
    """Forward: the layer output unchanged. Backward: the rule's modified gradient (or direct relevance)."""

    @staticmethod
    def forward(ctx, x, out, state: LayerState, session: Session):
        ctx.state, ctx.session = state, session
        ctx.save_for_backward(x)
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        state, session = ctx.state, ctx.session
        weight, bias = state.weight, state.bias
        if state.fold is not None:
            scale, bias = state.fold
            weight = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
        relevance = state.z * grad
        direct = state.rule.direct
        constants = session.bounds(state.rule, state.replay) if direct else None
        result = redistribute(state.rule, state.layer, x, weight, bias, relevance, state.z, constants)
        incoming = relevance.flatten(1).sum(1)
        if direct:
            session.absorb(incoming - result.flatten(1).sum(1))
            session.write_direct(result, state.replay)
            return None, None, None, None
        session.absorb(incoming - (x.detach() * result).flatten(1).sum(1))
        return result, None, None, None
