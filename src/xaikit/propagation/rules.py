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

from dataclasses import dataclass, field
from typing import Callable

import torch

from .layers import LayerCall, channel_dot


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


def epsilon(eps: float = 1e-6) -> Rule:
    """LRP-ε (Bach et al. 2015): ``R_i = Σ_j x_i w_ij / (z_j + ε·sign(z_j)) R_j``."""
    _check_nonneg(eps, "epsilon")
    return Rule("epsilon", _PLAIN, epsilon=float(eps), settings={"epsilon": eps})


def gamma(g: float = 0.25, eps: float = 1e-9) -> Rule:
    """LRP-γ (Montavon et al. 2019): favour contributions of the output's sign by ``γ``.

    For an output ``z_j > 0`` the contributions are ``x w + γ (x w)⁺`` (the paper's ``w + γw⁺`` on
    non-negative inputs); for ``z_j < 0`` they are ``x w + γ (x w)⁻``, so the denominator keeps the sign of
    ``z_j`` and never crosses zero. The second part costs nothing when no relevance reaches negative outputs
    (layers followed by a ReLU).
    """
    _check_nonneg(g, "gamma")
    favour_pos = (Term("x"), Term("pos", _positive, g), Term("neg", _negative, g, bias=False))
    favour_neg = (Term("x"), Term("pos", _negative, g), Term("neg", _positive, g, bias=False))
    parts = (Part(favour_pos, outputs="pos"), Part(favour_neg, outputs="neg"))
    return Rule("gamma", parts, epsilon=eps, settings={"gamma": g}, favour=float(g))


def zplus(eps: float = 1e-9, bias: bool = False) -> Rule:
    """LRP-z⁺ (Montavon et al. 2017): only positive contributions ``(x_i w_ij)⁺``.

    ``bias=False`` (default): the deep Taylor decomposition's rule, ``R_i = Σ_j (x_i w_ij)⁺ / Σ_i (x_i w_ij)⁺ R_j``
    (no bias in the denominator; conservative). ``bias=True``: the bias is a neuron 0 with input 1, as in the
    lecture's rule table (``Σ_{0,j}``) and the most used reference library; its positive part joins the
    denominator, ``Σ_i (x_i w_ij)⁺ + b_j⁺``, and absorbs its share of relevance (not conservative).
    """
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    terms = (Term("pos", _positive, bias=bias), Term("neg", _negative, bias=False))
    return Rule("zplus", (Part(terms),), epsilon=eps, settings={"bias": True} if bias else {})


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, eps: float = 1e-9) -> Rule:
    """LRP-αβ (Bach et al. 2015, eq. 60): ``α·positive − β·negative`` contributions, ``α − β = 1``."""
    _check_nonneg(alpha, "alpha")
    _check_nonneg(beta, "beta")
    if abs(alpha - beta - 1) > 1e-9:
        raise ValueError(f"alpha - beta must equal 1 for a conservative rule, got alpha={alpha}, beta={beta}")
    positive = Part((Term("pos", _positive), Term("neg", _negative, bias=False)), scale=alpha)
    negative = Part((Term("pos", _negative), Term("neg", _positive, bias=False)), scale=-beta)
    parts = (positive, negative) if beta else (positive,)
    return Rule("alpha_beta", parts, epsilon=eps, settings={"alpha": alpha, "beta": beta})


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


def stabiliser(d: torch.Tensor, eps: float) -> torch.Tensor:
    """``ε·sign(d)`` with sign(0) = +1."""
    return torch.copysign(torch.tensor(eps, dtype=d.dtype, device=d.device), d)


def make_rule(rule: "str | Rule", **settings) -> Rule:
    """A rule object from a rule or a name in :data:`RULES` (``"gamma"``, ``"zplus"``, ...) with its settings."""
    if isinstance(rule, Rule):
        if settings:
            raise TypeError("settings apply to rule names; pass them to the rule constructor instead")
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    return RULES[rule](**settings)


def _stabilise(d: torch.Tensor, eps: float) -> torch.Tensor:
    """``d + ε·sign(d)``; for ε = 0, zeros become ones so that 0/0 gives 0 rather than NaN."""
    if eps:
        return d + stabiliser(d, eps)
    return d.masked_fill(d == 0, 1.0)


def scale_factor(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Gradient rescaling of LRP-ε at a layer output: ``z / (z + ε·sign(z))``."""
    return z / _stabilise(z, eps)


def _fuse_inputs(part: Part, sign: int) -> dict[str, list[Term]]:
    """Group a part's terms by input; fold "x" into "pos"/"neg" (or all into "x" for one-signed inputs)."""
    split = sign == 0 and any(t.input in ("pos", "neg") for t in part.terms)
    groups: dict[str, list[Term]] = {}
    for term in part.terms:
        inputs = [term.input]
        if sign > 0 and term.input in ("pos", "neg"):  # x ≥ 0: x⁺ = x, x⁻ = 0
            inputs = ["x"] if term.input == "pos" else []
        elif sign < 0 and term.input in ("pos", "neg"):
            inputs = ["x"] if term.input == "neg" else []
        elif split and term.input == "x":  # mixed sign, beside x⁺/x⁻ terms: x w = x⁺ w + x⁻ w
            inputs = ["pos", "neg"]
        for name in inputs:
            groups.setdefault(name, []).append(term)
    return groups


def _relevance_by_output_sign(rule: Rule, relevance: torch.Tensor, output: torch.Tensor) -> dict:
    """Relevance of the positive and negative outputs (``None`` where there is none, so a part is skipped).

    After a ReLU no relevance reaches negative outputs; then the positive part takes the relevance as is.
    """
    if not any(p.outputs for p in rule.parts):
        return {}
    negative = relevance * (output < 0)
    if not bool(negative.any()):
        return {"pos": relevance, "neg": None}
    return {"pos": relevance - negative, "neg": negative}


def _ratio(relevance: torch.Tensor, numerator: torch.Tensor, eps: float, scale: float = 1.0,
           sign: int = 0) -> torch.Tensor:
    """``scale · R / (n + ε·sign n)``, written over ``numerator`` (a temporary of the caller) where shapes allow.

    ``sign`` = 1 (-1) when ``n`` is known to be ≥ 0 (≤ 0), which saves computing its sign.
    """
    if not eps:
        den = numerator.masked_fill_(numerator == 0, 1.0)
    elif sign:
        den = numerator.add_(sign * eps)
    else:
        den = numerator.add_(stabiliser(numerator, eps))
    ratio = torch.div(relevance, den, out=den) if den.shape == relevance.shape else relevance / den
    return ratio.mul_(scale) if scale != 1 else ratio


def _input_sign(x: torch.Tensor, nonnegative: bool) -> int:
    """1 for x ≥ 0, -1 for x ≤ 0, 0 for mixed signs."""
    if nonnegative:
        return 1
    low, high = torch.aminmax(x)
    return 1 if low >= 0 else (-1 if high <= 0 else 0)


#: the sign of what a weight modifier returns (0: either sign)
_MODIFIER_SIGN = {_positive: 1, _negative: -1, _ones: 1, _square: 1}
_INPUT_SIGN = {"pos": 1, "neg": -1, "ones": 1}


def _contribution_sign(name: str, terms: list[Term], sign: int) -> int:
    """The sign every contribution of an input group shares (1 or -1), or 0 if it is not known."""
    input_sign = sign if name == "x" else _INPUT_SIGN.get(name, 0)
    signs = {input_sign * _MODIFIER_SIGN.get(t.weight, 0) * (1 if t.coef > 0 else -1) for t in terms}
    return signs.pop() if len(signs) == 1 else 0


def redistribute(
    rule: Rule,
    layer: LayerCall,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    relevance: torch.Tensor,
    output: torch.Tensor,
    constants: dict[str, torch.Tensor] | None = None,
    nonnegative: bool = False,
    rectified: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``rule`` to one layer call ``z = layer(x, weight, bias)`` with output relevance ``relevance``.

    Returns the gradient ``g`` at ``x`` such that ``R_x = x ⊙ g`` (or, for direct rules, ``R_x`` itself), and
    the per-sample relevance that the bias and stabiliser absorb where the rule knows it from the output side
    (see :func:`_absorbed`; ``None``: the caller computes ``Σ R − Σ x ⊙ g``).
    ``rectified``: no relevance reaches negative outputs (the output feeds only a ReLU). The γ family costs
    one modified forward of the layer and one transposed pass (two where relevance reaches outputs of both
    signs or the input has mixed signs); other rules one forward and one transposed pass per part and input
    group (one for z⁺ on non-negative inputs; the plain ``x w`` contributions are the output itself).
    """
    x, weight, output = x.detach(), weight.detach(), output.detach()
    bias = None if bias is None else bias.detach()
    sign = _input_sign(x, nonnegative)
    if rule.favour is not None and not constants:
        return _favour_output_sign(rule.favour, rule.epsilon, layer, x, weight, bias, relevance, output, sign,
                                   rectified)
    return _by_parts(rule, layer, x, weight, bias, relevance, output, constants or {}, sign)


def _by_parts(rule: Rule, layer: LayerCall, x, weight, bias, relevance, output, constants: dict, sign: int):
    """The generic rule: per part, the contributions of each input group forward, then transposed (the groups
    of a part in one stacked call each way where the layer allows)."""
    inputs = {"x": lambda: x, "pos": lambda: x.clamp(min=0), "neg": lambda: x.clamp(max=0),
              **{k: (lambda v=v: v.detach()) for k, v in constants.items()}}
    by_sign = _relevance_by_output_sign(rule, relevance, output)
    result = absorbed = None
    for part in rule.parts:
        part_relevance = relevance if part.outputs is None else by_sign[part.outputs]
        if part_relevance is None:
            continue
        b = None  # the part's bias ρ(b)
        if bias is not None and any(t.bias for t in part.terms):
            b = sum(t.coef * t.weight(bias) for t in part.terms if t.bias)
        fused = _fuse_inputs(part, sign)
        if not fused:  # every term vanished (e.g. z⁻ on non-negative inputs)
            continue
        groups = {name: (inputs[name](), sum(t.coef * t.weight(weight) for t in terms))
                  for name, terms in fused.items()}
        signs = {_contribution_sign(name, terms, sign) for name, terms in fused.items()}
        known = signs.pop() if len(signs) == 1 and b is None else 0  # the sign of every n_ij, if shared
        ratio = _ratio(part_relevance, _numerator(layer, groups, fused, b, bias, output), rule.epsilon,
                       part.scale, known)
        if known and len(rule.parts) == 1 and part.outputs is None and part.scale == 1 and not constants:
            absorbed = _absorbed(layer, ratio, known * rule.epsilon)
        if constants:
            contribution = _direct(layer, ratio, groups, x)
            result = contribution if result is None else result.add_(contribution)
            continue
        grads = dict(zip(groups, layer.transpose_each(ratio, [w for _, w in groups.values()], x)))
        if "pos" in grads and "neg" in grads:  # the gradient of x⁺ where x ≥ 0, of x⁻ elsewhere
            contribution = _total([torch.where(x >= 0, grads.pop("pos"), grads.pop("neg")), *grads.values()])
        else:
            masks = {"pos": lambda: x >= 0, "neg": lambda: x <= 0}
            contribution = _total([g.mul_(masks[name]()) if name in masks else g for name, g in grads.items()])
        result = contribution if result is None else result.add_(contribution)
    return (torch.zeros_like(x) if result is None else result), absorbed


def _direct(layer: LayerCall, ratio: torch.Tensor, groups: dict, x: torch.Tensor) -> torch.Tensor:
    """Direct relevance ``Σ_groups input ⊙ ρ(W)ᵀs``. Where the ``x`` group's weights are minus the sum of the
    others' (z^B: ``w = w⁺ + w⁻``), its transposed pass is implied: ``Σ_k (c_k − x) ⊙ W_kᵀs``."""
    weights = {name: w for name, (_, w) in groups.items()}
    others = [name for name in groups if name != "x"]
    if "x" in groups and others and torch.equal(weights["x"], -sum(weights[name] for name in others)):
        grads = layer.transpose_each(ratio, [weights[name] for name in others], x)
        return _total([g.mul_(groups[name][0] - x) for name, g in zip(others, grads)])
    grads = layer.transpose_each(ratio, list(weights.values()), x)
    return _total([g.mul_(value) for (value, _), g in zip(groups.values(), grads)])


def _absorbed(layer: LayerCall, ratio: torch.Tensor, stabiliser: float,
              bias: torch.Tensor | None = None) -> torch.Tensor | None:
    """Per-sample relevance absorbed by a part's bias ``b`` and a stabiliser ``ε·sign n`` of known sign, from the
    output side: the input receives ``Σ_i x_i g_i = Σ_j s_j (n_j − b_j)`` (``g = Wᵀs``,
    ``s = R / (n + ε·sign n)``), so the rest is ``Σ_j s_j (ε·sign n_j + b_j)``: one reduction of ``s`` instead
    of two of ``R`` and ``x ⊙ g``.
    ``None`` for ε = 0, where zero denominators drop their relevance instead."""
    if not stabiliser:
        return None
    if bias is None:
        return stabiliser * ratio.flatten(1).sum(1)
    return channel_dot(ratio, layer.channel_view(bias + stabiliser, ratio.ndim))


def _total(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of fresh tensors of one shape, added into the first (Python's ``sum`` would copy it: ``0 + t``)."""
    for t in tensors[1:]:
        tensors[0].add_(t)
    return tensors[0]


def _numerator(layer: LayerCall, groups: dict, fused: dict, part_bias, bias, output: torch.Tensor) -> torch.Tensor:
    """``Σ_groups layer(input, W) + ρ(b)`` (a fresh tensor). The plain group ``x·w`` is the layer output less
    its bias (no forward); groups of constant inputs computed for one sample broadcast."""
    plain = [name for name, terms in fused.items()
             if name == "x" and len(terms) == 1 and terms[0].weight is _same and terms[0].coef == 1]
    rest = [groups[name] for name in groups if name not in plain]
    numerator = None
    if plain:
        numerator = output.clone() if bias is None else output - layer.channel_view(bias, output.ndim)
    if rest:
        same_batch = all(value.shape[0] == rest[0][0].shape[0] for value, _ in rest)
        pieces = [layer.forward_sum(*zip(*rest))] if same_batch else [layer(v, w) for v, w in rest]
        for piece in pieces:
            numerator = piece if numerator is None else (
                numerator.add_(piece) if numerator.shape[0] >= piece.shape[0] else piece.add_(numerator))
    if part_bias is not None:
        numerator.add_(layer.channel_view(part_bias, numerator.ndim))
    return numerator


def _favour_output_sign(gamma: float, eps: float, layer: LayerCall, x, weight, bias, relevance, z, sign: int,
                        rectified: bool):
    """The γ family, ``n_ij = x_i w_ij + γ (x_i w_ij)^±`` of the output's sign, from the layer output ``z`` and
    one modified forward.

    With ``Q = S⁺ + b⁺`` (the positive contributions and bias; ``S⁺ = Σ x w⁺`` for x ≥ 0, ``Σ (xw)⁺ =
    (z − b + Σ |x||w|)/2`` for mixed signs), the negative ones are ``S⁻ + b⁻ = z − Q``, so the denominators are
    ``n = z + γQ`` (z > 0) and ``z + γ(z − Q)`` (z < 0): they keep the sign of ``z``, and
    ``|n| = (1 + γ/2)|z| − (γ/2) z + γQ``. The modified forward gives ``γQ + ε`` directly (its weights and bias
    scaled by γ). Backward, ``w + γ w^±`` is ``(1 + γ/2) w ± (γ/2)|w|`` (the second term times sign(x) for
    mixed inputs). For a rectified output and a one-signed input, the modified weights ``w + γw⁺`` (x ≥ 0) or
    ``w + γw⁻`` (x ≤ 0) give ``n`` in one forward and the gradient in one transposed pass.
    """
    shift = None if bias is None else bias + gamma * bias.clamp(min=0)  # n's bias on positive outputs: b + γb⁺

    def stabilised(inputs: torch.Tensor, weights: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """``layer(inputs, weights) + b + ε`` in one call."""
        return layer(inputs, weights, z.new_full((layer.channels(z),), eps) if b is None else b + eps)

    magnitude_w = weight.abs()
    if sign != 0:
        favoured = weight.clamp(min=0) if sign > 0 else weight.clamp(max=0)  # the weights of (x w)⁺
        if rectified:
            modified = weight + gamma * favoured
            den = stabilised(x, modified, shift)
            ratio = torch.div(relevance, _nonzero(den, eps), out=den)
            return layer.transpose(ratio, modified, x), _absorbed(layer, ratio, eps, shift)
        den = stabilised(x, gamma * favoured, None if bias is None else gamma * bias.clamp(min=0))  # γQ + ε
    else:  # γQ = (γ/2)(z + Σ |x||w| + |b|): the forward gives all but (γ/2) z
        den = stabilised(x.abs(), (gamma / 2) * magnitude_w, None if bias is None else (gamma / 2) * bias.abs())
    plain, absolute = (1 + gamma / 2) * weight, (gamma / 2) * magnitude_w
    if rectified:  # mixed-sign input; relevance on outputs z > 0 only, where n = z + γQ > 0 (bias b + γb⁺)
        ratio = torch.div(relevance, _nonzero(den.add_(z, alpha=1 + gamma / 2), eps), out=den)
        absorbed = _absorbed(layer, ratio, eps, shift)
        result, signed = layer.transpose_each(ratio, [plain, absolute], x)
        return result.addcmul_(signed, x.sign()), absorbed
    magnitude = z.abs()
    den.add_(magnitude, alpha=1 + gamma / 2)  # |n| + ε (for mixed signs the ± (γ/2) z terms cancel)
    if sign != 0:
        den.add_(z, alpha=-gamma / 2)
    if not eps:
        den.masked_fill_(den == 0, 1.0)
    flipped = torch.div(relevance, den, out=den)  # R/(n + ε·sign n) · sign(z)
    ratio = torch.sign(z, out=magnitude).mul_(flipped)
    signed = layer.transpose(flipped, absolute, x)
    signed = signed if sign > 0 else (signed.neg_() if sign < 0 else signed.mul_(x.sign()))
    return layer.transpose(ratio, plain, x).add_(signed), None


def _nonzero(den: torch.Tensor, eps: float) -> torch.Tensor:
    """``n + ε`` of rectified outputs, in place: where relevance is, ``n > 0``; elsewhere the relevance is 0 and
    any non-zero denominator will do."""
    return den.clamp_min_(eps) if eps else den.masked_fill_(den <= 0, 1.0)
