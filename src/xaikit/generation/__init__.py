"""Explaining what language models generate: per-token and multi-token targets, padded batches.

- :class:`TokenLogits`: the target ``Σ_k logit[n, position_k, token_k]`` (one chosen token, or an answer);
  :class:`TokenLogProbs`: the same with log-probabilities (an answer's log-likelihood).
- :func:`greedy_continuation`: greedy decoding on the model's key/value cache; :func:`split_generate_output`
  reads a Hugging Face ``generate`` output.
- :func:`explain_generation`: the tokens × generated relevance matrix of a prompt's continuation, one call.
- :func:`explain_answer`: the relevance for the sum of an answer's logits (a multi-token target).
- :mod:`.segments`: relevance per user-defined segment (sentences, documents, turns), and Shapley values or
  leave-one-out over segments for models without gradients (a callable returning log-probabilities).
- :mod:`.padding`: moving padding, position ids over real tokens, the keyword inputs of a padded batch.
"""
from ..deprecation import renamed
from ..deprecation import renamed as _renamed
from .decode import greedy_continuation, split_generate_output
from .explain import GenerationResult, explain_answer, explain_generation
from .padding import position_ids, repad, sequence_inputs
from .segments import (AnswerLogProb, SegmentRelevanceResult, Segments, SegmentShapley, SegmentShapleyResult,
                       segment_relevance)
from .targets import TokenLogits, TokenLogProbs

__all__ = ["TokenLogits", "TokenLogProbs", "GenerationResult", "explain_generation", "explain_answer",
           "greedy_continuation", "split_generate_output", "position_ids", "repad", "sequence_inputs",
           "Segments", "segment_relevance", "SegmentRelevanceResult", "SegmentShapley", "SegmentShapleyResult",
           "AnswerLogProb"]

#: old result names (kept for one release, with a DeprecationWarning)
__getattr__ = _renamed(__name__, {"GenerationExplanation": "GenerationResult"}, globals())
