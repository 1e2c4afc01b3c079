"""Rematerialisation: the explained forward pass keeps only the inputs of the model's repeated blocks.

A deep model's explained pass keeps every activation its backward (modified or plain) needs: for a decoder
of ``B`` layers at ``L`` tokens that is ``B`` times one layer's activations. Activation checkpointing (Chen
et al. 2016, "Training deep nets with sublinear memory cost", sec. 3) keeps only each block's input and
recomputes the block during the backward pass. Here the same is done for the relevance pass, under the
same rules:

- the forward pass of each block runs plainly, without an autograd graph (the engine's handlers return the
  plain values, so nothing changes downstream), and one autograd node of :class:`_Block` stands for it,
  holding the block's input;
- its backward re-runs the block with gradients, under a fresh engine session of the same composite when an
  LRP method explains (:class:`~.session.Session`, so every operation of the block meets the handler it
  meets without rematerialisation), then takes the (modified) vector–Jacobian product from the block's
  output gradient to its input. The relevance the block's rules absorb and the operations they saw are added
  to the explaining session's; the recomputed activations are freed before the next block's.

Peak memory is then the blocks' inputs, one block's activations during its backward, and what lies outside
the blocks (embedding, final norm, output head). The repeated blocks are found generically
(:func:`find_blocks`: the ``nn.ModuleList`` of same-typed modules holding most parameters, e.g. a decoder's
``model.layers``); no per-model code. Only gradients of the explained input are computed (as every gradient
method of :mod:`xaikit.methods.gradient` does): parameters get none through a rematerialised block.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..tokens import NextToken
from .session import Session
from .state import differentiable

#: the values of the ``remat`` setting
REMAT_VALUES = (True, False, "auto")
#: ``remat="auto"`` rematerialises token-id inputs of at least this many tokens
AUTO_LENGTH = 1024


def check_remat(remat: Any) -> None:
    """Raise a ``ValueError`` naming ``remat`` unless it is ``True``, ``False`` or ``"auto"``."""
    if not any(remat is v or (isinstance(v, str) and remat == v) for v in REMAT_VALUES):
        raise ValueError(f"remat must be True, False or 'auto', got {remat!r}")


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: of the ``nn.ModuleList`` s whose (≥ 2) children are all of one class and
    hold parameters, the one with most parameters (a decoder's layers; empty list when there is none)."""
    best, most = [], 0
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        children = list(module)
        if len({type(c) for c in children}) != 1:
            continue
        count = sum(p.numel() for p in module.parameters())
        if count > most:
            best, most = children, count
    return best


def use_remat(remat: bool | str, model: nn.Module, x: torch.Tensor) -> bool:
    """Whether a call rematerialises: ``remat=True`` (refused in a differentiable pass and for a model
    without repeated blocks), ``False``, or ``"auto"``: token ids of at least :data:`AUTO_LENGTH` tokens, a
    model with repeated blocks, outside a differentiable pass."""
    if remat is False:
        return False
    if remat is True:
        if differentiable():
            raise ValueError("remat=True cannot run inside differentiable_pass() (the recomputed blocks have no "
                             "double backward); use remat=False")
        if not find_blocks(model):
            raise ValueError(f"remat=True: found no repeated blocks in {type(model).__name__} (an nn.ModuleList of "
                             "same-typed layers, such as a decoder's model.layers); use remat=False")
        return True
    return (not differentiable() and not x.is_floating_point() and x.ndim == 2 and x.shape[1] >= AUTO_LENGTH
            and bool(find_blocks(model)))


def position_limit(model: nn.Module) -> int | None:
    """The longest sequence the model's configuration allows (``max_position_embeddings`` or ``n_positions``
    of a Hugging Face config), or ``None``."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_context(model: nn.Module, ids: torch.Tensor) -> None:
    """Raise a ``ValueError`` naming ``x`` when the token ids are longer than the model's position limit."""
    limit = position_limit(model)
    if limit is not None and ids.ndim == 2 and ids.shape[1] > limit:
        raise ValueError(f"x has {ids.shape[1]} tokens, more than the model's position limit ({limit}, "
                         "config.max_position_embeddings): shorten the context to at most that many tokens or use "
                         "a model configured for longer ones")


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def long_context_kwargs(model: nn.Module, target: Any, length: int,
                        forward_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The call's target and keyword inputs for a rematerialised pass of a Hugging Face causal LM: no key/value
    cache (``use_cache=False``: a cache would keep every layer's keys and values, and a recomputed block
    would append to it twice) and, for a :class:`~xaikit.NextToken` target, logits only from the explained
    position on (``logits_to_keep``; the target then counts from the end of the kept logits). Other models and
    targets, or keywords the caller set, are left as they are."""
    kwargs = dict(forward_kwargs)
    if "use_cache" not in kwargs and _accepts(model, "use_cache"):
        kwargs["use_cache"] = False
    if isinstance(target, NextToken) and "logits_to_keep" not in kwargs and _accepts(model, "logits_to_keep") \
            and -length <= target.position < length:
        keep = length - target.position % length
        kwargs["logits_to_keep"] = keep
        target = NextToken(position=-keep, token=target.token)
    return target, kwargs


def _is_cache(value: Any) -> bool:
    """A key/value cache object (Hugging Face ``Cache``): updated by each block call, so not recomputable."""
    return not isinstance(value, torch.Tensor) and callable(getattr(value, "update", None)) \
        and hasattr(value, "get_seq_length")


class _Call:
    """One rematerialised call of a block: its function, its arguments (flattened) and where the explained
    activations among them are; runs it plainly (forward) or under a fresh session (backward)."""

    def __init__(self, function: Callable, leaves: list, spec: Any, positions: list[int],
                 session: Session | None) -> None:
        self.function, self.leaves, self.spec, self.positions = function, leaves, spec, positions
        self.session = session
        self.out_spec: Any = None
        self.out_leaves: list = []
        self.tensor_slots: list[int] = []
        acts = [leaves[i] for i in positions]
        if session is not None:  # what the session knows of the activations, for the recomputing session
            self.nonnegative = [id(t) in session.nonnegative for t in acts]
            self.rows = [session.rows_of(t) for t in acts]
            self.external = [v for i, v in enumerate(leaves) if i not in positions and isinstance(v, torch.Tensor)
                             and session.is_external(v)]
            self.constants = [v for i, v in enumerate(leaves) if i not in positions and isinstance(v, torch.Tensor)
                              and id(v) in session.constants]

    def call(self, acts: tuple) -> Any:
        leaves = list(self.leaves)
        for i, t in zip(self.positions, acts):
            leaves[i] = t
        args, kwargs = tree_unflatten(leaves, self.spec)
        return self.function(*args, **kwargs)

    def forward(self, acts: tuple) -> tuple:
        out = self.call(acts)
        leaves, self.out_spec = tree_flatten(out)
        self.tensor_slots = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        self.out_leaves = [None if i in self.tensor_slots else v for i, v in enumerate(leaves)]
        inputs = {id(t) for t in acts}
        return tuple(leaves[i].clone() if id(leaves[i]) in inputs else leaves[i] for i in self.tensor_slots)

    def output(self, tensors: tuple) -> Any:
        leaves = list(self.out_leaves)
        for i, t in zip(self.tensor_slots, tensors):
            leaves[i] = t
        return tree_unflatten(leaves, self.out_spec)

    def backward(self, acts: tuple, grads: tuple) -> list[torch.Tensor | None]:
        leaves = [a.detach().requires_grad_(True) for a in acts]
        child = None
        try:
            with torch.enable_grad():
                inputs = tuple(t.view_as(t) for t in leaves)  # made by an operation: an activation to a session
                if self.session is None:
                    out = self.call(inputs)
                else:
                    child = self._child(inputs)
                    out = child.run(child.input, lambda: self.call(inputs), self.external, recompute=True)
                tensors = [v for v in tree_flatten(out)[0] if isinstance(v, torch.Tensor)]
                pairs = [(t, g) for t, g in zip(tensors, grads) if g is not None and t.requires_grad]
                if not pairs:
                    return [None] * len(leaves)
                got = torch.autograd.grad([t for t, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)
            if child is not None:
                self.session.merge(child)
            return list(got)
        finally:
            if child is not None:
                child.release()

    def _child(self, inputs: tuple) -> Session:
        parent = self.session
        child = Session(parent.model, parent.composite)
        # the explained input of the child is a placeholder of the batch (no first-layer rule reads it):
        # the block's inputs are activations made by an operation (see :meth:`backward`)
        child.input = parent.absorbed.new_zeros((parent.absorbed.shape[0], 0))
        child.first_seen = True  # (the first-layer check belongs to the whole pass, see Session.run)
        for t, nonnegative, rows in zip(inputs, self.nonnegative, self.rows):
            if nonnegative:
                child.nonnegative[id(t)] = t
            if rows is not None:
                child.rows[id(t)] = (t, rows)
        for t in self.constants:
            child.constants[id(t)] = t
        return child


class _Block(torch.autograd.Function):
    """A block's forward without an autograd graph; backward: the block recomputed (:meth:`_Call.backward`)."""

    @staticmethod
    def forward(ctx, call: _Call, *acts: torch.Tensor) -> tuple:
        ctx.call = call
        ctx.save_for_backward(*acts)
        with torch._C.DisableTorchFunction():  # outside the session's mode: a plain forward pass
            return call.forward(acts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple:
        acts = ctx.saved_tensors
        call = ctx.call
        ctx.call = None
        return (None, *call.backward(acts, grads))


class Rematerialise:
    """For one explanation call: each of the model's repeated blocks (:func:`find_blocks`) runs as a
    :class:`_Block` node (module docstring), under ``session`` (an LRP session) or plainly (gradient
    methods). The blocks' ``forward`` is replaced on the instances inside the ``with`` block only, and
    restored on leaving it (also when it raised).

    Blocks that cannot be recomputed run as they are: a call that passes a key/value cache (it would be
    updated twice), and, when the composite has a first-layer rule, a block that reads the explained input.
    :attr:`skipped` counts them.
    """

    def __init__(self, model: nn.Module, session: Session | None = None) -> None:
        self.model, self.session = model, session
        self.blocks = find_blocks(model)
        self.saved: list[tuple[nn.Module, Any]] = []
        self.skipped = 0
        self.rematerialised = 0

    def __enter__(self) -> "Rematerialise":
        try:
            for block in self.blocks:
                own = block.__dict__.get("forward", None)
                self.saved.append((block, own))
                block.forward = self._wrap(block.forward)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for block, own in reversed(self.saved):
            if own is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = own
        self.saved.clear()

    def _wrap(self, function: Callable) -> Callable:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return self._call(function, args, kwargs)

        return forward

    def _call(self, function: Callable, args: tuple, kwargs: dict) -> Any:
        if not torch.is_grad_enabled():
            return function(*args, **kwargs)
        s = self.session
        leaves, spec = tree_flatten((args, kwargs))
        positions = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor) and v.is_floating_point()
                     and (s.is_activation(v) if s is not None else v.requires_grad)]
        first = s is not None and s.composite.first is not None and any(id(leaves[i]) in s.chain for i in positions)
        if not positions or first or any(_is_cache(v) for v in leaves):
            self.skipped += bool(positions)
            return function(*args, **kwargs)
        self.rematerialised += 1
        call = _Call(function, leaves, spec, positions, s)
        return call.output(_Block.apply(call, *(leaves[i] for i in positions)))


@contextlib.contextmanager
def rematerialised(model: nn.Module, on: bool, session: Session | None = None) -> Iterator[Rematerialise | None]:
    """``with rematerialised(model, on, session):`` the explanation call inside rematerialises the model's
    blocks when ``on`` (:class:`Rematerialise`), else runs as it is."""
    if not on:
        yield None
        return
    with Rematerialise(model, session) as remat:
        yield remat
