"""Products of activations (uniform rule, or "signal takes all" when a factor is a gate), gates seen through
views, and the softmax (Taylor rule with its bias term reported as absorbed, or detached for CP-LRP)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..classify import GATE_VIEWS, tensors_in
from ..explained import scale, stop, watch
from .plain import classify_plain, row_dot

if TYPE_CHECKING:
    from ..session import Session


def product(s: Session, func, name, args, kwargs, acts):
    """Products of activations: uniform split, or "signal takes all" when one factor is a gate."""
    if len(acts) < 2:  # scaling by a parameter or constant: linear
        return classify_plain(s, func, name, args, kwargs, acts)
    gates = {id(t) for t in acts if id(t) in s.gates}
    if gates and len(gates) < len(acts) and s.composite.op_rule("gate") == "signal_takes_all":
        def detach(a):
            if isinstance(a, (list, tuple)):
                return type(a)(detach(i) for i in a)
            return stop(s, a) if isinstance(a, torch.Tensor) and id(a) in gates else a

        s.coverage.add("handled", f"{name}:signal_takes_all")
        return func(*[detach(a) for a in args], **kwargs)
    rule = s.composite.op_rule("product")
    s.coverage.add("handled", f"{name}:{rule}")
    out = func(*args, **kwargs)
    if rule == "uniform":
        out = scale(s, out, 1.0 / len(acts))
    return out


def softmax(s: Session, func, name, args, kwargs, acts):
    """Softmax: Taylor rule (gradient × input; its output is a gate) or detached (CP-LRP: no relevance through
    the weights). Under the Taylor rule (AttnLRP, Proposition 3.1) the relevance ``R_i = x_i (R̂_i − s_i Σ_j R̂_j)``
    passed to the input is not the relevance ``R̂`` received; the difference is the share of the expansion's
    bias term and is reported as absorbed, like a layer's bias."""
    rule = s.composite.op_rule("softmax")
    out = func(*args, **kwargs)
    s.coverage.add("handled", f"{name}:{rule}")
    if rule == "detach":
        return stop(s, out)
    s.tag_gate(out)
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
        received = row_dot(y, g)
        rows = (xy * g).sum(dim, keepdim=True) - (y * g).sum(dim, keepdim=True) * c
        s.absorb(received - rows.reshape(rows.shape[0], -1).sum(1), "softmax:taylor")

    return watch(s, out, hook)


def follow_gates(s: Session, func, name, args, kwargs, acts, out, mark) -> None:
    """A gate seen through a view, an index, an expand or a reshape (``A.view(...) @ v``, SE blocks'
    ``x * s[:, :, None, None]``) stays a gate, so the gate rule still finds it."""
    if not s.gates or name not in GATE_VIEWS:
        return
    sources = [args[0]] if name.endswith("_as") else acts  # expand_as(x, other): other gives only a shape
    if all(id(t) in s.gates for t in sources):
        for t in tensors_in(out):
            if t.requires_grad:
                s.tag_gate(t)
