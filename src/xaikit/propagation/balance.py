"""The relevance balance of an explained call, and the warnings that keep it honest.

Every LRP explanation accounts for the relevance it starts from (the logit): ``start = input + absorbed +
residual``. *Absorbed* is what the rules keep by design — biases and stabilisers of layers, constants added to
activations, the constant ``f(0)`` of an identity rule, the softmax Taylor rule's bias term (AttnLRP,
Prop. 3.1) — booked per operation (:attr:`Session.absorbed_by <.session.Session.absorbed_by>`); the *residual*
is relevance lost in operations that do not conserve it. A small residual does not mean the explanation
carries the logit: when most of it is absorbed, the input keeps little. So after each call:

- :func:`warn_unknown` warns (every call, once per call) about operations the engine did not know;
- :func:`warn_absorbed` warns (every call, once per call) when the share of a sample's relevance that the
  rules' own terms absorbed, ``|absorbed by rules| / (|input| + Σ_op |absorbed by op|)`` (at most 1), exceeds
  :data:`ABSORBED_SHARE`, naming the operations that absorbed most.

Two kinds of absorbers are told apart by the reason in their label (``"operation:reason"``). The model's own
constants — a layer's bias and stabiliser under its rule (``"conv2d:zplus"``, ``"linear:epsilon"``; z⁺ also
drops the relevance of outputs that only the bias drives), a BatchNorm shift, a constant added or
concatenated, a normalisation's bias — keep a share that belongs to them: it is reported, not warned about
(on trained CNNs it is often more than half of the logit: EfficientNet-Lite0 under ``epsilon_plus_flat``
absorbs 94 % in the z⁺ layers, most in the last depthwise convolution). Everything else is a term of a rule —
the ``f(0)`` an identity rule keeps, the softmax Taylor rule's bias term, relevance a gate rule sends into a
branch that drops it — and a large share there means the explanation lost what the model computed.
"""
from __future__ import annotations

import warnings

import torch

from .coverage import Coverage

#: the share ``|absorbed by rules| / (|input| + Σ_op |absorbed by op|)`` of a sample above which a call warns
ABSORBED_SHARE = 0.5
#: the reasons (after the ``:`` of a label) of the model's own constants: layer rules, shifts, constants, biases
CONSTANT_REASONS = frozenset({
    "zero", "epsilon", "gamma", "zplus", "alpha_beta", "flat", "wsquare", "zbox", "shift", "constant", "bias",
    "bound",
})


def by_rules(label: str) -> bool:
    """Whether an absorbed-relevance label is a rule's own term (not a model constant, see the module doc)."""
    return label.rpartition(":")[2] not in CONSTANT_REASONS


def merge_absorbed(parts: list[dict[str, torch.Tensor]], totals: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-operation absorbed relevance of the chunks of a batch (``totals``: each chunk's absorbed
    relevance, ``(n,)``) as one ``(N,)`` tensor per operation (zero where an operation absorbed nothing in a
    chunk), largest total first."""
    labels = dict.fromkeys(label for part in parts for label in part)
    merged = {label: torch.cat([part.get(label, torch.zeros_like(total)) for part, total in zip(parts, totals)])
              for label in labels}
    return dict(sorted(merged.items(), key=lambda item: -float(item[1].abs().sum())))


def rule_share(conservation: dict) -> torch.Tensor:
    """Per sample ``|absorbed by rules| / (|input| + Σ_op |absorbed by op|)``, in [0, 1] (0 where nothing moved)."""
    given = conservation["input"]
    rules, moved = torch.zeros_like(given), given.abs()
    for label, value in conservation["absorbed_by"].items():
        moved = moved + value.abs()
        if by_rules(label):
            rules = rules + value
    return (rules.abs() / moved).nan_to_num(0.0)


def warn_absorbed(conservation: dict, method: str, stacklevel: int = 4) -> None:
    """Warn when the rules absorbed more than :data:`ABSORBED_SHARE` of a sample's relevance (module docstring).

    The message names the method and the operations that absorbed most, without per-call numbers, so that
    Python's warning filter shows it once per place and method, not once per batch of a loop (the numbers are
    in ``expl.info["conservation"]``)."""
    share = rule_share(conservation).detach()
    if not share.numel() or float(share.max()) <= ABSORBED_SHARE:
        return
    worst = int(share.argmax())
    rules = {label: value for label, value in conservation["absorbed_by"].items() if by_rules(label)}
    top = sorted(rules, key=lambda label: -abs(float(rules[label][worst])))[:3]
    warnings.warn(
        f"{method}: the rules absorbed more than {ABSORBED_SHARE:.0%} of the relevance of some samples (most by "
        f"{', '.join(top)}), so their attribution carries little of the output; see "
        "expl.info['conservation'] ('absorbed_by'; the threshold is xaikit.propagation.balance.ABSORBED_SHARE)",
        UserWarning, stacklevel=stacklevel,
    )


def warn_unknown(coverage: Coverage, method: str, stacklevel: int = 4) -> None:
    """Warn about the operations whose relevance handling the engine does not know (every call)."""
    unknown = sorted(coverage.counts["unknown"])
    if unknown:
        warnings.warn(
            f"{method} passed these operations through with their plain gradient (or their author's backward), "
            f"which may not conserve relevance: {', '.join(unknown)} (see expl.info['coverage'])",
            UserWarning, stacklevel=stacklevel,
        )
