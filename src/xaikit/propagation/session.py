"""The interception session: one explained forward pass of a model under a composite.

A :class:`Session` runs the model's forward pass under a ``TorchFunctionMode`` that sees every torch
operation. Operations on activations are dispatched to the handlers of :mod:`.table` (one small function per
operation family, :mod:`.handlers`), which return the same values as the plain operation but change what the
backward pass carries, so that for every tensor ``R_t = t ⊙ g_t``. Nothing is registered on the user's
modules: the mode is active only inside :meth:`Session.run` and leaves with it (also when the forward
raises); the modifications live on the autograd graph of that one call and are freed with it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..modes import eager
from .classify import (KEEPS_NONNEGATIVE, constants_nonnegative, is_inplace, makes_nonnegative, op_name,
                       out_of_place, rectifies, tensors_in)
from .composites import Composite
from .coverage import Coverage
from .handlers.opaque import stamp
from .handlers.plain import classify_plain
from .rows import per_sample
from .rules import Rule
from .state import Held, LayerState, Replay, differentiable
from .table import FOLLOW, HANDLERS, SETUP, TRAINING_HANDLERS, WHOLE_PASS

#: the sessions whose explained forward pass is running now (innermost last), see :func:`active_session`
_ACTIVE: list["Session"] = []


def active_session() -> "Session | None":
    """The session whose explained forward pass is running now (the innermost), or ``None``."""
    return _ACTIVE[-1] if _ACTIVE else None


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
        self.model = model = eager(model)  # a torch.compile wrapper: its module, run eagerly (see modes.eager)
        self.composite = composite
        composite.check_names(model)
        #: training mode (:func:`differentiable_pass`): rules as differentiable operations, exact double backward
        self.differentiable = differentiable()
        self.handlers = TRAINING_HANDLERS if self.differentiable else HANDLERS
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
        self.gate_kinds: dict[int, str] = {}  #: a gate's operation-rule kind (see :meth:`tag_gate`)
        self.held: dict[int, list[Held]] = {}
        self.holders: list[Held] = []  #: every value held for the backward pass (see :meth:`release`)
        self.nonnegative: dict[int, torch.Tensor] = {}  #: outputs known to be ≥ 0 by how they were made
        #: activations whose dimension 0 is not the batch: (tensor, the sample of each row), see :mod:`.rows`
        self.rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.constants: dict[int, torch.Tensor] = {}  #: tensors with a gradient path to parameters only
        self.external: dict[int, torch.Tensor] = {}  #: tensors computed from other floating-point inputs
        self.direct: torch.Tensor | None = None
        self.absorbed: torch.Tensor | None = None
        #: the absorbed relevance by operation label (``"linear:epsilon"``, ``"softmax:taylor"``, ...), per sample
        self.absorbed_by: dict[str, torch.Tensor] = {}
        self.scratch: dict[str, torch.Tensor] = {}  #: reused temporaries of the backward pass (see :meth:`buffer`)
        self.largest = 0  #: elements of the largest layer output of the forward pass
        self.statistics: Any = None  #: normalisation statistics of the forward pass (see :mod:`.handlers.statistics`)
        self.output: Any = None  #: the model output of the explained forward pass
        self.depth = 0  #: handlers running (> 1: an operation a handler dispatches, see :func:`.handlers.plain.call`)

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run the model on ``x`` (a leaf that requires grad) with the rules applied."""
        return self.run(x, lambda: self.model(x, *args, **kwargs), (args, kwargs))

    def run(self, x: torch.Tensor, call: Callable[[], Any], inputs: Any = (), recompute: bool = False) -> Any:
        """Run ``call()`` with the rules applied, explaining the leaf ``x`` that it computes from.

        ``x`` need not be what ``call`` passes to the model: for token ids it is the output of the input
        embedding, substituted by a forward hook (:mod:`xaikit.tokens`). ``inputs`` are the model's other
        inputs: what the model computes from floating-point ones is *external* (its relevance is residual, not
        absorbed like that of the model's own constants). The context managers in
        :data:`~.table.SETUP` (e.g. the module hooks of :mod:`.handlers.elementwise`) are active for the call.
        ``recompute``: the call recomputes a block of a rematerialised pass (:mod:`.remat`), whose explained
        input is not the model's: checks of the whole pass (the first-layer rule's) are left to that pass.
        """
        self.external = {id(t): t for t in tensors_in(inputs) if t.is_floating_point()}
        self.input = x
        self.chain = {id(x): (x, lambda base, positions=False: base)}
        # float16/bfloat16 inputs: the bookkeeping accumulates in float32
        low = x.dtype in (torch.float16, torch.bfloat16)
        self.absorbed = torch.zeros(x.shape[0], dtype=torch.float32 if low else x.dtype, device=x.device)
        _ACTIVE.append(self)
        try:
            with contextlib.ExitStack() as stack:
                for setup in SETUP:
                    if not (recompute and setup in WHOLE_PASS):
                        stack.enter_context(setup(self))
                with _Mode(self):
                    out = self.output = call()
        finally:
            _ACTIVE.pop()
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
            handler = classify_plain
        inplace = bool(args) and is_inplace(func, args, kwargs) and isinstance(args[0], torch.Tensor)
        if inplace:
            self.written(args[0])
            # a write through a view, or any write in training mode (a rule may return a new tensor, e.g. a
            # two-faced scaling of a product): as an out-of-place operation copied back, see `through_view`
            if (args[0]._is_view() or self.differentiable) and torch.is_grad_enabled():
                done = self.through_view(func, name, args, kwargs)
                if done is not None:
                    return done
        touched = [t for t in activations if id(t) in self.held] if self.held else ()
        if touched and inplace and name != "relu":
            for t in touched:  # keep the values the backward pass needs
                copy = t.detach().clone()
                for holder in self.held.pop(id(t)):
                    holder.value, holder.version = copy, copy._version
            touched = ()
        if not torch.is_grad_enabled():  # no autograd graph (a custom autograd.Function's forward): nothing to do
            return func(*args, **kwargs)
        mark = len(self.coverage.log)
        self.depth += 1
        out = handler(self, func, name, args, kwargs, activations)
        self.depth -= 1
        for follow in FOLLOW:
            follow(self, func, name, args, kwargs, activations, out, mark)
        if makes_nonnegative(name, args, kwargs) or (
            name in KEEPS_NONNEGATIVE and all(id(t) in self.nonnegative for t in activations)
            and constants_nonnegative(name, args, kwargs, activations)
        ):
            for t in tensors_in(out):
                self.nonnegative[id(t)] = t
        for t in touched:  # an in-place ReLU: values stay valid (see Held)
            for holder in self.held.get(id(t), ()):
                holder.version = t._version
        if self.layers and next(tensors_in(out), None) is not None:  # not `x.shape` and other attributes
            rectifying = rectifies(name, args, kwargs)
            for t in activations:
                for key, table in (("layer", self.layers), ("fold", self.fold_outputs)):
                    state = table.get(id(t))
                    if state is not None:
                        state.consumed(key, rectifying, inplace and t is args[0])
        return out

    def written(self, target: torch.Tensor) -> None:
        """Before an in-place operation on ``target``: it is no longer known to be ≥ 0; when it is a view, the
        values the backward pass holds that share its memory (its base, other views of it) are copied, and a
        layer output that is its base counts as overwritten (a later ReLU no longer reads the layer's value)."""
        self.nonnegative.pop(id(target), None)
        base = target._base if target._is_view() else None
        if base is None:
            return
        self.nonnegative.pop(id(base), None)
        for key, table in (("layer", self.layers), ("fold", self.fold_outputs)):
            state = table.get(id(base))
            if state is not None:
                state.overwritten.add(key)
        for key, holders in list(self.held.items()):
            value = holders[0].value
            if value is not target and (value is base or value._base is base):
                copy = value.detach().clone()
                for holder in self.held.pop(key):
                    holder.value, holder.version = copy, copy._version

    def through_view(self, func: Callable, name: str, args: tuple, kwargs: dict) -> Any:
        """``v.op_(...)`` on a view ``v`` as ``v.copy_(v.op(...))``, the out-of-place op dispatched (None when
        it has no out-of-place form). Autograd runs an in-place op on a view inside its base's node, where the
        hooks that rules register on the op's output would never run. In training mode (any ``v``) the op
        reads a copy of ``v`` (dispatched, so it keeps ``v``'s tags, and left out of the coverage): the copy
        back must not change a value that the op's backward reads."""
        plain, plain_args, plain_kwargs = out_of_place(func, name, args, kwargs)
        if plain is func and plain_args == args and plain_kwargs == kwargs:
            return None
        if self.differentiable and plain_args and plain_args[0] is args[0]:
            mark = len(self.coverage.log)
            plain_args = (self.dispatch(torch.clone, (args[0],), {}), *plain_args[1:])
            self.coverage.undo(mark)
        result = self.dispatch(plain, plain_args, plain_kwargs)
        if not isinstance(result, torch.Tensor):
            return None
        out = args[0].copy_(result)
        stamp(out)  # (the copy is the operation the model asked for, which the engine saw)
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
        for table in (self.layers, self.fold_outputs, self.held, self.chain, self.gates, self.gate_kinds,
                      self.nonnegative, self.constants, self.external, self.scratch, self.rows):
            table.clear()
        self.holders.clear()
        self.input = self.output = None

    def merge(self, other: "Session") -> None:
        """Add what ``other`` (a session that recomputed a block of this pass, see :mod:`.remat`) booked in its
        backward pass: absorbed relevance (per operation label), the operations seen, relevance written at the
        input."""
        self.absorbed = self.absorbed + other.absorbed.to(self.absorbed.dtype)
        for op, amount in other.absorbed_by.items():
            booked = self.absorbed_by.get(op)
            self.absorbed_by[op] = amount if booked is None else booked + amount
        for kind, counts in other.coverage.counts.items():
            self.coverage.counts[kind].update(counts)
        self.coverage.log.extend(other.coverage.log)

    def tag_gate(self, out: torch.Tensor, kind: str = "gate") -> None:
        """Mark ``out`` as a gate; ``kind`` names the composite's rule for products with it (``"gate"``:
        a sigmoid-type gate, ``"attention"``: softmax weights; see :mod:`.composites`)."""
        self.gates[id(out)] = out
        self.gate_kinds[id(out)] = kind

    def gate_kind(self, t: torch.Tensor) -> str:
        """The operation-rule kind of the gate ``t`` (tagged by :meth:`tag_gate`)."""
        return self.gate_kinds.get(id(t), "gate")

    # -- backward bookkeeping ------------------------------------------------------------------------------
    def absorb(self, amount: torch.Tensor, op: str, rows: torch.Tensor | None = None) -> None:
        """Add per-sample absorbed relevance ``(N,)`` (called from backward hooks), booked under the
        operation label ``op`` (``"linear:bias"``, ``"softmax:taylor"``, ...; see :attr:`absorbed_by`).

        A layer applied to rows that are not the batch reports one value per row: with ``rows`` (the sample of
        each row, :mod:`.rows`) they are summed per sample by it, otherwise in batch-major order (``(N·L, D)``
        rows, as GPT-2's ``Conv1D`` sees them).
        """
        amount = amount.detach().to(self.absorbed.dtype)
        n = self.absorbed.shape[0]
        if rows is not None and amount.shape[:1] == rows.shape:
            amount = per_sample(amount, rows, n)
        elif amount.shape != (n,):
            amount = amount.reshape(n, -1).sum(1) if amount.numel() % n == 0 else amount.sum().expand(n) / n
        self.absorbed = self.absorbed + amount
        booked = self.absorbed_by.get(op)
        self.absorbed_by[op] = amount if booked is None else booked + amount

    def rows_of(self, t: torch.Tensor) -> torch.Tensor | None:
        """The sample of each row of ``t`` where its dimension 0 is not the batch (``None``: batch-major)."""
        entry = self.rows.get(id(t))
        return None if entry is None else entry[1]

    def write_direct(self, relevance: torch.Tensor, replay: Replay) -> None:
        """Add relevance computed at a first layer's input, mapped back to the model input through ``replay``
        (each element's relevance goes to the input element it came from, also through an affine map)."""
        base = torch.zeros_like(self.input).requires_grad_(True)
        with torch.enable_grad():
            (mapped,) = torch.autograd.grad(replay(base, positions=True), base, relevance, allow_unused=True,
                                            create_graph=self.differentiable)
        mapped = torch.zeros_like(base) if mapped is None else mapped if self.differentiable else mapped.detach()
        self.direct = mapped if self.direct is None else self.direct + mapped

    def bounds(self, rule: Rule, replay: Replay) -> dict[str, torch.Tensor]:
        """Constant inputs of a direct rule at the first layer's input: ones, and the box bounds (given for the
        model input, carried through the affine maps before the layer; ordered again where a map flips them)."""
        x = self.input.detach()
        consts = {"ones": _replay_constant(lambda t: replay(t, positions=True), x.new_ones((1, *x.shape[1:])), x)}
        if any(t.input in ("low", "high") for p in rule.parts for t in p.terms):
            dims = tuple(range(2, x.ndim)) if x.ndim > 2 else tuple(range(1, x.ndim))
            for key, bound, default in (("low", rule.low, x.amin), ("high", rule.high, x.amax)):
                value = default(dim=dims, keepdim=True) if bound is None else _broadcast_bound(bound, x, key)
                consts[key] = _replay_constant(replay, value, x)
            consts["low"], consts["high"] = torch.minimum(consts["low"], consts["high"]), \
                torch.maximum(consts["low"], consts["high"])
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
