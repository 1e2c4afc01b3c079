"""Search spaces: the settings of a method that a search may choose, as data.

A space has named parameters, each with an ordered tuple of values; a *configuration* picks one value per
parameter. :class:`LRPSpace` builds per-layer-group composites (groups by depth or by module-name pattern),
:class:`MethodSpace` any registered method's settings (IG steps/baseline, SmoothGrad σ, occlusion window...).
Several spaces are searched together as a list. Every configuration has a stable text key (used by the
results file, :mod:`.store`) and neighbours (one parameter moved to an adjacent value) for local refinement.
"""
from __future__ import annotations

import fnmatch
import itertools
import math
from typing import Any, Sequence

import numpy as np
from torch import nn

from ..errors import did_you_mean
from ..methods.base import Method, get_method
from ..methods.resolve import parse_spec
from ..propagation.composites import Composite
from ..propagation.rules import Rule, make_rule, rule_to_dict
from ..settings import CheckedSettings, UnknownSetting, settings_of

Config = dict[str, Any]


class Space(CheckedSettings):
    """Named parameters with ordered values, and how a configuration becomes a method.

    Parameters
    ----------
    name : str
        Prefix of the configuration keys (unique among the spaces of one search).
    params : dict name -> sequence of values
        Each parameter's candidate values, in an order where neighbours are similar (e.g. increasing γ).
    """

    def __init__(self, name: str, params: dict[str, Sequence[Any]]) -> None:
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a space needs a non-empty name without ':', got {name!r}")
        if not params:
            raise ValueError(f"search space {name!r} is empty: give at least one parameter with values")
        self.name = name
        self.params: dict[str, tuple] = {}
        for key, values in params.items():
            values = tuple(values) if isinstance(values, (list, tuple, range)) else (values,)
            if not values:
                raise ValueError(f"parameter {key!r} of search space {name!r} has no values; give at least one")
            if len({_text(v) for v in values}) != len(values):
                raise ValueError(f"parameter {key!r} of search space {name!r} repeats a value: {values}")
            self.params[key] = values

    # -- configurations ---------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of configurations (the grid's size)."""
        return math.prod(len(v) for v in self.params.values())

    def config(self, index: int) -> Config:
        """The ``index``-th configuration of the grid (mixed-radix, the last parameter fastest)."""
        config = {}
        for key, values in reversed(self.params.items()):
            index, digit = divmod(index, len(values))
            config[key] = values[digit]
        return dict(reversed(config.items()))

    def grid(self) -> list[Config]:
        """Every configuration (the full grid)."""
        return [dict(zip(self.params, combo)) for combo in itertools.product(*self.params.values())]

    def sample(self, count: int, rng: np.random.Generator) -> list[Config]:
        """``count`` distinct configurations drawn uniformly (all of them when ``count`` ≥ :attr:`size`)."""
        if count >= self.size:
            return self.grid()
        return [self.config(int(i)) for i in sorted(rng.choice(self.size, size=count, replace=False))]

    def neighbours(self, config: Config) -> list[Config]:
        """Configurations that move one parameter of ``config`` to an adjacent value."""
        found = []
        for key, values in self.params.items():
            position = [_text(v) for v in values].index(_text(config[key]))
            for step in (-1, 1):
                if 0 <= position + step < len(values):
                    found.append({**config, key: values[position + step]})
        return found

    def key(self, config: Config) -> str:
        """A stable text key, e.g. ``"lrp:g1=gamma=0.25,g2=epsilon=0.1"``."""
        return f"{self.name}:" + ",".join(f"{k}={_text(config[k])}" for k in self.params)

    def check_config(self, config: Config) -> None:
        """Raise when ``config`` names an unknown parameter or a value outside the space."""
        unknown = set(config) - set(self.params)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} of search space {self.name!r}; "
                             f"valid: {', '.join(self.params)}")
        for key, values in self.params.items():
            if key not in config or _text(config[key]) not in [_text(v) for v in values]:
                raise ValueError(f"parameter {key!r} of search space {self.name!r} must be one of {values}")

    def build(self, model: nn.Module, config: Config) -> Method:
        """The method of ``config`` on ``model``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the space is, for the results file's fingerprint and the report."""
        return {"name": self.name, "type": type(self).__name__,
                "params": {k: [_text(v) for v in values] for k, values in self.params.items()}}


def _text(value: Any) -> str:
    """A stable text form of a parameter value (for keys and comparisons)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_text(v) for v in value) + ")"
    return str(value)


# ---- LRP: per-layer-group rules -----------------------------------------------------------------------------

#: rule families with one numeric setting, for the ``"name=value"`` rule specs of :class:`LRPSpace`
#: rules whose spec takes a value: their setting of the same name (alpha_beta: alpha, with beta = alpha - 1)
_VALUED = ("gamma", "epsilon", "alpha_beta")


def parse_rule(spec: str | Rule, low: float | None = None, high: float | None = None) -> Rule:
    """A rule from a short spec: ``"gamma=0.25"``, ``"epsilon=0.1"``, ``"alpha_beta=2"`` (β = α − 1),
    ``"zplus"``, ``"zero"``, ``"flat"``, ``"wsquare"``, ``"zbox"`` (bounds ``low``/``high``)."""
    if isinstance(spec, Rule):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a rule spec must be a string such as 'gamma=0.25', got {spec!r}")
    name, equals, value = spec.partition("=")
    if not equals:
        if name == "zbox":
            if low is None or high is None:
                raise ValueError("the zbox rule needs the input bounds: pass low= and high= to LRPSpace")
            return make_rule("zbox", low=low, high=high)
        return make_rule(name)
    if name not in _VALUED:
        raise ValueError(f"rule spec {spec!r}: only {', '.join(_VALUED)} take a value (name=value)")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"rule spec {spec!r}: {value!r} is not a number") from None
    if name == "alpha_beta":
        return make_rule({"rule": "alpha_beta", "alpha": number, "beta": number - 1.0})
    return make_rule({"rule": name, name: number})


def weighted_layers(model: nn.Module) -> list[str]:
    """Names of the model's linear and convolutional modules, in registration order (≈ depth for sequential
    models)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def depth_groups(model: nn.Module, count: int) -> dict[str, tuple[str, ...]]:
    """Split the weighted layers except the last (the output layer) into ``count`` contiguous groups of
    (nearly) equal size: ``{"g1": names, ..., "gK": names}`` from input to output."""
    layers = weighted_layers(model)[:-1]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"groups must be a positive number of depth groups or a dict of name patterns, got {count!r}")
    if count > len(layers):
        raise ValueError(f"groups={count} but the model has only {len(layers)} linear/conv layers before the "
                         f"output layer; use at most {len(layers)} groups")
    bounds = np.linspace(0, len(layers), count + 1).round().astype(int)
    return {f"g{i + 1}": tuple(layers[bounds[i]: bounds[i + 1]]) for i in range(count)}


class LRPSpace(Space):
    """Composites with one rule per layer group, and optionally a first-layer rule (Pahde et al. 2023).

    Parameters
    ----------
    model : nn.Module
        The model (only read, for the names of its layers).
    groups : int or dict name -> pattern(s)
        ``K``: the linear/conv layers before the output layer split into ``K`` groups by depth (``g1`` near
        the input ... ``gK``); or ``{"low": "features.[0-4]*", ...}``: groups by ``fnmatch`` module-name
        pattern(s) (first match wins, like :class:`~xaikit.propagation.composites.Composite`'s ``by_name``).
    rules : sequence of rule specs, or dict group -> sequence
        Candidate rules of every group (or per group): ``"gamma=0.25"``, ``"epsilon=0.1"``,
        ``"alpha_beta=2"`` (α, β = α − 1), ``"zplus"``, ``"zero"``.
    gamma : sequence of float, optional
        Shorthand for ``rules=["gamma=v" for v in gamma]``.
    first : sequence of rule specs or None
        Candidate first-layer rules (``None``: the group's rule; ``"zbox"``, ``"flat"``, ``"wsquare"``, ...).
    default : rule spec
        The rule of layers in no group (the output layer for depth groups): LRP-ε by default.
    low, high : float, optional
        Input bounds of the ``zbox`` first-layer rule.
    name : str
        Key prefix of the space.
    """

    def __init__(self, model: nn.Module, groups: int | dict[str, str | Sequence[str]] = 4,
                 rules: Sequence[str] | dict[str, Sequence[str]] | None = None, gamma: Sequence[float] | None = None,
                 first: Sequence[str | None] = (None,), default: str = "epsilon=1e-06",
                 low: float | None = None, high: float | None = None, name: str = "lrp") -> None:
        if rules is not None and gamma is not None:
            raise TypeError("give either rules= or gamma= (a shorthand for rules=['gamma=v', ...]), not both")
        if rules is None:
            rules = [f"gamma={float(g)!r}" for g in (gamma if gamma is not None else (0.0, 0.25))]
        if isinstance(groups, dict):
            if not groups:
                raise ValueError("groups is an empty dict: give at least one group name -> module-name pattern")
            self.groups = {g: (p,) if isinstance(p, str) else tuple(p) for g, p in groups.items()}
            names = weighted_layers(model)
            for group, patterns in self.groups.items():
                if not any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
                    raise ValueError(f"group {group!r}: pattern(s) {list(patterns)} match no linear/conv layer; "
                                     f"layers: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        else:
            self.groups = depth_groups(model, groups)
        per_group = rules if isinstance(rules, dict) else {g: rules for g in self.groups}
        unknown = set(per_group) - set(self.groups)
        if unknown:
            raise ValueError(f"rules given for unknown group(s) {sorted(unknown)}; groups: {', '.join(self.groups)}")
        self.low, self.high = low, high
        params: dict[str, Sequence[Any]] = {}
        for group in self.groups:
            values = tuple(per_group.get(group, ()))
            for spec in values:
                parse_rule(spec, low, high)  # fail now on a bad spec
            params[group] = values
        first = tuple(first) if first is not None else (None,)
        for spec in first:
            if spec is not None:
                parse_rule(spec, low, high)
        if len(first) > 1 or first[0] is not None:
            params["first"] = first
        self.default = parse_rule(default, low, high)
        self.by_depth = not isinstance(groups, dict)
        super().__init__(name, params)

    def composite(self, config: Config) -> Composite:
        """The composite of ``config``: a :class:`Composite` usable as ``xk.LRP(model, composite=...)``."""
        self.check_config(config)
        by_name = tuple((pattern, parse_rule(config[group], self.low, self.high))
                        for group, patterns in self.groups.items() for pattern in patterns)
        first = config.get("first")
        return Composite(f"tuned({self.key(config)})", self.default, self.default,
                         None if first is None else parse_rule(first, self.low, self.high), by_name)

    def build(self, model: nn.Module, config: Config) -> Method:
        from ..methods.propagation import LRP

        return LRP(model, composite=self.composite(config))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "groups": {g: list(p) for g, p in self.groups.items()},
                "default": rule_to_dict(self.default)}


class MethodSpace(Space):
    """Settings of any registered method, e.g. ``MethodSpace("integrated_gradients", steps=[8, 16, 32],
    baseline=["zero", "blur"])``, ``MethodSpace("smooth_grad", sigma=[0.05, 0.1, 0.2], fixed={"samples": 16})``
    or ``MethodSpace("occlusion", window=[2, 4, 8])``.

    Parameters
    ----------
    method : str
        A registered method name (see ``xk.METHODS``), or a spec ``"name:key=value"`` whose settings are fixed.
    fixed : dict, optional
        Settings passed to every configuration.
    name : str, optional
        Key prefix (default: the method name).
    **params : sequence
        The searched settings and their candidate values; unknown settings are rejected.
    """

    def __init__(self, method: str, fixed: dict[str, Any] | None = None, name: str | None = None,
                 **params: Sequence[Any]) -> None:
        method, spec_fixed = parse_spec(method)  # "name:key=value" fixes those settings (as the CLI reads it)
        self.cls = get_method(method)
        self.fixed = {**spec_fixed, **dict(fixed or {})}
        valid, takes_any = settings_of(self.cls)
        for key in (*params, *self.fixed):
            if key not in valid and not takes_any:
                hint = did_you_mean(key, valid)
                raise UnknownSetting(f"unknown parameter {key!r} of method {method!r}; {hint}valid: {', '.join(valid)}")
        both = set(params) & set(self.fixed)
        if both:
            raise ValueError(f"parameter(s) {sorted(both)} are both searched and fixed; give each once")
        self.method = method
        super().__init__(name or method, params)

    def build(self, model: nn.Module, config: Config) -> Method:
        self.check_config(config)
        return self.cls(model, **self.fixed, **config)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.method, "fixed": {k: _text(v) for k, v in self.fixed.items()}}


def check_spaces(spaces: Space | Sequence[Space]) -> list[Space]:
    """A non-empty list of spaces with distinct names."""
    spaces = [spaces] if isinstance(spaces, Space) else list(spaces or ())
    if not spaces:
        raise ValueError("the search space is empty: give at least one LRPSpace or MethodSpace")
    for space in spaces:
        if not isinstance(space, Space):
            raise TypeError(f"spaces must be LRPSpace/MethodSpace objects, got {type(space).__name__}")
    names = [s.name for s in spaces]
    if len(set(names)) != len(names):
        raise ValueError(f"two search spaces share a name ({names}); give them distinct name=")
    return spaces
