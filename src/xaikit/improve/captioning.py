"""Explain and improve a captioning model (Sun, Lapuschkin, Samek, Binder, "Explain and improve: LRP-inference
fine-tuning for image captioning models", Information Fusion 2022).

A model in the structure of :class:`xaikit.zoo.captions.CaptionModel` (``encode(images) → v (N, P, D)``,
``embed(words) → e``, ``decode(v, e, parts=True) → (logits, c, h)``, ``head(c, h) = W_o (c + h) + b_o``):

- :func:`word_relevance`: LRP of each word's logit (composite ``epsilon``: ε on the linear maps, the LSTM's
  sigmoid gates and the attention softmax get no relevance — "signal takes all", Arras et al. 2017/2019) down
  to the image features ``v`` and the previous words' embeddings ``e``, split into an image part and a text
  part. With every bias zero they sum to the word's logit (up to ε).
- :func:`hallucinated`, :func:`text_dominated`: object words absent from the image; words whose relevance is
  mostly textual (the paper's diagnosis of hallucinations induced by the language prior).
- :class:`LRPInferenceLoss`: LRP-IFT,
  ``L = λ CE(head(c + h), y) + (1 − λ) CE(head(R̂(c) ⊙ c + R̂(h) ⊙ h), y)`` with
  ``R̂ = 1 + R / max |R| ∈ [0, 2]`` the normalised relevance of ``c_t`` and ``h_t`` for the true word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_input
from ..methods.base import Method
from ..methods.resolve import resolve_method
from ..modes import eval_semantics
from ..settings import checked_init
from .explain import check_weight
from .guided import normalised

DEFAULT = "lrp:composite=epsilon"


class _Joint(nn.Module):
    """``z = [v; e] (N, P + T, D) → decode(v, e)[:, step] (N, V)``: image features and word embeddings as one
    input, the logits of one step."""

    def __init__(self, model: nn.Module, regions: int, step: int) -> None:
        super().__init__()
        self.model, self.regions, self.step = model, regions, step
        self.training = model.training  # a wrapper: the model's own flags decide (and warn)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z[:, :self.regions], z[:, self.regions:self.regions + self.step + 1])[:, -1]


class _Head(nn.Module):
    """``[c; h] (M, 2, D) → head(c, h) (M, V)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, ch: torch.Tensor) -> torch.Tensor:
        return self.model.head(ch[:, 0], ch[:, 1])


@dataclass
class WordRelevance:
    """Per generated word ``(N, T)``: ``image`` (Σ relevance on the image features), ``text`` (Σ on the previous
    words' embeddings, ``<bos>`` included) and the explained ``logit``."""

    image: torch.Tensor
    text: torch.Tensor
    logit: torch.Tensor

    @property
    def text_share(self) -> torch.Tensor:
        """``(text − image) / (|text| + |image|)`` in [−1, 1]: 1 when only the previous words speak for the word
        (or the image speaks against it and the words do not), −1 when only the image speaks for it (0 where both
        are zero). Positive: the text's relevance exceeds the image's."""
        total = self.text.abs() + self.image.abs()
        return torch.where(total > 0, (self.text - self.image) / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


def _inputs(model: nn.Module, images: torch.Tensor, words: torch.Tensor, bos: int) -> torch.Tensor:
    check_input(images, "images", model)
    if not isinstance(words, torch.Tensor) or words.ndim != 2 or words.shape[0] != images.shape[0] \
            or words.is_floating_point():
        raise ValueError(f"words must be an integer tensor (N, T) with N = {images.shape[0]} (the images), got "
                         f"{tuple(words.shape) if isinstance(words, torch.Tensor) else type(words).__name__}")
    previous = torch.cat([torch.full_like(words[:, :1], bos), words[:, :-1]], 1)
    with torch.no_grad():
        return torch.cat([model.encode(images), model.embed(previous)], 1)


def word_relevance(model: nn.Module, images: torch.Tensor, words: torch.Tensor, method: str | Method | None = None,
                   method_settings: dict[str, Any] | None = None, *, bos: int = 0) -> WordRelevance:
    """The relevance of each word ``words[:, t]`` (given the words before it) split into image and text.

    Parameters
    ----------
    model : nn.Module
        A captioning model with ``encode``, ``embed`` and ``decode`` (see the module docstring); unchanged.
    images : Tensor ``(N, ...)``
    words : Tensor ``(N, T)`` of word ids
        The caption (generated or given); the word at step ``t`` is explained with ``<bos>, words[:, :t]`` as
        its previous words.
    method, method_settings
        The explainer, built on the decoder seen as a function of ``[v; e]`` (default ``"lrp:composite=epsilon"``:
        ε-rule, signal takes all on the LSTM gates and the attention weights).
    bos : int
        The id of the start word.

    Notes
    -----
    One explained pass per step ``t`` (each a batch of ``N``). The relevance is taken at the image features
    ``v = encode(images)`` (the encoder is not explained) and at the embeddings; the biases, ε and the LSTM's
    zero initial state absorb the rest (``expl.info["conservation"]``), so in a copy of the model with every
    bias zero ``image + text == logit`` up to ε.
    """
    z = _inputs(model, images, words, bos)
    regions = z.shape[1] - words.shape[1]
    image, text, logit = [], [], []
    for t in range(words.shape[1]):  # one explained pass per step (the steps see different inputs)
        joint = _Joint(model, regions, t)
        expl = resolve_method(joint, method, method_settings, default=DEFAULT)(z[:, :regions + t + 1],
                                                                              target=words[:, t])
        r = expl.attribution
        image.append(r[:, :regions].flatten(1).sum(1))
        text.append(r[:, regions:].flatten(1).sum(1))
        logit.append(expl.output.gather(1, expl.target.view(-1, 1).to(expl.output.device)).squeeze(1))
    return WordRelevance(torch.stack(image, 1), torch.stack(text, 1), torch.stack(logit, 1))


def hallucinated(words: torch.Tensor, objects: torch.Tensor, first_object: int = 2) -> torch.Tensor:
    """``(N, T)`` bool: an object word (id ``first_object + k``) whose object ``k`` is not in the image
    (``objects (N, K)`` bool)."""
    k = words - first_object
    is_object = (k >= 0) & (k < objects.shape[1])
    present = objects.gather(1, k.clamp(0, objects.shape[1] - 1))
    return is_object & ~present


def text_dominated(relevance: WordRelevance, threshold: float = 0.0) -> torch.Tensor:
    """``(N, T)`` bool: words whose relevance is mostly textual (``text_share > threshold``)."""
    return relevance.text_share > threshold


class LRPInferenceLoss(nn.Module):
    """LRP-IFT (Sun et al. 2022): ``λ CE(p_u, y) + (1 − λ) CE(p_w, y)`` over the words of a teacher-forced caption.

    ``p_u = head(c_t, h_t)``, ``p_w = head(R̂(c_t) ⊙ c_t, R̂(h_t) ⊙ h_t)`` with
    ``R̂(·) = 1 + R(·) / max |R(·)|`` (per word, separately for ``c_t`` and ``h_t``; in [0, 2]) and ``R`` the
    relevance of ``c_t`` and ``h_t`` for the true word ``y_t`` (LRP-ε through the predictor ``head``; a constant
    weighting, no gradient through it).
    Prediction uses ``p_u``: the model is unchanged, only its fine-tuning differs.

    ``forward(model, images, previous, targets, mask)``: ``previous (N, T)`` the input words (``<bos>``
    first), ``targets (N, T)`` the words to predict, ``mask (N, T)`` bool (which steps count).
    """

    @checked_init
    def __init__(self, lam: float = 0.5, method: str | Method | None = None,
                 method_settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.lam = check_weight(lam)
        if self.lam > 1:
            raise ValueError(f"lam must be in [0, 1] (the weight of the unweighted term), got {lam!r}")
        self.method, self.method_settings = method, method_settings

    def weights(self, model: nn.Module, c: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M, 2, D)``: ``R̂`` of ``c`` and ``h`` (rows ``(M, D)``) for the words ``y (M,)``."""
        with eval_semantics(model, warn=False):  # the explanation inside a training step: an explicit opt-in
            head = _Head(model)
            explainer = resolve_method(head, self.method, self.method_settings, default=DEFAULT)
            r = explainer(torch.stack([c, h], 1).detach(), target=y).attribution
        return 1 + normalised(r.flatten(0, 1)).view_as(r)

    def forward(self, model: nn.Module, images: torch.Tensor, previous: torch.Tensor, targets: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        check_input(images, "images", model)
        logits, c, h = model.decode(model.encode(images), model.embed(previous), parts=True)
        keep = mask.flatten()
        y = targets.flatten()[keep]
        task = F.cross_entropy(logits.flatten(0, 1)[keep], y)
        if self.lam == 1:
            return task
        c, h = c.flatten(0, 1)[keep], h.flatten(0, 1)[keep]
        w = self.weights(model, c, h, y)
        guided = F.cross_entropy(model.head(w[:, 0] * c, w[:, 1] * h), y)
        return self.lam * task + (1 - self.lam) * guided
