"""The rule kernels: one layer's relevance redistributed by an LRP rule, in two forms side by side.

- :func:`redistribute` is the fast form used by every explanation: it fuses the terms of a rule by input
  sign, skips what is known to be zero (the x⁻ half of non-negative inputs, the negative-output part after a
  ReLU) and writes its large temporaries into reused buffers.
- :func:`rule_relevance` is the generic rule written as plain differentiable operations (Montavon et al. 2019,
  "generic rule"), for explanations inside a training step (``create_graph=True``, :mod:`.handlers.training`):
  every quantity stays on the autograd graph. The two agree (tested).

The rules themselves are data (:mod:`.rules`).
"""
from __future__ import annotations

import torch

from .layers import LayerCall, channel_dot
from .rules import Part, Rule, Term, _negative, _ones, _positive, _same, _square


def stabiliser(d: torch.Tensor, eps: float) -> torch.Tensor:
    """``ε·sign(d)`` with sign(0) = +1."""
    return torch.copysign(torch.tensor(eps, dtype=d.dtype, device=d.device), d)




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


# -- the differentiable form -----------------------------------------------------------------------------
def _input_value(name: str, x: torch.Tensor, constants: dict[str, torch.Tensor]) -> torch.Tensor:
    if name == "x":
        return x
    if name == "pos":
        return x.clamp(min=0)
    if name == "neg":
        return x.clamp(max=0)
    return constants[name]


def _mask(name: str, x: torch.Tensor) -> torch.Tensor | None:
    """Where the term's input equals ``x`` (the gradient of ``R_x = x ⊙ g`` is taken there only)."""
    return (x >= 0) if name == "pos" else (x <= 0) if name == "neg" else None


def _transpose(layer: LayerCall, weight: torch.Tensor, signal: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``ρ(W)ᵀ s``, differentiable in ``s`` and ``ρ(W)``: the input gradient of the layer, which is linear in its
    input (so the point where it is taken does not matter)."""
    leaf = torch.zeros_like(like).requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(layer.native(leaf, weight), leaf, signal, create_graph=True)[0]


def _stabilise_graph(n: torch.Tensor, eps: float) -> torch.Tensor:
    """``n + ε·sign(n)`` with sign(0) = +1; for ε = 0, zeros become ones (0/0 gives 0)."""
    if eps:
        return torch.where(n >= 0, n + eps, n - eps)
    return torch.where(n == 0, torch.ones_like(n), n)


def rule_relevance(rule: Rule, layer: LayerCall, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   relevance: torch.Tensor, z: torch.Tensor, constants: dict[str, torch.Tensor] | None = None
                   ) -> torch.Tensor:
    """The generic LRP rule on one layer call, as differentiable operations.

    Returns the gradient ``g`` at ``x`` with ``R_x = x ⊙ g`` or, for direct rules (constant inputs), the relevance
    ``R_x`` itself. Equal to :func:`xaikit.propagation.rules.redistribute` (tested), which is the fast form.
    """
    constants = constants or {}
    result = None
    for part in rule.parts:
        r = relevance
        if part.outputs == "pos":
            r = relevance * (z >= 0)
        elif part.outputs == "neg":
            r = relevance * (z < 0)
        n = None
        for term in part.terms:
            value = _input_value(term.input, x, constants)
            piece = layer.native(value, term.weight(weight)) * term.coef
            n = piece if n is None else n + piece
        if bias is not None and any(t.bias for t in part.terms):
            part_bias = sum(t.coef * t.weight(bias) for t in part.terms if t.bias)
            n = n + layer.channel_view(part_bias, n.ndim)
        signal = part.scale * r / _stabilise_graph(n, rule.epsilon)
        for term in part.terms:
            g = _transpose(layer, term.weight(weight), signal, x) * term.coef
            if rule.direct:
                g = g * _input_value(term.input, x, constants)
            else:
                mask = _mask(term.input, x)
                g = g if mask is None else g * mask
            result = g if result is None else result + g
    return torch.zeros_like(x) if result is None else result

