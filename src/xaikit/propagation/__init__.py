"""The propagation engine, by job:

- :mod:`.rules` (rules as data), :mod:`.composites` (which rule where, the presets), :mod:`.kernels` (a
  layer's relevance by a rule: the fast and the differentiable form);
- :mod:`.classify` (what the engine knows about torch operations, in-place detection included),
  :mod:`.handlers` (one module per operation family), :mod:`.table` (which handler serves which operation);
- :mod:`.session` (the interception of one explained forward pass), :mod:`.state` (what it keeps for the
  backward pass), :mod:`.coverage` (the report of what it saw), :mod:`.record` (relevance at layers).
"""
from .composites import PRESETS, Composite, make_composite, with_rules
from .rules import Part, Rule, Term, make_rule
from .session import Session
from . import rules  # noqa: F401  (xaikit.propagation.rules as R)

__all__ = ["rules", "Rule", "Part", "Term", "make_rule", "Composite", "make_composite", "with_rules", "PRESETS",
           "Session"]
