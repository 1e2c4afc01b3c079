"""Improve models with explanations: training-time tools for any model, the layer chosen by name, inside a
normal PyTorch training loop (plain functions and ``nn.Module`` losses, no trainer).

- :class:`RightForRightReasonsLoss`, :func:`rrr_penalty`: penalise input gradients (Ross et al. 2017) or
  relevance inside "wrong reason" masks;
- :class:`ExplanationGuidedLoss`: ``L(y, p(f)) + λ L(y, p((1 + R(f)) ⊙ f))`` (Sun et al. 2020; LRP-IFT), in
  supervised training and, on a :class:`PrototypicalEpisode`, in episodic few-shot training (:mod:`.fewshot`);
- :func:`fit_cav`, :func:`project`, :class:`Projected`, :func:`a_clarc`: class artifact compensation
  (Anders et al. 2022);
- :func:`spray`: spectral relevance analysis to find a suspected artifact (Lapuschkin et al. 2019);
- :func:`channel_importance`, :func:`prune_plan`, :func:`pruned`: pruning by explaining (Yeom et al. 2021).

The explanations that enter a loss are computed by the methods in training mode (``create_graph=True``,
:mod:`xaikit.propagation.handlers.training`), so their parameters' gradients are exact and ``.grad`` holds only what the
training loss puts there. See ``docs/improve.md``.
"""
from .clarc import CAV, Projected, a_clarc, fit_cav, project
from .fewshot import PrototypeClassifier, PrototypicalEpisode, episode_accuracy, episode_loss, prototypes
from .guided import ExplanationGuidedLoss, layer_relevance, normalised
from .pruning import CRITERIA, channel_importance, prune_plan, pruned
from .rrr import RightForRightReasonsLoss, rrr_penalty
from .spray import SpRAyResult, spray

__all__ = ["RightForRightReasonsLoss", "rrr_penalty", "ExplanationGuidedLoss", "layer_relevance", "normalised",
           "CAV", "fit_cav", "project", "Projected", "a_clarc", "spray", "SpRAyResult", "channel_importance",
           "prune_plan", "pruned", "CRITERIA", "PrototypicalEpisode", "PrototypeClassifier", "prototypes",
           "episode_loss", "episode_accuracy"]
