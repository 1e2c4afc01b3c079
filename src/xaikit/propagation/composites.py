"""Composites: which rule applies where, as data.

A composite maps every linear/convolutional layer call to a rule, in this order of precedence:
the first layer (the one that reads the model input), then module-name patterns (``fnmatch``), then module
types, then the kind of layer (``conv`` or ``dense``). It also names the rule for each kind of operation:

- ``relu``: ``"gradient"`` (exact under LRP), ``"guided"`` (Springenberg et al. 2014) or ``"deconvnet"``;
- ``nonlinear``: element-wise non-linearities that are not positively homogeneous (ReLU6, GELU, SiLU, tanh,
  sigmoid, ELU, softplus, ...): ``"identity"`` (pass relevance unchanged, Achtibat et al. 2024) or
  ``"gradient"``;
- ``product``: products of two activations: ``"uniform"`` (half to each) or ``"gradient"``;
- ``gate``: products where one factor is a gate (sigmoid/softmax output): ``"signal_takes_all"`` (the gate
  gets no relevance, Arras et al. 2017) or ``"uniform"``;
- ``softmax``: ``"taylor"`` (gradient × input) or ``"detach"`` (CP-LRP, Ali et al. 2022);
- ``norm``: LayerNorm/GroupNorm: ``"identity"`` (the 1/σ factor is treated as a constant) or ``"gradient"``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ..errors import unknown_module
from . import rules as R
from .rules import Rule

OP_RULES: dict[str, tuple[str, ...]] = {
    "relu": ("gradient", "guided", "deconvnet"),
    "nonlinear": ("identity", "gradient"),
    "product": ("uniform", "gradient"),
    "gate": ("signal_takes_all", "uniform"),
    "softmax": ("taylor", "detach"),
    "norm": ("identity", "gradient"),
}


@dataclass(frozen=True)
class Composite:
    """Rules for layers and operations (see module docstring)."""

    name: str
    conv: Rule = field(default_factory=R.zero)
    dense: Rule = field(default_factory=R.zero)
    first: Rule | None = None
    by_name: tuple[tuple[str, Rule], ...] = ()
    by_type: tuple[tuple[type, Rule], ...] = ()
    ops: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, value in self.ops.items():
            if kind not in OP_RULES:
                raise ValueError(f"unknown operation kind {kind!r} in composite; valid: {', '.join(OP_RULES)}")
            if value not in OP_RULES[kind]:
                raise ValueError(f"unknown {kind} rule {value!r}; valid: {', '.join(OP_RULES[kind])}")

    def op_rule(self, kind: str) -> str:
        """The rule name for an operation kind (the first listed in ``OP_RULES`` by default)."""
        return self.ops.get(kind, OP_RULES[kind][0])

    def check_names(self, model: nn.Module) -> None:
        """Raise when a module-name pattern of :attr:`by_name` matches no module of ``model`` (a typo would
        otherwise leave the rule silently unused)."""
        names = [name for name, _ in model.named_modules() if name]
        for pattern, _ in self.by_name:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise unknown_module("the by_name pattern", pattern, names, "matches no module of the model")

    def rule_for(self, kind: str, name: str | None, module: nn.Module | None, first: bool) -> Rule:
        """The rule for one layer call of ``kind`` ("conv"/"dense") by module ``name``/``module``."""
        if first and self.first is not None:
            return self.first
        if name is not None:
            for pattern, rule in self.by_name:
                if fnmatch.fnmatchcase(name, pattern):
                    return rule
        if module is not None:
            for cls, rule in self.by_type:
                if isinstance(module, cls):
                    return rule
        return self.conv if kind == "conv" else self.dense


def _first_box(low: Any, high: Any) -> Rule:
    return R.zbox(-1.0 if low is None else low, 1.0 if high is None else high)


def _presets(s: dict[str, Any]) -> dict[str, Composite]:
    eps, gam = s.get("epsilon", 1e-6), s.get("gamma", 0.25)
    alpha, beta = s.get("alpha", 2.0), s.get("beta", 1.0)
    lazy = {
        "zero": lambda: Composite("zero"),
        "epsilon": lambda: Composite("epsilon", R.epsilon(eps), R.epsilon(eps)),
        "epsilon_plus": lambda: Composite("epsilon_plus", R.zplus(), R.epsilon(eps)),
        "epsilon_plus_flat": lambda: Composite("epsilon_plus_flat", R.zplus(), R.epsilon(eps), R.flat()),
        "epsilon_gamma_box": lambda: Composite(
            "epsilon_gamma_box", R.gamma(gam), R.epsilon(eps), _first_box(s.get("low"), s.get("high"))),
        "epsilon_alpha2_beta1": lambda: Composite("epsilon_alpha2_beta1", R.alpha_beta(alpha, beta), R.epsilon(eps)),
        "epsilon_alpha2_beta1_flat": lambda: Composite(
            "epsilon_alpha2_beta1_flat", R.alpha_beta(alpha, beta), R.epsilon(eps), R.flat()),
        "guided_backprop": lambda: Composite("guided_backprop", ops={"relu": "guided", "nonlinear": "gradient"}),
        "deconvnet": lambda: Composite("deconvnet", ops={"relu": "deconvnet", "nonlinear": "gradient"}),
        "excitation_backprop": lambda: Composite("excitation_backprop", R.zplus(), R.zplus(), R.zplus()),
        "attnlrp": lambda: Composite("attnlrp", R.epsilon(eps), R.epsilon(eps), ops={"gate": "uniform"}),
        "cp_lrp": lambda: Composite("cp_lrp", R.epsilon(eps), R.epsilon(eps), ops={"softmax": "detach"}),
    }
    return lazy


#: preset name -> the keyword settings it uses
PRESET_SETTINGS: dict[str, tuple[str, ...]] = {
    "zero": (), "epsilon": ("epsilon",), "epsilon_plus": ("epsilon",), "epsilon_plus_flat": ("epsilon",),
    "epsilon_gamma_box": ("epsilon", "gamma", "low", "high"), "epsilon_alpha2_beta1": ("epsilon", "alpha", "beta"),
    "epsilon_alpha2_beta1_flat": ("epsilon", "alpha", "beta"), "guided_backprop": (), "deconvnet": (),
    "excitation_backprop": (), "attnlrp": ("epsilon",), "cp_lrp": ("epsilon",),
}
#: names of the preset composites
PRESETS = tuple(PRESET_SETTINGS)
#: keyword settings that override a preset's values
SETTINGS = ("epsilon", "gamma", "alpha", "beta", "low", "high")


def make_composite(composite: str | Composite, **settings: Any) -> Composite:
    """A preset composite by name, with ``epsilon``, ``gamma``, ``alpha``, ``beta``, ``low``, ``high`` overrides.

    Settings that the preset does not use are rejected, so a typo or a misplaced setting cannot pass silently.
    """
    for key in settings:
        if key not in SETTINGS:
            raise TypeError(f"unknown LRP setting {key!r}; valid: {', '.join(SETTINGS)}")
    if isinstance(composite, Composite):
        if settings:
            raise TypeError("settings such as epsilon/gamma apply to preset names; build the Composite with them")
        return composite
    if not isinstance(composite, str) or composite not in PRESETS:
        raise ValueError(f"unknown composite {composite!r}; valid: {', '.join(PRESETS)}")
    used = PRESET_SETTINGS[composite]
    for key in settings:
        if key not in used:
            raise TypeError(f"composite {composite!r} has no setting {key!r}; it uses: {', '.join(used) or 'none'}")
    return _presets(settings)[composite]()


def with_rules(composite: str | Composite, *, by_name: dict[str, Rule | str] | None = None,
               by_type: dict[type, Rule | str] | None = None, first: Rule | str | None = None,
               **ops: str) -> Composite:
    """A copy of ``composite`` with extra rules by module-name pattern or module type (taking precedence), a
    first-layer rule, or operation rules; rules may be given by name (``"gamma"``, ``"zplus"``, ...)."""
    composite = make_composite(composite)
    return replace(
        composite,
        by_name=tuple((k, R.make_rule(v)) for k, v in (by_name or {}).items()) + composite.by_name,
        by_type=tuple((k, R.make_rule(v)) for k, v in (by_type or {}).items()) + composite.by_type,
        first=R.make_rule(first) if first is not None else composite.first,
        ops={**composite.ops, **ops},
    )
