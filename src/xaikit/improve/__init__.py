"""Improve models with explanations: training-time tools for any model, the layer chosen by name, inside a
normal PyTorch training loop (plain functions and ``nn.Module`` losses, no trainer).

- :class:`RightForRightReasonsLoss`, :func:`rrr_penalty`: penalise input gradients (Ross et al. 2017) or
  relevance inside "wrong reason" masks;
- :class:`ExplanationGuidedLoss`: ``L(y, p(f)) + λ L(y, p((1 + R(f)) ⊙ f))`` (Sun et al. 2020; LRP-IFT), in
  supervised training and, on a :class:`PrototypicalEpisode`, in episodic few-shot training (:mod:`.fewshot`);
- :func:`fit_cav`, :func:`project`, :class:`Projected`, :func:`a_clarc`: class artifact compensation
  (Anders et al. 2022);
- :func:`spray`: spectral relevance analysis to find a suspected artifact (Lapuschkin et al. 2019);
- :func:`channel_importance`, :func:`prune_plan`, :func:`pruned`, :func:`layer_normalised`,
  :func:`reference_samples`: pruning by explaining (Yeom et al. 2021);
- :func:`training_culprits`: the training samples behind an artifact or a label error, ranked by their
  attribution (e.g. TRAK, Park et al. 2023) to wrong-reason predictions;
- :func:`word_relevance`, :func:`hallucinated`, :class:`LRPInferenceLoss` (:mod:`.captioning`): LRP of a
  captioning model's words split into image and text, and LRP-inference fine-tuning (Sun et al. 2022);
- :class:`Revise`: explanatory interactive learning, a copy of the model revised where a user marked its reasons
  wrong (RRR on painted masks, or P-ClArC on a flagged cluster), saved as files and repeated (:func:`repeat`).

The explanations that enter a loss are computed by the methods in training mode (``create_graph=True``,
:mod:`xaikit.propagation.handlers.training`), so their parameters' gradients are exact and ``.grad`` holds only what the
training loss puts there. See ``docs/improve.md``.
"""
from .captioning import LRPInferenceLoss, WordRelevance, hallucinated, text_dominated, word_relevance
from .clarc import CAV, Projected, a_clarc, fit_cav, project
from .culprits import TrainingCulpritsResult, training_culprits
from .fewshot import PrototypeClassifier, PrototypicalEpisode, episode_accuracy, episode_loss, prototypes
from .guided import ExplanationGuidedLoss, layer_relevance, normalised
from .pruning import CRITERIA, SCOPES, channel_importance, layer_normalised, prune_plan, pruned, reference_samples
from .revise import Revise, ReviseResult, RevisionCancelled, load_revision, repeat
from .rrr import RightForRightReasonsLoss, rrr_penalty
from .spray import SpRAyResult, spray

__all__ = ["RightForRightReasonsLoss", "rrr_penalty", "ExplanationGuidedLoss", "layer_relevance", "normalised",
           "CAV", "fit_cav", "project", "Projected", "a_clarc", "spray", "SpRAyResult", "channel_importance",
           "prune_plan", "pruned", "CRITERIA", "SCOPES", "layer_normalised", "reference_samples",
           "training_culprits", "TrainingCulpritsResult",
           "Revise", "ReviseResult", "RevisionCancelled", "load_revision", "repeat",
           "PrototypicalEpisode", "PrototypeClassifier", "prototypes", "episode_loss", "episode_accuracy"]
__all__ += ["word_relevance", "WordRelevance", "hallucinated", "text_dominated", "LRPInferenceLoss"]
