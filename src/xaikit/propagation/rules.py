"""LRP rules for linear and convolutional layers, as data.

Every rule is an instance of the generic LRP rule (Montavon et al. 2019, eq. "generic rule"; Bach et al. 2015)

    R_i = Σ_parts  scale_p · Σ_j  n_p,ij / (n_p,j + ε·sign(n_p,j)) · R_j ,     n_p,j = Σ_i n_p,ij

where the contributions ``n_p,ij`` of a *part* are a sum of *terms*, each term pairing a modified input
(``x``, its positive or negative part ``x⁺``/``x⁻``, constants ``1``, ``low``, ``high``) with modified
weights ``ρ(w)`` and a coefficient. The table of the lecture:

=============  =====================================================================  ======================
rule           contributions n_ij                                                     root point (DTD view)
=============  =====================================================================  ======================
LRP-0          x_i w_ij (+ b_j)                                                       0 (gradient × input)
ε              x_i w_ij (+ b_j), denominator + ε·sign                                 shrinks to 0 with ε
γ              x_i w_ij + γ (x_i w_ij)⁺ (+ b_j + γ b_j⁺)                              along x ⊙ (1+γ·1[w>0])
z⁺             (x_i w_ij)⁺ = x⁺w⁺ + x⁻w⁻ (no bias; ``bias=True``: + b_j⁺)               on the x⁺ segment
αβ             α (x_i w_ij)⁺ / Σ⁺  −  β (x_i w_ij)⁻ / Σ⁻ (+ b⁺ / b⁻), α − β = 1       —
flat           1 · 1  (uniform over the receptive field)                              —
w²             w_ij²                                                                  —
z^B (box)      x_i w_ij − l_i w_ij⁺ − h_i w_ij⁻, l ≤ x ≤ h                            box-constrained root
=============  =====================================================================  ======================

For γ the positive *contributions* are favoured, ``(x w)⁺ = x⁺w⁺ + x⁻w⁻``: for non-negative inputs (after a
ReLU) this is the paper's ``w + γw⁺``; for mixed-sign inputs it is its sign-aware generalisation.
Rules whose terms use constant inputs (flat, w², z^B) write relevance directly and apply to the first layer.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..deprecation import renamed_keywords


def _same(w: torch.Tensor) -> torch.Tensor:
    return w


def _positive(w: torch.Tensor) -> torch.Tensor:
    return w.clamp(min=0)


def _negative(w: torch.Tensor) -> torch.Tensor:
    return w.clamp(max=0)


def _ones(w: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(w)


def _square(w: torch.Tensor) -> torch.Tensor:
    return w * w


#: inputs a term may use; "x", "pos" and "neg" depend on the layer input, the others are constants
INPUTS = ("x", "pos", "neg", "ones", "low", "high")
CONSTANT_INPUTS = ("ones", "low", "high")


@dataclass(frozen=True)
class Term:
    """One summand of the contributions: ``coef · layer(input, ρ(weight), ρ(bias) if bias else None)``."""

    input: str
    weight: Callable[[torch.Tensor], torch.Tensor] = _same
    coef: float = 1.0
    bias: bool = True


@dataclass(frozen=True)
class Part:
    """A normalised group of terms: relevance ``scale · R_j · n_ij / n_j``.

    ``outputs`` restricts the part to outputs with ``z_j > 0`` (``"pos"``) or ``z_j < 0`` (``"neg"``).
    """

    terms: tuple[Term, ...]
    scale: float = 1.0
    outputs: str | None = None


@dataclass(frozen=True)
class Rule:
    """A layer rule: parts, stabiliser ε, and a name. Rules compare by value and are immutable."""

    name: str
    parts: tuple[Part, ...]
    epsilon: float = 1e-9
    settings: dict = field(default_factory=dict, compare=False, hash=False)
    #: the γ family: ``parts`` are ``x w + favour·(x w)^±`` of the output's sign, which the engine computes from
    #: the layer output and one modified forward (``None``: computed part by part from the terms)
    favour: float | None = None
    low: torch.Tensor | float | None = field(default=None, compare=False, hash=False)
    high: torch.Tensor | float | None = field(default=None, compare=False, hash=False)

    @property
    def direct(self) -> bool:
        """True when the rule uses constant inputs and so writes relevance directly (first-layer rules)."""
        return any(t.input in CONSTANT_INPUTS for p in self.parts for t in p.terms)

    @property
    def plain(self) -> bool:
        """True for LRP-0/ε: contributions ``x w + b``, so only the gradient at the output is rescaled."""
        return self.parts == _PLAIN

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.name}({args})"


_PLAIN = (Part((Term("x"),)),)


def zero() -> Rule:
    """LRP-0 (Bach et al. 2015): plain gradient × input."""
    return Rule("zero", _PLAIN, epsilon=0.0)


@renamed_keywords(eps="epsilon")
def epsilon(epsilon: float = 1e-6) -> Rule:
    """LRP-ε (Bach et al. 2015): ``R_i = Σ_j x_i w_ij / (z_j + ε·sign(z_j)) R_j``."""
    _check_nonneg(epsilon, "epsilon")
    return Rule("epsilon", _PLAIN, epsilon=float(epsilon), settings={"epsilon": epsilon})


@renamed_keywords(g="gamma", eps="epsilon")
def gamma(gamma: float = 0.25, epsilon: float = 1e-9) -> Rule:
    """LRP-γ (Montavon et al. 2019): favour contributions of the output's sign by ``γ``.

    For an output ``z_j > 0`` the contributions are ``x w + γ (x w)⁺`` (the paper's ``w + γw⁺`` on
    non-negative inputs); for ``z_j < 0`` they are ``x w + γ (x w)⁻``, so the denominator keeps the sign of
    ``z_j`` and never crosses zero. The second part costs nothing when no relevance reaches negative outputs
    (layers followed by a ReLU).
    """
    g = gamma
    _check_nonneg(g, "gamma")
    favour_pos = (Term("x"), Term("pos", _positive, g), Term("neg", _negative, g, bias=False))
    favour_neg = (Term("x"), Term("pos", _negative, g), Term("neg", _positive, g, bias=False))
    parts = (Part(favour_pos, outputs="pos"), Part(favour_neg, outputs="neg"))
    return Rule("gamma", parts, epsilon=epsilon, settings={"gamma": g}, favour=float(g))


@renamed_keywords(eps="epsilon")
def zplus(epsilon: float = 1e-9, bias: bool = False) -> Rule:
    """LRP-z⁺ (Montavon et al. 2017): only positive contributions ``(x_i w_ij)⁺``.

    ``bias=False`` (default): the deep Taylor decomposition's rule, ``R_i = Σ_j (x_i w_ij)⁺ / Σ_i (x_i w_ij)⁺ R_j``
    (no bias in the denominator; conservative). ``bias=True``: the bias is a neuron 0 with input 1, as in the
    lecture's rule table (``Σ_{0,j}``) and the most used reference library; its positive part joins the
    denominator, ``Σ_i (x_i w_ij)⁺ + b_j⁺``, and absorbs its share of relevance (not conservative).
    """
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    terms = (Term("pos", _positive, bias=bias), Term("neg", _negative, bias=False))
    return Rule("zplus", (Part(terms),), epsilon=epsilon, settings={"bias": True} if bias else {})


@renamed_keywords(eps="epsilon")
def alpha_beta(alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-9) -> Rule:
    """LRP-αβ (Bach et al. 2015, eq. 60): ``α·positive − β·negative`` contributions, ``α − β = 1``."""
    _check_nonneg(alpha, "alpha")
    _check_nonneg(beta, "beta")
    if abs(alpha - beta - 1) > 1e-9:
        raise ValueError(f"alpha - beta must equal 1 for a conservative rule, got alpha={alpha}, beta={beta}")
    positive = Part((Term("pos", _positive), Term("neg", _negative, bias=False)), scale=alpha)
    negative = Part((Term("pos", _negative), Term("neg", _positive, bias=False)), scale=-beta)
    parts = (positive, negative) if beta else (positive,)
    return Rule("alpha_beta", parts, epsilon=epsilon, settings={"alpha": alpha, "beta": beta})


def flat() -> Rule:
    """Flat rule (Lapuschkin et al. 2019): relevance spread uniformly over each output's receptive field."""
    return Rule("flat", (Part((Term("ones", _ones, bias=False),)),), epsilon=0.0)


def wsquare() -> Rule:
    """w² rule (Montavon et al. 2017): ``R_i = Σ_j w_ij² / Σ_i w_ij² R_j``."""
    return Rule("wsquare", (Part((Term("ones", _square, bias=False),)),), epsilon=0.0)


def zbox(low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0) -> Rule:
    """z^B rule (Montavon et al. 2017) for inputs bounded by ``low ≤ x ≤ high`` (scalars or per channel)."""
    terms = (Term("x", bias=False), Term("low", _positive, -1.0, bias=False), Term("high", _negative, -1.0, bias=False))
    return Rule("zbox", (Part(terms),), epsilon=0.0, low=low, high=high,
                settings={"low": _describe(low), "high": _describe(high)})


def _describe(bound) -> object:
    return bound if not isinstance(bound, torch.Tensor) else f"tensor{tuple(bound.shape)}"


def _check_nonneg(value, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


#: rule constructors by name, for composites built from strings
RULES: dict[str, Callable[..., Rule]] = {
    "zero": zero, "epsilon": epsilon, "gamma": gamma, "zplus": zplus, "alpha_beta": alpha_beta,
    "flat": flat, "wsquare": wsquare, "zbox": zbox,
}


def make_rule(rule: "str | Rule | dict", **settings) -> Rule:
    """A rule object from a rule, a name in :data:`RULES` (``"gamma"``, ``"zplus"``, ...) with its settings, or
    a dict written by :func:`rule_to_dict` (``{"rule": "gamma", "gamma": 0.25}``)."""
    if isinstance(rule, Rule):
        if settings:
            raise TypeError("settings apply to rule names; pass them to the rule constructor instead")
        return rule
    if isinstance(rule, dict):
        if settings:
            raise TypeError("give the settings inside the rule dict, not as keywords")
        if "rule" not in rule:
            raise ValueError(f"a rule dict needs the key 'rule' (its name), got keys {sorted(rule)}")
        rule, settings = rule["rule"], {k: v for k, v in rule.items() if k != "rule"}
    if not isinstance(rule, str):
        raise TypeError(f"a rule must be a Rule, a rule name or a rule dict, got {type(rule).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    try:
        return RULES[rule](**settings)
    except TypeError as err:  # an unknown setting: name the rule and what it takes
        valid = ", ".join(inspect.signature(RULES[rule]).parameters) or "none"
        raise TypeError(f"rule {rule!r}: {err}; its settings: {valid}") from None


def rule_to_dict(rule: Rule) -> dict:
    """A rule as a JSON-ready dict that :func:`make_rule` turns back into an equal rule.

    Raises ``ValueError`` for rules that cannot be written so: box bounds given as tensors, or rules that
    are not built by a constructor of :data:`RULES`.
    """
    if isinstance(rule.low, torch.Tensor) or isinstance(rule.high, torch.Tensor):
        raise ValueError("a zbox rule with tensor bounds cannot be written as JSON; use numbers for low/high")
    if rule.name not in RULES:
        raise ValueError(f"rule {rule.name!r} is not built by a named constructor and cannot be written as JSON")
    spec = {"rule": rule.name, **rule.settings}
    if make_rule(dict(spec)) != rule:  # a stabiliser other than the constructor's default
        spec["epsilon"] = rule.epsilon
    if make_rule(dict(spec)) != rule:
        raise ValueError(f"rule {rule!r} cannot be rebuilt from its settings, so it cannot be written as JSON")
    return spec
