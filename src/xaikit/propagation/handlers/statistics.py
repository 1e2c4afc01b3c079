"""Normalisation statistics computed by hand, recognised at the op level.

A normalisation divides an activation by a statistic of itself: RMSNorm ``x · rsqrt(mean(x²) + ε)``
(Llama, Mistral, Qwen2, Gemma, T5), LayerNorm ``(x − μ) / sqrt(var + ε)`` written out (ConvNeXt's
LayerNorm2d), ``x / x.norm()``. Whatever module or function computes it, the engine sees the same ops: a
*reduction* of an activation (``mean``, ``sum``, ``var``, ``std``, ``norm``), turned into a *scale* by
``rsqrt``/``sqrt``/``reciprocal``/``pow`` (or used as a divisor), that multiplies or divides an activation.
Such a scale gets the composite's ``norm`` rule, as the native LayerNorm/RMSNorm do (:func:`.norms.norm`):
under ``"identity"`` it is held constant (detached), so the relevance of the output passes to the
normalised activation and none leaks into the statistic's branch (CP-LRP, Ali et al. 2022, sec. 3.2;
AttnLRP, Achtibat et al. 2024, sec. 3.3).

The operations computed only for the statistic (``x²``, ``rsqrt``, ``sqrt``, ``var``) are not linear and are
first counted as unknown; when the forward pass ends, those whose every use turned out to be part of a
statistic that was held constant are re-classified as handled (``"pow:norm_statistic"``). A square that also
feeds something else keeps its place among the unknown operations.

``F.normalize`` is dispatched as the operations PyTorch computes it from (:func:`normalize`). A tag also records
whether the statistic was computed from gates only (:func:`of_gates`): a gate renormalised by its own sum is
still a gate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..classify import INDEX_OPS, tensors_in
from ..explained import stop
from .plain import call, classify_plain

if TYPE_CHECKING:
    from ..session import Session


SQUARES = {"pow", "square", "abs"}
#: linear reductions: their output is a *reduced* value (a statistic once a root or a division uses it)
REDUCTIONS = {"mean", "sum", "nansum", "nanmean"}
#: reductions that are statistics themselves
SPREADS = {"var", "std", "norm", "vector_norm", "linalg_vector_norm", "var_mean", "std_mean"}
#: element-wise functions that turn a reduced value into a scale
ROOTS = {"rsqrt", "sqrt", "reciprocal", "pow", "rdiv"}
#: operations through which a statistic stays one (with constants: ε added, clamped, cast, viewed)
CARRY = INDEX_OPS | SQUARES | ROOTS | REDUCTIONS | {
    "add", "sub", "rsub", "mul", "div", "neg", "clamp", "clamp_min", "clip", "maximum", "to", "float",
}
#: operations whose output keeps a statistic's tag
KEPT = CARRY | SPREADS
_RANK = {"square": 0, "reduced": 1, "statistic": 2}
_STARTS = SQUARES | REDUCTIONS | SPREADS


@dataclass(eq=False)
class _Op:
    """An operation computed for a statistic, counted unknown until the statistic is used as a scale."""

    name: str
    holders: list["_Tag"] = field(default_factory=list)
    scaled: bool = False  #: a statistic computed from it was held constant as a scale


@dataclass(eq=False)
class _Tag:
    kind: str  #: "square", "reduced" or "statistic"
    value: torch.Tensor  #: kept alive for the call, so that tensor ids stay unique
    ops: list[_Op]
    uses: int = 0  #: operations that read the tensor
    kept: int = 0  #: of those, uses that are part of a statistic (carried on, or held constant as a scale)
    gates: bool = False  #: computed from gates only (``a.sum(-1, keepdim=True)`` of an attention ``a``)


class Statistics:
    """The tags of one explained forward pass (entered through :data:`..table.SETUP`); on exit, the
    operations computed only for statistics that were held constant are re-classified as handled."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.tags: dict[int, _Tag] = {}
        self.ops: list[_Op] = []

    def __enter__(self) -> "Statistics":
        self.s.statistics = self
        return self

    def __exit__(self, *exc) -> None:
        counts = self.s.coverage.counts["unknown"]
        for op in self.ops:
            if op.scaled and all(t.uses == t.kept for t in op.holders) and counts.get(op.name, 0) > 0:
                self.s.coverage.move("unknown", op.name, "handled", f"{op.name}:norm_statistic")
        for op in self.ops:  # tags and ops refer to each other: a cycle that would keep the tagged tensors
            op.holders.clear()  # (x², the mean square: activations' sizes) alive until Python's collector ran
        self.tags.clear()
        self.ops.clear()
        self.s.statistics = None

    def tag(self, t: Any, kind: str, ops: list[_Op], gates: bool = False) -> None:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            tag = _Tag(kind, t, ops, gates=gates)
            for op in ops:
                op.holders.append(tag)
            self.tags[id(t)] = tag

    def scale(self, t: torch.Tensor) -> None:
        """``t``'s tag is used as a scale, held constant."""
        tag = self.tags[id(t)]
        tag.kept += 1
        for op in tag.ops:
            op.scaled = True


def _name(func: Callable, name: str, args: tuple) -> str:
    """``1 / x`` (``__rtruediv__``) is a reciprocal, ``2 ** x`` (``__rpow__``) no power of ``x``."""
    raw = getattr(func, "__name__", "")
    if raw == "__rtruediv__":
        return "rdiv"
    if raw == "__rpow__":
        return "rpow"
    if name == "pow" and not (len(args) > 1 and isinstance(args[1], (int, float))):
        return "pow_by_tensor"
    return name


def follow(s: Session, func: Callable, name: str, args: tuple, kwargs: dict, acts: list, out: Any,
           mark: int) -> None:
    """After each operation: start, carry or end the statistic tags (see the module docstring)."""
    stats: Statistics | None = s.statistics
    if stats is None:
        return
    tagged = [tag for tag in map(stats.tags.get, map(id, acts)) if tag is not None] if stats.tags else []
    if not tagged and name not in _STARTS:
        return
    name = _name(func, name, args)
    for tag in tagged:
        tag.uses += 1
    outputs = [t for t in tensors_in(out) if t.requires_grad]
    if not outputs or (tagged and len(tagged) < len(acts)) or name not in KEPT:
        return  # mixed with another activation (a use as a scale is counted by the product handler)
    ops = [op for tag in tagged for op in tag.ops]
    new = [_Op(op) for kind, op in s.coverage.since(mark) if kind == "unknown"]
    stats.ops.extend(new)
    ops = list(dict.fromkeys(ops + new))
    rank = max((_RANK[t.kind] for t in tagged), default=-1)
    if name in SPREADS:
        kinds = ["statistic", "reduced"]  # var_mean/std_mean: (spread, mean)
    elif name in REDUCTIONS:
        kinds = ["reduced"]
    elif name in ROOTS and rank >= _RANK["reduced"]:
        kinds = ["statistic"]
    elif tagged:
        kinds = [tagged[_index_of_max(tagged)].kind]
    elif name in SQUARES and name != "pow_by_tensor":
        kinds = ["square"]
    else:
        return
    for tag in tagged:
        tag.kept += 1
    gates = all(id(t) in s.gates or of_gates(s, t) for t in acts)
    for i, t in enumerate(outputs):
        stats.tag(t, kinds[min(i, len(kinds) - 1)], ops, gates)


def of_gates(s: Session, t: Any) -> bool:
    """``t`` is a statistic (or a reduction, a square) computed from gates only: a gate divided by it, as in
    the renormalisation ``a / a.sum(-1, keepdim=True)``, is still a gate (see :func:`.products.follow_gates`)."""
    stats: Statistics | None = s.statistics
    tag = stats.tags.get(id(t)) if stats is not None else None
    return tag is not None and tag.gates


def _index_of_max(tagged: list[_Tag]) -> int:
    return max(range(len(tagged)), key=lambda i: _RANK[tagged[i].kind])


def _scale_operands(s: Session, name: str, args: tuple, kwargs: dict, acts: list) -> list[torch.Tensor]:
    """The operands of a product or division that are normalisation scales of the other activation."""
    stats: Statistics | None = s.statistics
    if stats is None or not stats.tags or len(acts) < 2 or s.composite.op_rule("norm") == "gradient":
        return []
    kinds = {id(t): stats.tags[id(t)].kind for t in acts if id(t) in stats.tags}
    if name == "div":  # x / statistic, x / reduction
        divisor = args[1] if len(args) > 1 else kwargs.get("other")
        if id(divisor) in kinds and kinds[id(divisor)] != "square" and id(args[0]) not in kinds:
            return [divisor]
        return []
    scales = [t for t in acts if kinds.get(id(t)) == "statistic"]
    return scales if len(scales) < len(acts) and any(id(t) not in kinds for t in acts) else []


def scaling(rule: Callable) -> Callable:
    def handler(s: Session, func, name, args, kwargs, acts):
        scales = _scale_operands(s, name, args, kwargs, acts)
        if not scales:
            return rule(s, func, name, args, kwargs, acts)
        ids = {id(t) for t in scales}
        for t in scales:
            s.statistics.scale(t)
        s.coverage.add("handled", f"{name}:{s.composite.op_rule('norm')}")
        swap = lambda a: stop(s, a) if isinstance(a, torch.Tensor) and id(a) in ids else a  # noqa: E731
        return func(*[swap(a) for a in args], **{k: swap(v) for k, v in kwargs.items()})

    return handler


_NORMALIZE = ("input", "p", "dim", "eps", "out")


def normalize(s: Session, func, name, args, kwargs, acts):
    """``F.normalize(x, p, dim, eps) = x / max(‖x‖_p, eps)``, dispatched as the parts PyTorch computes it from
    (``norm``, ``clamp_min``, ``expand``, ``div``), so that the division by the norm gets the composite's
    ``norm`` rule like ``x / x.norm(...)`` written out (the cosine attention of Swin-V2)."""
    p = {"p": 2.0, "dim": 1, "eps": 1e-12, "out": None, **dict(zip(_NORMALIZE, args)), **kwargs}
    x = p["input"]
    if p["out"] is not None or not s.is_activation(x):
        return classify_plain(s, func, name, args, kwargs, acts)
    norm = call(s, torch.Tensor.norm, x, p["p"], p["dim"], keepdim=True)
    denom = call(s, torch.Tensor.expand, call(s, torch.Tensor.clamp_min, norm, p["eps"]), x.shape)
    return call(s, torch.div, x, denom)
