"""Improve models with explanations: training-time tools for any model, the layer chosen by name, inside a
normal PyTorch training loop (plain functions and ``nn.Module`` losses, no trainer).

- :class:`RightForRightReasonsLoss`, :func:`rrr_penalty`: penalise input gradients (Ross et al. 2017) or
  relevance inside "wrong reason" masks;
- :class:`ExplanationGuidedLoss`: ``L(y, p(f)) + λ L(y, p((1 + R(f)) ⊙ f))`` (Sun et al. 2020; LRP-IFT);
- :func:`fit_cav`, :func:`project`, :class:`Projected`, :func:`a_clarc`: class artifact compensation
  (Anders et al. 2022);
- :func:`spray`: spectral relevance analysis to find a suspected artifact (Lapuschkin et al. 2019);
- :func:`channel_importance`, :func:`prune_plan`, :func:`pruned`: pruning by explaining (Yeom et al. 2021);
- :class:`Revise`: explanatory interactive learning, a copy of the model revised where a user marked its reasons
  wrong (RRR on painted masks, or P-ClArC on a flagged cluster), saved as files and repeated (:func:`repeat`).

The explanations that enter a loss are computed by the methods in training mode (``create_graph=True``,
:mod:`xaikit.propagation.handlers.training`), so their parameters' gradients are exact and ``.grad`` holds only what the
training loss puts there. See ``docs/improve.md``.
"""
from .clarc import CAV, Projected, a_clarc, fit_cav, project
from .guided import ExplanationGuidedLoss, layer_relevance, normalised
from .pruning import CRITERIA, channel_importance, prune_plan, pruned
from .revise import Revise, ReviseResult, RevisionCancelled, load_revision, repeat
from .rrr import RightForRightReasonsLoss, rrr_penalty
from .spray import SpRAyResult, spray

__all__ = ["RightForRightReasonsLoss", "rrr_penalty", "ExplanationGuidedLoss", "layer_relevance", "normalised",
           "CAV", "fit_cav", "project", "Projected", "a_clarc", "spray", "SpRAyResult", "channel_importance",
           "prune_plan", "pruned", "CRITERIA", "Revise", "ReviseResult", "RevisionCancelled", "load_revision", "repeat"]
