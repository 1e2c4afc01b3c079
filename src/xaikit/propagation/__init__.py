"""The propagation engine: rules (data), composites (data), and the per-call interception session."""
from . import opaque, rules, sequence_ops, statistics  # noqa: F401  (they register their handlers with the engine)
from .composites import PRESETS, Composite, make_composite, with_rules
from .engine import Session
from .rules import Part, Rule, Term, make_rule

__all__ = ["rules", "Rule", "Part", "Term", "make_rule", "Composite", "make_composite", "with_rules", "PRESETS",
           "Session"]
