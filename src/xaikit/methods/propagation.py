"""Propagation methods: LRP with any composite, Guided Backprop, DeconvNet, Excitation Backprop.

All run on the engine of :mod:`xaikit.propagation`: one forward pass with the rules applied to the
operations it sees and one backward pass; the user's model is not modified.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..batching import check_batch_size
from ..explanation import Explanation
from ..propagation.balance import merge_absorbed, warn_absorbed, warn_unknown
from ..propagation.composites import AUTO, INPUT_BLIND_RULES, Composite, SETTINGS, auto_preset, make_composite
from ..propagation.remat import check_context, check_remat, long_context_kwargs, rematerialised, use_remat
from ..propagation.session import Session
from ..tokens import TokenInput
from .base import Method, register
from .gradient import Backprop, backprop, map_samples


@register
class LRP(Method):
    """Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) on any architecture.

    Parameters
    ----------
    model : nn.Module
    composite : str or Composite
        ``"auto"`` (default): chosen by the input of each call (:func:`~xaikit.propagation.composites.auto_preset`):
        ``epsilon_plus`` for feature vectors ``(N, D)`` (tables), ``epsilon_plus_flat`` for images and every
        other input. Or a preset name (``epsilon``, ``zero``, ``epsilon_plus``, ``epsilon_plus_flat``,
        ``epsilon_gamma_box``, ``epsilon_alpha2_beta1``, ``epsilon_alpha2_beta1_flat``, ``guided_backprop``,
        ``deconvnet``, ``excitation_backprop``, ``attnlrp``, ``cp_lrp``; which rule each applies to which layer
        type: docs/lrp.md) or a :class:`Composite`. A flat first-layer rule on a dense layer reading feature
        vectors gives every feature the same relevance: such a call warns.
    batch_size : int or "auto"
        Samples per forward/backward pass.
    embedding : str, nn.Module or None
        For integer token ids ``x`` of shape ``(N, L)``: the input embedding at whose output the model is
        explained (found automatically by default, see :mod:`xaikit.tokens`); the attribution is then the
        relevance per token ``(N, L)``, summed over the embedding dimension.
    progress : bool
        Show a progress bar over the chunks of the batch.
    remat : bool or "auto"
        Rematerialise the model's repeated blocks (a decoder's layers) during the relevance pass: the
        explained forward keeps only each block's input and the backward recomputes the block under the same
        rules (:mod:`xaikit.propagation.remat`), so memory grows by one block's activations, not all of them.
        ``"auto"`` (default): for token ids of at least 1,024 tokens. With it a Hugging Face causal LM runs
        without key/value cache and, for a :class:`~xaikit.NextToken` target, computes logits only from the
        explained position on (``expl.output`` then holds those). ``expl.info["remat"]`` says whether it ran.
    **settings
        ``epsilon``, ``gamma``, ``alpha``, ``beta``, ``low``, ``high``: override the preset's values.
        For ``epsilon_gamma_box`` the box bounds default to each sample's per-channel minimum and maximum.

    Notes
    -----
    The backward pass starts from the selected output value (the logit), so the relevance at the input sums
    to it up to what biases and stabilisers absorb. ``expl.info["conservation"]`` reports per sample
    ``start``, ``input`` (Σ relevance), ``absorbed`` and ``residual`` (= start − input − absorbed, relevance
    lost in operations that do not conserve it), and ``absorbed_by``: the absorbed relevance by operation
    (``{"linear:epsilon": (N,), "softmax:taylor": (N,), ...}``); ``expl.info["coverage"]`` lists the
    operations of one explained forward pass as handled / linear / unknown. Each call warns about unknown
    operations and when a sample's absorbed share exceeds
    :data:`~xaikit.propagation.balance.ABSORBED_SHARE` (:mod:`xaikit.propagation.balance`).
    """

    multiply_by_input: bool = True
    #: the rule settings that ``**settings`` forwards to the composite (others are refused by name)
    forwarded_settings = SETTINGS

    allow_integer_input = True
    differentiable = True  #: create_graph=True: see :mod:`xaikit.propagation.handlers.training`

    def __init__(self, model: nn.Module, composite: str | Composite = AUTO,
                 batch_size: int | str = "auto", embedding: str | nn.Module | None = None, progress: bool = False,
                 remat: bool | str = "auto", **settings: Any) -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        check_remat(remat)
        self.remat, self.rematerialising = remat, False
        #: the settings of ``composite="auto"`` (None: a fixed composite), checked now against both presets
        self.auto: dict[str, Any] | None = None
        if isinstance(composite, str) and composite == AUTO:
            self.auto = dict(settings)
            for preset in ("epsilon_plus", "epsilon_plus_flat"):
                make_composite(preset, **settings)
            composite = "epsilon_plus_flat"  # until a call shows the input (images: the usual case)
        self.composite = make_composite(composite, **settings)
        self.batch_size, self.progress = batch_size, bool(progress)
        self.tokens = TokenInput(model, embedding)

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({self.composite.name})"

    def _chunk(self, x: torch.Tensor, target, args, kwargs) -> tuple[torch.Tensor, Backprop]:
        session = Session(self.model, self.composite)
        ids = None
        if x.is_floating_point():
            forward = session.forward
        else:  # token ids: explained at the embedding vectors, relevance summed per token
            ids, x = x, self.tokens.embed(x)
            forward = self.tokens.forward(ids, session.run)
        try:
            with rematerialised(self.model, self.rematerialising, session):
                result = backprop(self.model, x, target, args, kwargs, forward=forward, allow_unused=True)
        finally:
            session.release()
        if x.dtype in (torch.float16, torch.bfloat16):  # float32 accumulation (the sum over the embedding, ...)
            x, result.grad = x.float(), result.grad.float()
        attribution = x * result.grad if self.multiply_by_input else result.grad
        if session.direct is not None:
            attribution = attribution + session.direct
        if ids is not None:  # relevance per token; a modified gradient (Guided Backprop) by its norm
            attribution = attribution.sum(-1) if self.multiply_by_input else attribution.norm(dim=-1)
        result.extra = {"absorbed": session.absorbed, "absorbed_by": session.absorbed_by,
                        "coverage": session.coverage}
        return attribution, result

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        if self.auto is not None:
            self.composite = make_composite(auto_preset(x), **self.auto)
        coverages = []

        def chunk(*a):
            attribution, result = self._chunk(*a)
            coverages.append(result.extra["coverage"])
            return attribution, result

        cost = 1
        if not x.is_floating_point():
            self.tokens.check(x, forward_kwargs)
            check_context(self.model, x)
            cost = self.tokens.dim()
        self.rematerialising = use_remat(self.remat, self.model, x)
        if self.rematerialising:
            target, forward_kwargs = long_context_kwargs(self.model, target, x.shape[-1], forward_kwargs)
        attribution, output, index, score, parts = map_samples(
            self, x, target, forward_args, forward_kwargs, self.batch_size, chunk, cost
        )
        warn_unknown(coverages[0], self.name)
        _warn_blind_first_layer(coverages[0].as_dict(), x, self.name)
        info: dict[str, Any] = {"coverage": coverages[0].as_dict(), "composite": self.composite.name,
                                "remat": self.rematerialising}
        if self.multiply_by_input:
            absorbed = [p.extra["absorbed"] for p in parts]
            total = attribution.flatten(1).sum(1)
            info["conservation"] = {
                "start": score, "input": total, "absorbed": torch.cat(absorbed),
                "residual": score - total - torch.cat(absorbed),
                "absorbed_by": merge_absorbed([p.extra["absorbed_by"] for p in parts], absorbed),
            }
            warn_absorbed(info["conservation"], self.name)
        return Explanation(attribution, index, output, self.name, info)


def _warn_blind_first_layer(coverage: dict[str, dict[str, int]], x: torch.Tensor, name: str) -> None:
    """Warn when an input-blind rule (flat) met a dense layer on feature vectors ``(N, D)``: every feature of a
    sample then gets the same relevance, whatever the model learned."""
    if not (x.is_floating_point() and x.ndim == 2):
        return
    blind = [op for op in coverage.get("handled", {})
             if not op.startswith("conv") and op.rpartition(":")[2] in INPUT_BLIND_RULES]
    if blind:
        warnings.warn(f"{name}: the flat rule applied to a dense first layer ({', '.join(blind)}) on feature vectors "
                      f"of shape {tuple(x.shape)} gives every feature of a sample the same relevance; use "
                      f"composite='auto' or 'epsilon_plus' for tabular inputs (flat rules are for images)",
                      UserWarning, stacklevel=4)


class _FixedComposite(LRP):
    preset: str = ""

    def __init__(self, model: nn.Module, batch_size: int | str = "auto", progress: bool = False,
                 remat: bool | str = "auto") -> None:
        super().__init__(model, self.preset, batch_size, progress=progress, remat=remat)

    @property
    def name(self) -> str:
        return type(self).__name__


@register
class GuidedBackprop(_FixedComposite):
    """Guided Backpropagation (Springenberg et al. 2014): ReLUs pass only positive gradients, through the
    forward mask. Returns the modified gradient (not multiplied by the input), as in the paper."""

    differentiable = False  # ReLU rules by tensor hooks: not for a double backward
    preset = "guided_backprop"
    multiply_by_input = False


@register
class DeconvNet(_FixedComposite):
    """DeconvNet (Zeiler & Fergus 2014, as in Springenberg et al. 2014): ReLUs pass positive gradients and
    ignore the forward mask. Returns the modified gradient."""

    differentiable = False  # ReLU rules by tensor hooks: not for a double backward
    preset = "deconvnet"
    multiply_by_input = False


@register
class ExcitationBackprop(_FixedComposite):
    """Excitation Backprop (Zhang et al. 2016/2018): the marginal winning probability propagates with
    positive weights only, which is the z⁺ rule on every layer. Started from the target logit (the paper
    starts from probability 1; the map differs only by that factor)."""

    preset = "excitation_backprop"
