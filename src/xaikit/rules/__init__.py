"""Rules: "the model predicts this as long as …".

- :class:`Anchors`: high-precision rules (Ribeiro, Singh, Guestrin, AAAI 2018) on tables (column ranges and
  categories), images (superpixels) and text (words), found by beam search with KL-LUCB bandits
  (:mod:`xaikit.rules.bandit`) on batched perturbation samples (:mod:`xaikit.rules.spaces`).

Stands on the methods' feature masks and baselines and the foundation's column schema; imports downward only.
"""
from .anchors import Anchors, AnchorsResult, Rule

__all__ = ["Anchors", "AnchorsResult", "Rule"]
