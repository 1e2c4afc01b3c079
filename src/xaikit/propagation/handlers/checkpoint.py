"""Activation checkpointing (``torch.utils.checkpoint``) inside an explained forward pass.

A checkpointed segment keeps no activations in the forward pass and recomputes them in the backward pass
(Chen et al. 2016, "Training deep nets with sublinear memory cost"). Under the engine that recomputation
cannot work: it runs outside the session, so the segment's rules are not applied (``use_reentrant=False``:
torch finds other saved tensors and raises ``CheckpointError``), and the reentrant variant refuses
``torch.autograd.grad`` outright. An explained pass holds the activations its rules need anyway, so for the
call — in the calling thread only, the model unchanged — :class:`PlainCheckpoints` makes
``checkpoint(fn, *args, **kwargs)`` run ``fn(*args, **kwargs)`` directly, as a plain forward pass that the
session sees operation by operation (``checkpoint_sequential`` and Hugging Face's gradient checkpointing go
through the same function). ``checkpoint`` reads its two variants from its module's globals at each call:
those two names are replaced while any thread explains, by shims that pass every other caller on to torch's
own implementation.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterator

import torch.utils.checkpoint as _checkpoint

if TYPE_CHECKING:
    from ..session import Session

_LOCAL = threading.local()  #: ``depth``: explained passes running in this thread
_LOCK = threading.Lock()
_USERS = 0  #: explained passes running in any thread (the shims are installed while > 0)
_REENTRANT = getattr(_checkpoint, "CheckpointFunction", None)
_NON_REENTRANT = getattr(_checkpoint, "_checkpoint_without_reentrant_generator", None)


def _plain() -> bool:
    """Whether this thread is inside an explained forward pass."""
    return getattr(_LOCAL, "depth", 0) > 0


if _REENTRANT is not None:
    class _Reentrant(_REENTRANT):
        """``checkpoint(..., use_reentrant=True)`` calls ``CheckpointFunction.apply(fn, preserve, *args)``."""

        @classmethod
        def apply(cls, function: Any, preserve_rng_state: bool, *args: Any) -> Any:  # type: ignore[override]
            if _plain():
                return function(*args)
            return _REENTRANT.apply(function, preserve_rng_state, *args)


def _non_reentrant(fn: Any, *rest: Any, **kwargs: Any) -> Iterator[None]:
    """``checkpoint(..., use_reentrant=False)`` runs ``fn`` between two steps of this generator (the first
    enters torch's saved-tensor hooks; here nothing is entered and ``fn`` runs as it is)."""
    if _plain():
        yield
        return
    yield from _NON_REENTRANT(fn, *rest, **kwargs)


def _install(on: bool) -> None:
    if _REENTRANT is not None:
        _checkpoint.CheckpointFunction = _Reentrant if on else _REENTRANT
    if _NON_REENTRANT is not None:
        _checkpoint._checkpoint_without_reentrant_generator = _non_reentrant if on else _NON_REENTRANT


class PlainCheckpoints:
    """For one explained forward pass: checkpointed segments run as plain forward passes (module docstring)."""

    def __init__(self, s: Session) -> None:
        self.s = s

    def __enter__(self) -> "PlainCheckpoints":
        global _USERS
        with _LOCK:
            if _USERS == 0:
                _install(True)
            _USERS += 1
        _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _USERS
        _LOCAL.depth -= 1
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                _install(False)
