"""Composites: which rule applies where, as data.

A composite maps every linear/convolutional layer call to a rule, in this order of precedence:
the first layer (the one that reads the model input), then module-name patterns (``fnmatch``), then module
types, then the kind of layer (``conv`` or ``dense``). It also names the rule for each kind of operation:

- ``relu``: ``"gradient"`` (exact under LRP), ``"guided"`` (Springenberg et al. 2014) or ``"deconvnet"``;
- ``nonlinear``: element-wise non-linearities that are not positively homogeneous (ReLU6, GELU, SiLU, tanh,
  sigmoid, ELU, softplus, ...): ``"identity"`` (pass relevance unchanged, Achtibat et al. 2024) or
  ``"gradient"``;
- ``product``: products of two activations: ``"uniform"`` (half to each) or ``"gradient"``;
- ``gate``: products where one factor is a sigmoid-type gate (a ``sigmoid``/``hardsigmoid`` output: SE blocks,
  LSTM/GRU gates, GLU; a data-dependent weight: an ``exp``/``softplus`` output and sums and products of gates,
  see :mod:`.handlers.scan`; a softmax output multiplied element-wise): ``"signal_takes_all"`` (the gate
  gets no relevance, the gated signal all of it; Arras et al. 2017, sec. 2.3) or ``"uniform"``;
- ``attention``: products where one factor is a softmax output (attention weights ``A·V``):
  ``"signal_takes_all"`` (the weights get no relevance, as in CP-LRP) or ``"uniform"`` (half to the weights,
  which pass it to queries and keys through the softmax's Taylor rule; AttnLRP, Achtibat et al. 2024,
  sec. 3.2). When a composite does not set it, it follows ``gate`` (a composite written before the two
  kinds were told apart keeps its meaning);
- ``softmax``: ``"taylor"`` (gradient × input) or ``"detach"`` (CP-LRP, Ali et al. 2022);
- ``norm``: LayerNorm/GroupNorm: ``"identity"`` (the 1/σ factor is treated as a constant) or ``"gradient"``.
"""
from __future__ import annotations

import fnmatch
import importlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import unknown_module
from . import rules as R
from .rules import Rule

OP_RULES: dict[str, tuple[str, ...]] = {
    "relu": ("gradient", "guided", "deconvnet"),
    "nonlinear": ("identity", "gradient"),
    "product": ("uniform", "gradient"),
    "gate": ("signal_takes_all", "uniform"),
    "attention": ("signal_takes_all", "uniform"),
    "softmax": ("taylor", "detach"),
    "norm": ("identity", "gradient"),
}

#: operation kinds whose rule, when a composite does not set it, is that of another kind
FOLLOWS: dict[str, str] = {"attention": "gate"}


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
        """The rule name for an operation kind: the composite's, else that of the kind it follows
        (:data:`FOLLOWS`), else the first listed in ``OP_RULES``."""
        if kind in self.ops:
            return self.ops[kind]
        return self.op_rule(FOLLOWS[kind]) if kind in FOLLOWS else OP_RULES[kind][0]

    def check_names(self, model: nn.Module) -> None:
        """Raise when a module-name pattern of :attr:`by_name` matches no module of ``model`` (a typo would
        otherwise leave the rule silently unused)."""
        if not self.by_name:  # nothing to check: no walk over the modules on every explained call
            return
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

    # -- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The composite as a JSON-ready dict (rules as :func:`~.rules.rule_to_dict`, module types by their
        import path); :meth:`from_dict` rebuilds an equal composite."""
        return {
            "name": self.name, "conv": R.rule_to_dict(self.conv), "dense": R.rule_to_dict(self.dense),
            "first": None if self.first is None else R.rule_to_dict(self.first),
            "by_name": [[pattern, R.rule_to_dict(rule)] for pattern, rule in self.by_name],
            "by_type": [[f"{cls.__module__}:{cls.__qualname__}", R.rule_to_dict(rule)] for cls, rule in self.by_type],
            "ops": dict(self.ops),
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "Composite":
        """Rebuild a composite from :meth:`to_dict`'s dict (missing keys take the defaults)."""
        if not isinstance(spec, dict):
            raise TypeError(f"a composite spec must be a dict, got {type(spec).__name__}")
        unknown = set(spec) - _DICT_KEYS
        if unknown:
            raise ValueError(f"unknown composite key(s) {sorted(unknown)}; valid: {', '.join(sorted(_DICT_KEYS))}")
        fields: dict[str, Any] = {"name": str(spec.get("name", "custom")), "ops": dict(spec.get("ops") or {})}
        for key in ("conv", "dense"):
            if key in spec:
                fields[key] = R.make_rule(spec[key])
        if spec.get("first") is not None:
            fields["first"] = R.make_rule(spec["first"])
        fields["by_name"] = tuple((str(p), R.make_rule(r)) for p, r in spec.get("by_name") or ())
        fields["by_type"] = tuple((_import_type(t), R.make_rule(r)) for t, r in spec.get("by_type") or ())
        return cls(**fields)

    def to_json(self, path: str | Path | None = None) -> str:
        """:meth:`to_dict` as JSON text, also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "Composite":
        """A composite from JSON text or a ``.json`` file written by :meth:`to_json`."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise ValueError(f"composite JSON file {str(path)!r} does not exist")
            text = path.read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))


_DICT_KEYS = {"name", "conv", "dense", "first", "by_name", "by_type", "ops"}


def _import_type(path: str) -> type:
    module_name, _, qualname = str(path).partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"module type {path!r} of a composite cannot be imported (write it as module:Class)") \
            from None
    if not isinstance(obj, type):
        raise ValueError(f"{path!r} is not a class")
    return obj


def _first_box(low: Any, high: Any) -> Rule:
    return R.zbox(-1.0 if low is None else low, 1.0 if high is None else high)


#: the preset composites: name -> (the keyword settings it uses, its builder from those settings);
#: defaults epsilon=1e-6, gamma=0.25, alpha=2, beta=1, low=-1, high=1
_PRESETS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], Composite]]] = {
    "zero": ((), lambda s: Composite("zero")),
    "epsilon": (("epsilon",), lambda s: Composite("epsilon", R.epsilon(_eps(s)), R.epsilon(_eps(s)))),
    # LRP-γ on every layer (Montavon et al. 2019, Eq. 6): the rule GNN-LRP uses (Schnake et al. 2022)
    "gamma": (("gamma",), lambda s: Composite("gamma", R.gamma(s.get("gamma", 0.25)), R.gamma(s.get("gamma", 0.25)))),
    "epsilon_plus": (("epsilon",), lambda s: Composite("epsilon_plus", R.zplus(), R.epsilon(_eps(s)))),
    "epsilon_plus_flat": (("epsilon",), lambda s: Composite(
        "epsilon_plus_flat", R.zplus(), R.epsilon(_eps(s)), R.flat())),
    "epsilon_gamma_box": (("epsilon", "gamma", "low", "high"), lambda s: Composite(
        "epsilon_gamma_box", R.gamma(s.get("gamma", 0.25)), R.epsilon(_eps(s)),
        _first_box(s.get("low"), s.get("high")))),
    "epsilon_alpha2_beta1": (("epsilon", "alpha", "beta"), lambda s: Composite(
        "epsilon_alpha2_beta1", _alpha_beta(s), R.epsilon(_eps(s)))),
    "epsilon_alpha2_beta1_flat": (("epsilon", "alpha", "beta"), lambda s: Composite(
        "epsilon_alpha2_beta1_flat", _alpha_beta(s), R.epsilon(_eps(s)), R.flat())),
    "guided_backprop": ((), lambda s: Composite("guided_backprop", ops={"relu": "guided", "nonlinear": "gradient"})),
    "deconvnet": ((), lambda s: Composite("deconvnet", ops={"relu": "deconvnet", "nonlinear": "gradient"})),
    "excitation_backprop": ((), lambda s: Composite("excitation_backprop", R.zplus(), R.zplus(), R.zplus())),
    # AttnLRP (Achtibat et al. 2024): ε on layers, identity rule on non-linearities, uniform rule on products
    # (also A·V: the attention weights pass relevance to Q and K through the softmax's Taylor rule); products
    # with a sigmoid-type gate (SE blocks, LSTM/GRU, GLU) give all relevance to the gated signal
    "attnlrp": (("epsilon",), lambda s: Composite(
        "attnlrp", R.epsilon(_eps(s)), R.epsilon(_eps(s)), ops={"gate": "signal_takes_all", "attention": "uniform"})),
    "cp_lrp": (("epsilon",), lambda s: Composite(
        "cp_lrp", R.epsilon(_eps(s)), R.epsilon(_eps(s)), ops={"softmax": "detach"})),
}


def _eps(s: dict[str, Any]) -> float:
    return s.get("epsilon", 1e-6)


def _alpha_beta(s: dict[str, Any]) -> Rule:
    return R.alpha_beta(s.get("alpha", 2.0), s.get("beta", 1.0))


#: preset name -> the keyword settings it uses
PRESET_SETTINGS: dict[str, tuple[str, ...]] = {name: used for name, (used, _) in _PRESETS.items()}
#: names of the preset composites
PRESETS = tuple(_PRESETS)
#: keyword settings that override a preset's values
SETTINGS = ("epsilon", "gamma", "alpha", "beta", "low", "high")


#: ``composite="auto"`` (LRP's default): the preset chosen by the input of each call. Images and other inputs
#: with a spatial or sequence axis get the flat rule at the first layer (Lapuschkin et al. 2019; a convolution
#: spreads it over a local receptive field, so the map keeps its spatial detail); feature vectors ``(N, D)``
#: (tables) get no first-layer rule: a dense first layer under the flat rule spreads each output's relevance
#: evenly over *all* features, so every feature of a sample gets the same relevance.
AUTO = "auto"
AUTO_PRESETS = {"features": "epsilon_plus", "default": "epsilon_plus_flat"}
#: first-layer rules that ignore the input values and weights' signs: on a dense layer reading feature vectors
#: they give every feature the same relevance (flat) or one fixed profile (w²)
INPUT_BLIND_RULES = ("flat",)


def auto_preset(x: Any) -> str:
    """The preset ``composite="auto"`` uses for input ``x``: :data:`AUTO_PRESETS` ``["features"]`` for floating
    feature vectors of shape ``(N, D)``, else ``["default"]`` (images, volumes, sequences, token ids)."""
    features = getattr(x, "ndim", 0) == 2 and getattr(x, "is_floating_point", lambda: False)()
    return AUTO_PRESETS["features" if features else "default"]


def make_composite(composite: str | Composite | dict, **settings: Any) -> Composite:
    """A preset composite by name, with ``epsilon``, ``gamma``, ``alpha``, ``beta``, ``low``, ``high`` overrides.

    Settings that the preset does not use are rejected, so a typo or a misplaced setting cannot pass silently.
    A dict (:meth:`Composite.to_dict`) or the path of a ``.json`` file (:meth:`Composite.to_json`, e.g. the
    composite chosen by ``xaikit tune``) gives that composite.
    """
    for key in settings:
        if key not in SETTINGS:
            raise TypeError(f"unknown LRP setting {key!r}; valid: {', '.join(SETTINGS)}")
    if isinstance(composite, dict) or (isinstance(composite, (str, Path)) and str(composite).endswith(".json")):
        if settings:
            raise TypeError("settings such as epsilon/gamma apply to preset names; write them into the composite")
        return Composite.from_dict(composite) if isinstance(composite, dict) else Composite.from_json(composite)
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
    return _PRESETS[composite][1](settings)


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
