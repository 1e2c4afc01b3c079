"""Selective scans and recurrences written out: data-dependent weights as gates, a signal divided by a sum of
weights, and the element-wise selections (``maximum``, ``clamp``) of the stabilising max trick.

State-space models and recurrent-style LLMs compute, in plain torch operations, a recurrence whose
coefficients depend on the input: Mamba's discretised decay ``Ā = exp(Δ·A)`` and step ``Δ = softplus(·)``
(Gu & Dao 2023, the zero-order hold), Mamba-2's decays ``exp(cumsum(Δ·A))`` (Dao & Gu 2024), RWKV's
weights ``exp(k_i + w·(t − i))`` divided by their running sum (Peng et al. 2023, the WKV operator).
MambaLRP (Jafari et al. 2024) treats these input-dependent parameters like the gates of an LSTM or the
attention weights of CP-LRP: held constant, so that the relevance of a recurrence's output flows through its
input path. The engine recognises them by mechanism, not by model:

- the output of ``exp`` or ``softplus`` of an activation is a gate (:data:`..classify.GATES`), and a sum,
  product, cumulative sum or product, quotient or clamp of gates (constants aside) is one too
  (:data:`..classify.GATE_ARITHMETIC`, :func:`.products.follow_gates`),
  so the product handler applies the composite's gate rule where such a weight multiplies a signal;
- a signal divided by a gate (RWKV's ``numerator / denominator``, a softmax written out over a signal) is
  linear in the signal once the divisor is held constant (:func:`weighted_division`); the divisor is held
  constant under every composite, as the norm rule holds a normalisation statistic;
- ``maximum``/``minimum``/``clamp`` select, element by element, an operand or a bound (:func:`selection`):
  exact under input × gradient where an activation is selected; where a constant is, its share of the
  relevance is reported as absorbed, like a bias.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..explained import stop
from .constants import book_share
from .plain import classify_plain

if TYPE_CHECKING:
    from ..session import Session


#: element-wise selections between operands and bounds (see :func:`selection`)
SELECTIONS = {"maximum", "minimum", "fmax", "fmin", "clamp", "clip", "clamp_min", "clamp_max"}


def weighted_division(rule: Callable) -> Callable:
    """``rule`` for a division, except for a signal divided by a gate: the divisor is then held constant.

    ``N / D`` with ``D`` a sum of data-dependent weights and ``N`` the same weights applied to a signal (RWKV's
    WKV, a softmax-weighted average written out) is linear in ``N`` for a constant ``D``; held so, the relevance
    of the quotient passes to the numerator and none leaks into the weights (CP-LRP, Ali et al. 2022, for the
    attention weights; MambaLRP, Jafari et al. 2024, for the input-dependent parameters of a scan). A divisor has
    no uniform rule, so it is held constant under every composite, as the norm rule holds a statistic. A gate
    divided by a gate (a renormalisation of weights) is left to ``rule``.
    """

    def handler(s: Session, func, name, args, kwargs, acts):
        divisor = args[1] if len(args) > 1 else kwargs.get("other")
        numerator = args[0] if args else kwargs.get("input")
        if (len(acts) < 2 or getattr(func, "__name__", "") == "__rtruediv__" or id(divisor) not in s.gates
                or id(numerator) in s.gates or not s.is_activation(numerator)):
            return rule(s, func, name, args, kwargs, acts)
        s.coverage.add("handled", f"{name}:weight_held")
        held = stop(s, divisor)
        return func(*[held if a is divisor else a for a in args],
                    **{k: held if v is divisor else v for k, v in kwargs.items()})

    return handler


def selection(s: Session, func, name, args, kwargs, acts):
    """``maximum``/``minimum`` of two activations, or ``maximum``/``minimum``/``clamp`` of one activation ``x``
    and constants: every output element is an element of ``x`` or a constant.

    Input × gradient is exact for a selection between activations, as for max pooling (each output element is
    one input element, which receives its relevance). With a constant, ``out = where(x selected, x, constant)``:
    relevance passes to ``x`` where it is selected (ties included; torch's ``maximum`` would give a tie half the
    gradient) and the constant's share ``out ⊙ g`` elsewhere is reported as absorbed. A bound that is an
    activation is not a selection the engine knows (reported unknown).
    """
    pairwise = name in ("maximum", "minimum", "fmax", "fmin")
    if pairwise and len(acts) == 2:
        s.coverage.add("handled", f"{name}:selection")
        return func(*args, **kwargs)
    x = acts[0]
    if len(acts) != 1 or not (pairwise or x is (args[0] if args else kwargs.get("input"))):
        return classify_plain(s, func, name, args, kwargs, acts)
    out = func(*args, **kwargs)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return out
    s.coverage.add("handled", f"{name}:selection")
    value = out.detach()
    chosen = value == x.detach()
    result = torch.where(chosen, x, value)
    book_share(s, result, value.masked_fill(chosen, 0), f"{name}:bound")
    return result
