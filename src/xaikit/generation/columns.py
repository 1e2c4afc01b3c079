"""Relevance columns: several targets of the same sequences explained on one forward pass.

The relevance of a sequence for ``C`` targets (one per generated token, or one for a whole answer) is a
tokens × ``C`` matrix. For the methods whose explanation is one forward and one (modified) backward pass, LRP
with any composite, ``Gradient`` and ``InputXGradient``, the forward pass over the sequences runs **once** and
each column is one backward pass on its graph (``retain_graph``): the prompt's forward is shared by all
generated tokens, where repeating the sequence per target would run it ``C`` times. The LRP rules are linear in
the relevance the backward pass starts from, and the rules' coefficients are fixed by the forward pass, so every
column equals the explanation of its target alone (tests check both against single-target calls). The per-sample
absorbed relevance of the engine is read and reset between the passes, giving each column its own conservation
report.

Other methods that explain token ids get one copy of the sequence per column in one batched method call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..methods.base import Method
from ..methods.gradient import Gradient
from ..methods.propagation import LRP
from ..modes import eval_semantics
from ..propagation.balance import warn_absorbed, warn_unknown
from ..propagation.composites import auto_preset, make_composite
from ..propagation.remat import long_context_kwargs, rematerialised, use_remat
from ..propagation.session import Session
from ..tokens import model_scores
from .padding import accepts, sequence_inputs
from .targets import TokenLogits


@dataclass
class Columns:
    """``relevance`` ``(N, L, C)``, ``scores`` ``(N, C)`` (the explained values) and ``info`` (per-column
    tables ``(N, C)`` in ``conservation``; ``coverage``; ``shared_forward``: whether one forward pass served all
    columns)."""

    relevance: torch.Tensor
    scores: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def shares_forward(method: Method) -> bool:
    """Whether ``method`` is one forward and one backward pass (LRP, Gradient, InputXGradient and LRP presets),
    so that its columns can share the forward pass."""
    chunk = getattr(type(method), "_chunk", None)
    return chunk is LRP._chunk or chunk is Gradient._chunk


def relevance_columns(method: Method, sequences: torch.Tensor, mask: torch.Tensor, targets: list[TokenLogits],
                      given: dict[str, Any], last: int) -> Columns:
    """Explain ``targets`` (one :class:`TokenLogits` per column, with one row per sequence; a slot masked out
    for a sequence adds nothing to its column) for the left-padded ``sequences`` ``(N, L)``.

    ``last``: every target reads positions among the last ``last`` ones, so a model that takes ``logits_to_keep``
    (Hugging Face causal LMs) computes only their logits.
    """
    length = sequences.shape[1]
    if "logits_to_keep" not in given and accepts(method.model, "logits_to_keep") and last < length:
        given = {**given, "logits_to_keep": last}
        targets = [type(t)(t.positions - (length - last), t.tokens, t.mask) for t in targets]
    if shares_forward(method):
        return _shared(method, sequences, mask, targets, given)
    return _copies(method, sequences, mask, targets, given)


def _chunks(method: Method, n: int) -> list[slice]:
    size = method.batch_size if isinstance(getattr(method, "batch_size", None), int) else n
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _shared(method: Method, sequences: torch.Tensor, mask: torch.Tensor, targets: list[TokenLogits],
            given: dict[str, Any]) -> Columns:
    n, length = sequences.shape
    lrp = isinstance(method, LRP)
    if lrp and method.auto is not None:
        method.composite = make_composite(auto_preset(sequences), **method.auto)
    remat = _remat(method, sequences, len(targets))
    if remat:
        given = long_context_kwargs(method.model, None, length, given)[1]  # no key/value cache
    relevance = scores = None
    tables: dict[str, Any] = {}
    coverage = None
    with eval_semantics(method.model):
        for rows in _chunks(method, n):
            ids = sequences[rows]
            kwargs = sequence_inputs(method.model, mask[rows], **given)
            method.tokens.check(ids, kwargs)
            part = _one_forward(method, ids, kwargs, [t.take(torch.arange(n)[rows]) for t in targets], lrp, remat)
            if relevance is None:
                relevance = torch.zeros(n, length, len(targets), dtype=part["relevance"].dtype)
                scores = torch.zeros(n, len(targets), dtype=part["scores"].dtype)
                coverage = part.get("coverage")
            relevance[rows] = part["relevance"]
            scores[rows] = part["scores"]
            for key, value in part.get("conservation", {}).items():
                if isinstance(value, dict):
                    table = tables.setdefault(key, {})
                    for op, v in value.items():
                        table.setdefault(op, torch.zeros(n, len(targets), dtype=v.dtype))[rows] = v
                else:
                    tables.setdefault(key, torch.zeros(n, len(targets), dtype=value.dtype))[rows] = value
    info: dict[str, Any] = {"shared_forward": True, "remat": remat}
    if lrp:
        warn_unknown(coverage, method.name, stacklevel=5)
        info.update(coverage=coverage.as_dict(), composite=method.composite.name, conservation=tables)
        flat = {k: (v.flatten() if not isinstance(v, dict) else {op: t.flatten() for op, t in v.items()})
                for k, v in tables.items()}
        warn_absorbed(flat, method.name, stacklevel=5)
    return Columns(relevance, scores, info)


def _remat(method: Method, sequences: torch.Tensor, columns: int) -> bool:
    """Whether the shared pass rematerialises the model's blocks (the method's ``remat=``,
    :mod:`xaikit.propagation.remat`): one column only, since a recomputed block serves one backward pass."""
    setting = getattr(method, "remat", False)
    if columns > 1:
        if setting is True:
            raise ValueError(f"{method.name} has remat=True, but the per-token matrix takes one backward pass per "
                             "generated token on one forward pass, which a rematerialised block cannot serve; "
                             "explain the answer as a whole (per_token=False, explain_answer) or build the method "
                             "with remat=False")
        return False
    return use_remat(setting, method.model, sequences)


def _one_forward(method: Method, ids: torch.Tensor, kwargs: dict[str, Any], targets: list[TokenLogits],
                 lrp: bool, remat: bool = False) -> dict[str, Any]:
    """One forward pass over ``ids``, one backward pass per target: relevance ``(n, L, C)``, scores ``(n, C)`` and,
    for LRP, the conservation tables ``(n, C)`` and the coverage. ``remat``: the model's blocks recomputed in the
    backward pass (one target)."""
    session = Session(method.model, method.composite) if lrp else None
    vectors = method.tokens.embed(ids)
    forward = method.tokens.forward(ids, session.run if lrp else None)
    leaf = vectors.detach().requires_grad_(True)
    columns, scores, absorbed, absorbed_by = [], [], [], []
    try:
        with torch.enable_grad(), rematerialised(method.model, remat, session):
            output = model_scores(forward(leaf, **kwargs))
            if not isinstance(output, torch.Tensor) or output.ndim != 3:
                raise ValueError("the model must return logits of shape (batch, length, vocabulary) (or an output "
                                 "with .logits)")
            for c, target in enumerate(targets):
                score = target(output)
                if lrp:  # each column its own absorbed relevance and first-layer writes
                    session.absorbed = torch.zeros_like(session.absorbed)
                    session.absorbed_by, session.direct = {}, None
                (grad,) = torch.autograd.grad(score.sum(), leaf, retain_graph=c < len(targets) - 1,
                                              allow_unused=True)
                grad = torch.zeros_like(leaf) if grad is None else grad
                if method.multiply_by_input:
                    r = vectors * grad
                    if lrp and session.direct is not None:
                        r = r + session.direct
                    r = r.sum(-1)
                else:
                    r = grad.norm(dim=-1)
                if getattr(method, "absolute", False):
                    r = r.abs()
                columns.append(r.detach())
                bias = target.taylor_bias(output)
                scores.append(score.detach())
                if lrp:
                    absorbed.append(session.absorbed.detach() + bias)
                    absorbed_by.append({**session.absorbed_by, **({"log_softmax:taylor": bias} if bias.any() else {})})
    finally:
        if lrp:
            session.release()
    part: dict[str, Any] = {"relevance": torch.stack(columns, -1).cpu(), "scores": torch.stack(scores, -1).cpu()}
    if lrp:
        start, total, kept = part["scores"], part["relevance"].sum(1), torch.stack(absorbed, -1).cpu()
        ops = sorted({op for book in absorbed_by for op in book})
        part["conservation"] = {
            "start": start, "input": total, "absorbed": kept, "residual": start - total - kept,
            "absorbed_by": {op: torch.stack([book[op].detach().cpu() if op in book else torch.zeros_like(start[:, 0])
                                             for book in absorbed_by], -1) for op in ops},
        }
        part["coverage"] = session.coverage
    return part


def _copies(method: Method, sequences: torch.Tensor, mask: torch.Tensor, targets: list[TokenLogits],
            given: dict[str, Any]) -> Columns:
    """One copy of a sequence per column where that column has a slot for it, in one method call."""
    n, length = sequences.shape
    rows, columns, parts = [], [], []
    for c, target in enumerate(targets):
        slots = [t.expand(n, -1) for t in (target.positions, target.tokens, target.mask)]
        used = slots[2].any(1).nonzero()[:, 0]
        rows.append(used)
        columns.append(torch.full_like(used, c))
        parts.append([t[used] for t in slots])
    rows, columns = torch.cat(rows), torch.cat(columns)
    target = type(targets[0])(*(torch.cat([p[k] for p in parts]) for k in range(3)))
    expl = method(sequences[rows], target, forward_kwargs=sequence_inputs(method.model, mask[rows], **given))
    if expl.attribution.shape != sequences[rows].shape:
        raise ValueError(f"the method returned attributions of shape {tuple(expl.attribution.shape)}, not one value "
                         f"per token {tuple(sequences[rows].shape)}")
    relevance = torch.zeros(n, length, len(targets), dtype=expl.attribution.dtype)
    relevance[rows, :, columns] = expl.attribution.detach().cpu()
    score = expl.info.get("conservation", {}).get("start", expl.info.get("score"))
    with torch.no_grad():
        score = target(expl.output) if score is None and expl.output.ndim == 3 else score
    scores = torch.zeros(n, len(targets), dtype=relevance.dtype)
    if score is not None:
        scores[rows, columns] = score.detach().cpu().to(scores.dtype)
    info = {k: v for k, v in expl.info.items() if k not in ("conservation", "score")}
    info["shared_forward"] = False
    return Columns(relevance, scores, info)
