"""The propagation engine: LRP as "input × modified gradient", applied for one forward pass.

A :class:`Session` runs the model's forward pass under a ``TorchFunctionMode`` that sees every torch
operation. Operations on activations are dispatched to small handlers (:mod:`.ops`) that return the same
values as the plain operation but change what the backward pass carries, so that for every tensor
``R_t = t ⊙ g_t``. Nothing is registered on the user's modules: the mode is active only inside
:meth:`Session.forward` and leaves with it (also when the forward raises); the modifications live on the
autograd graph of that one call and are freed with it.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .composites import Composite
from .coverage import Coverage
from .layers import LayerCall
from .rules import Rule, redistribute

Replay = Callable[[torch.Tensor], torch.Tensor]
#: the training-mode opt-in (see :func:`differentiable_pass`)
_DIFFERENTIABLE: contextvars.ContextVar[bool] = contextvars.ContextVar("xaikit_differentiable", default=False)


@contextlib.contextmanager
def differentiable_pass():
    """Explanations computed inside are differentiable: gradient methods take their backward pass with
    ``create_graph=True`` and sessions use the training-mode handlers of :mod:`.training`, so a loss on the
    explanation has exact gradients w.r.t. the parameters (and the input, where it carries a graph)."""
    token = _DIFFERENTIABLE.set(True)
    try:
        yield
    finally:
        _DIFFERENTIABLE.reset(token)


def differentiable() -> bool:
    """Whether explanations are being computed differentiably (inside :func:`differentiable_pass`)."""
    return _DIFFERENTIABLE.get()


#: context managers ``setup(session)`` entered around every explained forward pass, e.g. to register
#: forward hooks on the model's modules for the call only (extensions such as :mod:`.sequence_ops` add to it)
SETUP: list[Callable[["Session"], ContextManager]] = []


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


#: operations whose output is ≥ 0 whenever all their activation inputs are
KEEPS_NONNEGATIVE = {
    "reshape", "view", "view_as", "flatten", "unflatten", "permute", "transpose", "contiguous", "squeeze",
    "unsqueeze", "getitem", "narrow", "select", "clone", "to", "float", "expand", "expand_as", "cat", "concat",
    "stack", "add", "mul", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "dropout", "dropout2d",
    "interpolate", "relu", "pad", "constant_pad_nd",
}
_NONNEGATIVE_SOURCES = {"relu", "relu6", "sigmoid", "softmax", "hardsigmoid", "softplus"}


def _constants_nonnegative(name: str, args: tuple, kwargs: dict, activations: list) -> bool:
    """The other operands of a sum, product or concatenation (constants, numbers) are ≥ 0 too."""
    if name in ("pad", "constant_pad_nd"):  # the fill value of constant padding
        value = kwargs.get("value", args[3] if name == "pad" and len(args) > 3 else
                           args[2] if name == "constant_pad_nd" and len(args) > 2 else 0)
        return value is None or value >= 0
    if name not in ("add", "mul", "cat", "concat", "stack"):
        return True
    acts = {id(t) for t in activations}
    for value in (*args, *kwargs.values(), *(args[0] if args and isinstance(args[0], (list, tuple)) else ())):
        if isinstance(value, torch.Tensor) and id(value) not in acts and value.is_floating_point():
            if not bool((value >= 0).all()):
                return False
        elif name in ("add", "mul") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value < 0:  # (for cat/stack, numbers are dimensions)
            return False
    return True


def _makes_nonnegative(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _NONNEGATIVE_SOURCES:
        return True
    if name == "hardtanh":  # ReLU6 is hardtanh(x, 0, 6)
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return isinstance(low, (int, float)) and low >= 0
    return False


def _rectifies(name: str, args: tuple, kwargs: dict) -> bool:
    """ReLU and ReLU6 (hardtanh from 0): their gradient, as every rule passes it, is zero for negative inputs."""
    return name == "relu" or (name in ("relu6", "hardtanh") and _makes_nonnegative(name, args, kwargs))


class Held:
    """A tensor value that the backward pass needs, kept intact through later in-place operations.

    The session copies the value only when an in-place operation is about to modify it (in-place ReLU is
    harmless: relevance ``z ⊙ g`` is unchanged where the ReLU zeroes ``z``, because ``g`` is zero there).
    """

    __slots__ = ("value", "version")

    def __init__(self, value: torch.Tensor) -> None:
        self.value, self.version = value, value._version

    def get(self) -> torch.Tensor:
        if self.value._version != self.version:
            raise RuntimeError(
                "a tensor that LRP needs in the backward pass was modified in place through a view during the "
                "forward pass; use out-of-place operations in the model (e.g. x = x + y instead of x[...] += y)"
            )
        return self.value


def is_inplace(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether a call may modify its first argument in place (conservative: any ``True`` flag counts)."""
    name = getattr(func, "__name__", "")
    if (name.startswith("__i") and name.endswith("__")) or name == "__setitem__":
        return True
    if name.endswith("_") and not name.endswith("__"):
        return True
    return kwargs.get("inplace") is True or any(a is True for a in args[1:])


@dataclass
class LayerState:
    """What a layer handler remembers for BN folding and its modified backward."""

    rule: Rule
    kind: str
    layer: "LayerCall | None" = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    z: Held | None = None  #: output value that the relevance R = z ⊙ g refers to
    scale: torch.Tensor | None = None  #: ε gradient rescaling at the output
    absorb: torch.Tensor | None = None  #: per-element relevance absorbed by bias and ε (per unit gradient)
    fold: tuple[torch.Tensor, torch.Tensor] | None = None  #: (per-channel scale, folded bias) of a BatchNorm
    z_fold: Held | None = None  #: the BatchNorm's output value
    scale_fold: torch.Tensor | None = None  #: ε rescaling computed from the folded output
    uses: int = 0  #: operations that consumed the layer output during the forward pass
    #: for each operation that consumed the layer output ("layer") or its folded BatchNorm's ("fold") before an
    #: in-place change of it: whether its gradient is zero where that output is negative (a ReLU)
    rectifiers: dict[str, list[bool]] = field(default_factory=lambda: {"layer": [], "fold": []})
    overwritten: set[str] = field(default_factory=set)  #: outputs changed in place (later uses see another value)
    replay: Replay | None = None  #: for first-layer direct rules: recompute the layer input from x
    extra: dict = field(default_factory=dict)

    @property
    def folded(self) -> bool:
        """The BatchNorm fold holds when the BatchNorm was the only consumer (known once the forward ended)."""
        return self.fold is not None and self.uses == 1

    @property
    def output(self) -> str:
        """Which output the rule sees: its folded BatchNorm's (``"fold"``) or the layer's own (``"layer"``)."""
        return "fold" if self.folded else "layer"

    @property
    def rectified(self) -> bool:
        """Every consumer of the (folded) output is a rectifier: no relevance reaches negative outputs."""
        consumers = self.rectifiers[self.output]
        return bool(consumers) and all(consumers)

    def fused_rectifier(self) -> "Held | None":
        """The output of the ReLU/ReLU6 that is the (folded) output's only consumer (see ``ops._Rectifier``):
        the rule then reads its relevance ``y ⊙ g_y`` there, and the rectifier passes ``g_y`` on unchanged."""
        key = self.output
        outputs = self.extra.get("rectifier_outputs", {}).get(key, [])
        return outputs[0] if len(outputs) == 1 and self.rectifiers[key] == [True] else None

    def consumed(self, key: str, rectifies: bool, overwrites: bool) -> None:
        """Record a use of the layer output (``key="layer"``) or of its folded BatchNorm's (``"fold"``)."""
        self.uses += key == "layer"
        if key not in self.overwritten:
            self.rectifiers[key].append(rectifies)
        if overwrites:
            self.overwritten.add(key)


#: reads of a tensor's metadata: nothing flows through them, so the mode passes them on without dispatching
_METADATA = frozenset({
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.stride, torch.Tensor.is_contiguous,
    *(getattr(torch.Tensor, name).__get__
      for name in ("shape", "ndim", "dtype", "device", "layout", "requires_grad", "grad_fn", "is_leaf")),
})


class _Mode(TorchFunctionMode):
    def __init__(self, session: "Session") -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _METADATA:
            return func(*args, **(kwargs or {}))
        return self.session.dispatch(func, args, kwargs or {})


class Session:
    """One explained forward pass of ``model`` under ``composite``.

    After the backward pass, :attr:`direct` holds relevance written at the input by first-layer rules,
    :attr:`absorbed` the per-sample relevance absorbed by biases and stabilisers, and :attr:`coverage` the
    operations seen.
    """

    def __init__(self, model: nn.Module, composite: Composite) -> None:
        from . import ops, training  # the handlers import this module

        self.model = model
        self.composite = composite
        #: training mode (:func:`differentiable_pass`): rules as differentiable operations, exact double backward
        self.differentiable = differentiable()
        self.handlers = training.handlers() if self.differentiable else ops.HANDLERS
        self.explaining = True  #: until :meth:`release`: the backward pass is the explained one
        self.coverage = Coverage()
        self.owners = {
            id(p): (name, module) for name, module in model.named_modules() for p in module.parameters(recurse=False)
        }
        self.input: torch.Tensor | None = None
        self.chain: dict[int, tuple[torch.Tensor, Replay]] = {}
        self.layers: dict[int, LayerState] = {}
        self.fold_outputs: dict[int, LayerState] = {}  #: BatchNorm outputs folded into a layer's rule
        self.gates: dict[int, torch.Tensor] = {}
        self.held: dict[int, list[Held]] = {}
        self.holders: list[Held] = []  #: every value held for the backward pass (see :meth:`release`)
        self.nonnegative: dict[int, torch.Tensor] = {}  #: outputs known to be ≥ 0 by how they were made
        self.constants: dict[int, torch.Tensor] = {}  #: tensors with a gradient path to parameters only
        self.external: dict[int, torch.Tensor] = {}  #: tensors computed from other floating-point inputs
        self.direct: torch.Tensor | None = None
        self.absorbed: torch.Tensor | None = None
        self.scratch: dict[str, torch.Tensor] = {}  #: reused temporaries of the backward pass (see :meth:`buffer`)
        self.largest = 0  #: elements of the largest layer output of the forward pass

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run the model on ``x`` (a leaf that requires grad) with the rules applied."""
        return self.run(x, lambda: self.model(x, *args, **kwargs), (args, kwargs))

    def run(self, x: torch.Tensor, call: Callable[[], Any], inputs: Any = ()) -> Any:
        """Run ``call()`` with the rules applied, explaining the leaf ``x`` that it computes from.

        ``x`` need not be what ``call`` passes to the model: for token ids it is the output of the input
        embedding, substituted by a forward hook (:mod:`xaikit.tokens`). ``inputs`` are the model's other
        inputs: what the model computes from floating-point ones is *external* (its relevance is residual, not
        absorbed like that of the model's own constants). The context managers in :data:`SETUP` (e.g. module
        hooks of :mod:`.sequence_ops`) are active for the call.
        """
        self.external = {id(t): t for t in tensors_in(inputs) if t.is_floating_point()}
        self.input = x
        self.chain = {id(x): (x, lambda base: base)}
        self.absorbed = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        with contextlib.ExitStack() as stack:
            for setup in SETUP:
                stack.enter_context(setup(self))
            with _Mode(self):
                out = call()
        for state in self.layers.values():  # folds whose layer output had other consumers do not hold
            if state.fold is not None and not state.folded:
                self.coverage.move("handled", "batch_norm:folded", "linear", "batch_norm")
        return out

    def is_external(self, t: Any) -> bool:
        """A tensor computed from the model's other floating-point inputs (not from the explained input)."""
        return id(t) in self.external

    def is_activation(self, t: Any) -> bool:
        """A tensor that depends on the explained input (not a parameter, buffer or constant)."""
        return (isinstance(t, torch.Tensor) and t.requires_grad and (t.grad_fn is not None or t is self.input)
                and id(t) not in self.constants)

    def dispatch(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        activations = [t for t in tensors_in((args, kwargs)) if self.is_activation(t)]
        if not activations:  # computed from parameters only (a position embedding, a weight slice): a constant
            out = func(*args, **kwargs)
            for value in tensors_in(out):
                if value.grad_fn is not None:
                    self.constants[id(value)] = value
            if self.external and any(id(t) in self.external for t in tensors_in((args, kwargs))):
                self.external.update((id(value), value) for value in tensors_in(out))
            return out
        if self.constants and args and is_inplace(func, args, kwargs) and id(args[0]) in self.constants:
            del self.constants[id(args[0])]  # a constant updated in place with an activation becomes one
        name = op_name(func)
        handler = self.handlers.get(name)
        if handler is None:
            from .ops import classify_plain as handler
        touched = [t for t in activations if id(t) in self.held] if self.held else ()
        if touched and is_inplace(func, args, kwargs) and name != "relu":
            for t in touched:  # keep the values the backward pass needs
                copy = t.detach().clone()
                for holder in self.held.pop(id(t)):
                    holder.value, holder.version = copy, copy._version
            touched = ()
        out = handler(self, func, name, args, kwargs, activations)
        if _makes_nonnegative(name, args, kwargs) or (
            name in KEEPS_NONNEGATIVE and all(id(t) in self.nonnegative for t in activations)
            and _constants_nonnegative(name, args, kwargs, activations)
        ):
            for t in tensors_in(out):
                self.nonnegative[id(t)] = t
        for t in touched:  # an in-place ReLU: values stay valid (see Held)
            for holder in self.held.get(id(t), ()):
                holder.version = t._version
        if self.layers and next(tensors_in(out), None) is not None:  # not `x.shape` and other attributes
            rectifies = _rectifies(name, args, kwargs)
            inplace = is_inplace(func, args, kwargs)
            for t in activations:
                for key, table in (("layer", self.layers), ("fold", self.fold_outputs)):
                    state = table.get(id(t))
                    if state is not None:
                        state.consumed(key, rectifies, inplace and t is args[0])
        return out

    def remember(self, out: torch.Tensor, state: LayerState) -> None:
        """Remember a layer output (kept alive for the call, so tensor ids stay unique)."""
        self.layers[id(out)] = state
        state.extra["out"] = out
        self.largest = max(self.largest, out.numel())

    def buffer(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor shaped like ``like``, reused by every layer of the call under ``key``.

        The rules' large temporaries (the relevance ``z ⊙ g``, the products of the bookkeeping) then take
        fresh memory once per call instead of once per layer: fresh memory costs page faults, which on CPU
        cost more than the element-wise operation that fills it. Sized for the largest layer tensor of the
        forward pass (larger requests grow it); a value is valid until the next request under the same key.
        """
        flat = self.scratch.get(key)
        n = like.numel()
        if flat is None or flat.numel() < n or flat.dtype != like.dtype or flat.device != like.device:
            flat = self.scratch[key] = torch.empty(max(n, self.largest), dtype=like.dtype, device=like.device)
        return flat[:n].view(like.shape)

    def sample_dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample ``Σ a ⊙ b``, the product written to a reused buffer."""
        return torch.mul(a, b, out=self.buffer("product", a)).flatten(1).sum(1)

    def hold(self, t: torch.Tensor) -> Held:
        """Keep ``t``'s current value for the backward pass (copied only if modified in place later)."""
        holder = Held(t)
        self.held.setdefault(id(t), []).append(holder)
        self.holders.append(holder)
        return holder

    def release(self) -> None:
        """Drop the values kept for the backward pass, once it has run (or the call failed).

        The modified backward functions reach the session and its layer states from the autograd graph, and
        those hold tensors whose graph leads back to the functions: a reference cycle through the graph that
        Python's collector cannot see. Without this, every call would keep its activations alive.
        """
        self.explaining = False
        for holder in self.holders:
            holder.value = None
        for state in self.layers.values():
            state.extra.clear()
            state.replay = None
        for table in (self.layers, self.fold_outputs, self.held, self.chain, self.gates, self.nonnegative,
                      self.constants, self.external, self.scratch):
            table.clear()
        self.holders.clear()
        self.input = None

    def tag_gate(self, out: torch.Tensor) -> None:
        self.gates[id(out)] = out

    # -- backward bookkeeping ------------------------------------------------------------------------------
    def absorb(self, amount: torch.Tensor) -> None:
        """Add per-sample absorbed relevance ``(N,)`` (called from backward hooks).

        A layer applied to a flattened batch (e.g. ``(N·L, D)`` rows, as GPT-2's ``Conv1D`` does) reports one
        value per row: rows are summed per sample (batch-major order).
        """
        amount = amount.detach().to(self.absorbed.dtype)
        n = self.absorbed.shape[0]
        if amount.shape != (n,):
            amount = amount.reshape(n, -1).sum(1) if amount.numel() % n == 0 else amount.sum().expand(n) / n
        self.absorbed = self.absorbed + amount

    def write_direct(self, relevance: torch.Tensor, replay: Replay) -> None:
        """Add relevance computed at a first layer's input, mapped back to the model input through ``replay``."""
        base = torch.zeros_like(self.input).requires_grad_(True)
        with torch.enable_grad():
            (mapped,) = torch.autograd.grad(replay(base), base, relevance, allow_unused=True,
                                            create_graph=self.differentiable)
        mapped = torch.zeros_like(base) if mapped is None else mapped if self.differentiable else mapped.detach()
        self.direct = mapped if self.direct is None else self.direct + mapped

    def bounds(self, rule: Rule, replay: Replay) -> dict[str, torch.Tensor]:
        """Constant inputs of a direct rule at the first layer's input: ones, and the box bounds."""
        x = self.input.detach()
        consts = {"ones": _replay_constant(replay, x.new_ones((1, *x.shape[1:])), x)}  # padding gets no relevance
        if any(t.input in ("low", "high") for p in rule.parts for t in p.terms):
            dims = tuple(range(2, x.ndim)) if x.ndim > 2 else tuple(range(1, x.ndim))
            for key, bound, default in (("low", rule.low, x.amin), ("high", rule.high, x.amax)):
                value = default(dim=dims, keepdim=True) if bound is None else _broadcast_bound(bound, x, key)
                consts[key] = _replay_constant(replay, value, x)
        return consts


def _replay_constant(replay: Replay, value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``replay`` of a constant input: for one sample when the value is the same for all samples (the layer's
    forward of it then costs one sample, and broadcasts) and the replay allows it, else for the batch."""
    if value.shape[0] == 1:
        try:
            one = replay(value.expand(1, *x.shape[1:]))
            if one.shape[0] == 1:
                return one
        except (RuntimeError, ValueError, IndexError):  # a replay written for the batch size
            pass
    return replay(value.expand_as(x))


def _broadcast_bound(bound: Any, x: torch.Tensor, name: str) -> torch.Tensor:
    value = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
    if value.ndim == 1 and x.ndim > 2 and value.shape[0] == x.shape[1]:  # per channel
        value = value.view(1, -1, *([1] * (x.ndim - 2)))
    try:
        full = torch.broadcast_to(value, x.shape)
        return full[:1] if value.ndim < x.ndim or value.shape[0] == 1 else full  # [:1]: the same for all
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the input {tuple(x.shape)}; "
            "give a scalar, one value per channel, or a tensor shaped like the input"
        ) from None


class Redistribute(torch.autograd.Function):
    """Forward: the layer output (computed here, no extra copy). Backward: the rule's modified gradient, or
    direct relevance for first-layer rules."""

    @staticmethod
    def forward(ctx, x, state: LayerState, session: Session):
        ctx.state, ctx.session = state, session
        ctx.save_for_backward(x)
        return state.layer.native(x, state.weight, state.bias)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        state, session = ctx.state, ctx.session
        weight, bias = state.weight, state.bias
        if state.folded:
            scale, bias = state.fold
            weight = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
            z = state.z_fold.get()
        else:
            z = state.z.get()
        rectifier = state.fused_rectifier()  # R at the rectifier's output: the same relevance, R_z = R_y
        relevance = torch.mul(z if rectifier is None else rectifier.get(), grad, out=session.buffer("relevance", z))
        direct = state.rule.direct
        constants = session.bounds(state.rule, state.replay) if direct else None
        rectified = state.rectified and session.composite.op_rule("relu") != "deconvnet"
        result, absorbed = redistribute(state.rule, state.layer, x, weight, bias, relevance, z, constants,
                                        nonnegative=state.extra.get("nonnegative", False), rectified=rectified)
        if direct:
            session.absorb(relevance.flatten(1).sum(1) - result.flatten(1).sum(1))
            session.write_direct(result, state.replay)
            return None, None, None
        if absorbed is None:
            absorbed = relevance.flatten(1).sum(1) - session.sample_dot(x.detach(), result)
        session.absorb(absorbed)
        return result, None, None


class FoldGate(torch.autograd.Function):
    """Output of a BatchNorm folded into the preceding layer. Backward: the gradient passes unchanged to the
    layer (whose rule sees the folded layer) when the fold holds; otherwise the BatchNorm's own gradient
    ``scale ⊙ g`` with its shift absorbing ``shift ⊙ g``."""

    @staticmethod
    def forward(ctx, x, norm: Callable, state: LayerState, session: Session, scale, shift):
        ctx.state, ctx.session, ctx.affine = state, session, (scale, shift)
        return norm(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.state.folded:
            return grad, None, None, None, None, None
        scale, shift = ctx.affine
        ctx.session.absorb((grad * shift).flatten(1).sum(1))
        return grad * scale, None, None, None, None, None
