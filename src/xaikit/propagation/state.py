"""What a session keeps for the backward pass: held values, per-layer states, and the training-mode flag."""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable

import torch

from .layers import LayerCall
from .rules import Rule

#: ``replay(base, positions=False)``: recompute a first layer's input from ``base`` in place of the model input,
#: through the index operations and element-wise affine maps between them (``positions=True``: through the
#: index operations only, i.e. where each input element lands)
Replay = Callable[..., torch.Tensor]
#: the training-mode opt-in (see :func:`differentiable_pass`)
_DIFFERENTIABLE: contextvars.ContextVar[bool] = contextvars.ContextVar("xaikit_differentiable", default=False)


@contextlib.contextmanager
def differentiable_pass():
    """Explanations computed inside are differentiable: gradient methods take their backward pass with
    ``create_graph=True`` and sessions use the training-mode handlers of :mod:`.handlers.training`, so a loss on the
    explanation has exact gradients w.r.t. the parameters (and the input, where it carries a graph)."""
    token = _DIFFERENTIABLE.set(True)
    try:
        yield
    finally:
        _DIFFERENTIABLE.reset(token)


def differentiable() -> bool:
    """Whether explanations are being computed differentiably (inside :func:`differentiable_pass`)."""
    return _DIFFERENTIABLE.get()


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
        """The output of the ReLU/ReLU6 that is the (folded) output's only consumer (see ``handlers.elementwise._Rectifier``):
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
