"""The propagation engine: rules (data), composites (data), and the per-call interception session."""
from . import rules
from .composites import PRESETS, Composite, make_composite, with_rules
from .rules import make_rule
from .engine import Session
from .rules import Part, Rule, Term  # noqa: E402

__all__ = ["rules", "Rule", "Part", "Term", "make_rule", "Composite", "make_composite", "with_rules", "PRESETS", "Session"]
