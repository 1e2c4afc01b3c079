"""Products of activations (uniform rule, or "signal takes all" when a factor is a gate), gates seen through
views and element-wise masks, and the softmax (Taylor rule with its bias term reported as absorbed, or
detached for CP-LRP).

Gates come in two kinds, each with its own rule in the composite (:mod:`..composites`): sigmoid-type gates
(``sigmoid``/``hardsigmoid`` outputs, kind ``"gate"``) and softmax outputs (attention weights, kind
``"attention"``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..classify import GATE_ARITHMETIC, GATE_KEEPING, GATE_VIEWS, tensors_in
from ..explained import scale, stop, watch
from .plain import call, classify_plain
from .statistics import of_gates

if TYPE_CHECKING:
    from ..session import Session


def product(s: Session, func, name, args, kwargs, acts):
    """Products of activations: uniform split, or "signal takes all" when a factor is a gate whose kind's rule
    (``gate`` for sigmoid-type gates, ``attention`` for softmax weights) says so.

    A softmax output is attention where it is contracted with the values (``matmul``, ``bmm``, ``einsum``:
    ``A·V``); multiplied element-wise it weighs a signal as a gate does (a mixture-of-experts router's top-k
    weight scaling its expert's output, attention pooling written as a product) and gets the ``gate`` rule."""
    if len(acts) < 2:  # scaling by a parameter or constant: linear
        return classify_plain(s, func, name, args, kwargs, acts)
    held = {id(t) for t in acts if id(t) in s.gates and s.composite.op_rule(_kind(s, t, name)) == "signal_takes_all"}
    if held and len(held) < len(acts):
        def detach(a):
            if isinstance(a, (list, tuple)):
                return type(a)(detach(i) for i in a)
            return stop(s, a) if isinstance(a, torch.Tensor) and id(a) in held else a

        s.coverage.add("handled", f"{name}:signal_takes_all")
        return func(*[detach(a) for a in args], **kwargs)
    return _uniform(s, func, name, args, kwargs, len(acts))


def _uniform(s: Session, func, name, args, kwargs, factors: int):
    """A product of ``factors`` activations under the composite's product rule: uniform, each factor receives
    ``1/factors`` of the relevance (AttnLRP, Achtibat et al. 2024, sec. 3), or the plain gradient."""
    rule = s.composite.op_rule("product")
    s.coverage.add("handled", f"{name}:{rule}")
    out = func(*args, **kwargs)
    if rule == "uniform":
        out = scale(s, out, 1.0 / factors)
    return out


def _kind(s: Session, gate: torch.Tensor, name: str) -> str:
    """The rule kind of a gate factor of the product ``name`` (see :func:`product`)."""
    return "gate" if name == "mul" else s.gate_kind(gate)


def glu(s: Session, func, name, args, kwargs, acts):
    """``F.glu(x, dim) = a ⊙ σ(b)`` (``a, b``: the halves of ``x``), dispatched as its parts: the sigmoid's
    output is a gate, so the product gets the composite's ``gate`` rule."""
    x = args[0] if args else kwargs["input"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
    a, b = call(s, torch.chunk, x, 2, dim)
    return call(s, torch.mul, a, call(s, torch.sigmoid, b))


def square(s: Session, func, name, args, kwargs, acts):
    """``x²`` (``torch.square``, e.g. the squared ReLU of RWKV's and Primer's feed-forward layers) is the product
    ``x · x`` and gets the product rule: under the uniform rule ``R_x = R_{x²}``, as for ``x * x`` written out."""
    return _uniform(s, func, name, args, kwargs, 2)


def softmax(s: Session, func, name, args, kwargs, acts):
    """Softmax: Taylor rule (gradient × input; its output is a gate) or detached (CP-LRP: no relevance through
    the weights). Under the Taylor rule (AttnLRP, Proposition 3.1) the relevance
    ``R_i = x_i (R̂_i − s_i Σ_j R̂_j)`` passed to the input is not the relevance ``R̂`` received; the difference
    is the share of the expansion's bias term and is reported as absorbed, like a layer's bias."""
    rule = s.composite.op_rule("softmax")
    out = func(*args, **kwargs)
    s.coverage.add("handled", f"{name}:{rule}")
    if rule == "detach":
        return stop(s, out)
    s.tag_gate(out, "attention")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    x = args[0] if args else kwargs.get("input")
    if rule != "taylor" or not isinstance(dim, int) or not s.is_activation(out):
        return out
    y = out.detach()  # softmax(x, dtype=torch.float32) (Hugging Face's eager attention): products in the wider type
    # per softmax row: received A = Σ y g, passed Σ x y (g − A) = B − A·C with B = Σ (x y) g, C = Σ x y;
    # x·y is 0 where y = 0 (also for masked scores x = −inf)
    xy = (x.detach() * y).nan_to_num_(0.0, 0.0, 0.0)
    c = xy.sum(dim, keepdim=True)

    def hook(g: torch.Tensor) -> None:
        # a row whose scores are all −inf (a padded query) is NaN; a later mask sets it to 0 (g = 0 there)
        yg = (y * g).nan_to_num_(0.0, 0.0, 0.0)
        received = yg.reshape(yg.shape[0], -1).sum(1)
        rows = (xy * g).sum(dim, keepdim=True) - yg.sum(dim, keepdim=True) * c
        s.absorb(received - rows.reshape(rows.shape[0], -1).sum(1), "softmax:taylor")

    return watch(s, out, hook)


def follow_gates(s: Session, func, name, args, kwargs, acts, out, mark) -> None:
    """A gate stays a gate (of the same kind) when it is

    - seen through a view, an index, an expand or a reshape (``A.view(...) @ v``, SE blocks'
      ``x * s[:, :, None, None]``): :data:`~..classify.GATE_VIEWS`;
    - masked or scaled element-wise, its other operands being constants, masks, other gates or statistics
      of gates (``masked_fill(a, ~mask, 0)``, ``torch.where(mask, a, 0)``, ``a * mask``, ``a * 0.5``, the
      renormalisation ``a / a.sum(-1, keepdim=True)``, ``a.clamp(...)``, ``a.topk(k)``):
      :data:`~..classify.GATE_KEEPING`;
    - combined only with gates by arithmetic (data-dependent weights: RWKV's denominator ``e₁·d + e₂``,
      Mamba-2's ``cumsum(Δ·A)``, ``exp(x) / exp(x).sum()``): :data:`~..classify.GATE_ARITHMETIC`.
    """
    if not s.gates:
        return
    if name in GATE_VIEWS:
        sources = [args[0]] if name.endswith("_as") else acts  # expand_as(x, other): other gives only a shape
        if not all(id(t) in s.gates for t in sources):
            return
    elif name in GATE_ARITHMETIC and all(id(t) in s.gates for t in acts):
        pass
    elif name not in GATE_KEEPING or not _keeps_gate(s, func, name, args, kwargs, acts):
        return
    kind = s.gate_kind(next(t for t in acts if id(t) in s.gates))
    for t in tensors_in(out):
        if t.requires_grad and id(t) not in s.gates:  # a handler's own tag (and kind) stays
            s.tag_gate(t, kind)


def _keeps_gate(s: Session, func, name, args, kwargs, acts) -> bool:
    """An element-wise operation of :data:`~..classify.GATE_KEEPING` whose activation operands are gates or
    statistics of gates (:func:`.statistics.of_gates`), one of them a gate; a division only of a gate by a
    constant or such a statistic (``1 / a`` and ``a / b`` of two gates are no gates)."""
    if not any(id(t) in s.gates for t in acts) or not all(id(t) in s.gates or of_gates(s, t) for t in acts):
        return False
    if name != "div":
        return True
    divisor = args[1] if len(args) > 1 else kwargs.get("other")
    return getattr(func, "__name__", "") != "__rtruediv__" and id(args[0]) in s.gates and id(divisor) not in s.gates
