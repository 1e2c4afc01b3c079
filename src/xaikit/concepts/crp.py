"""Concept-conditional relevance (CRP; Achtibat et al., "From attribution maps to human-understandable
explanations through Concept Relevance Propagation", Nat. Mach. Intell. 2023).

- :class:`ConditionalHeatmaps`: the input heatmaps of one sample conditioned on concepts (sets of channels of a
  layer): ``R(x | θ)``, the relevance that flows through the concept's channels of the layer only (Eq. 6-7 of
  the paper; a residual shortcut's relevance is excluded); all concepts in one batched backward pass.
- :class:`Composition`: the top concepts of a layer for a prediction with their share of the relevance in %
  ("4.3 % feather, 2.3 % water") and their conditional heatmaps.
- :class:`Hierarchy`: a concept's relevance split over the channels of a lower layer ("which lower concepts
  make up this one"), with the heatmaps conditioned on both.

A concept's relevance at the layer is ``R_c = Σ_{units of c} R``; its share is ``100 · R_c / Σ_c' |R_c'|``
(signed: a concept can speak against the prediction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..deprecation import renamed
from ..errors import check_positive
from ..layers import find_layer
from ..methods.base import Method
from ..results import ResultExport
from ..targets import TargetSpec
from .base import ConceptTool


@dataclass
class ConditionalHeatmapsResult(ResultExport):
    """Conditional heatmaps of concepts of a layer.

    Attributes
    ----------
    heatmaps : tensor ``(K, *x.shape[1:])``
        The input relevance conditioned on each concept.
    concepts : list
        The concepts (channel index or list of indices), one per heatmap.
    sample : LongTensor ``(K,)``
        The explained sample of each heatmap.
    relevance : tensor ``(K,)``
        Each concept's relevance at the layer, ``R_c``.
    share : tensor ``(K,)``
        ``100 · R_c / Σ_c' |R_c'|`` over all channels of the layer, for the concept's sample.
    target : LongTensor ``(K,)``
        The explained output.
    layer : str
    """

    heatmaps: torch.Tensor
    concepts: list
    sample: torch.Tensor
    relevance: torch.Tensor
    share: torch.Tensor
    target: torch.Tensor
    layer: str

    def __len__(self) -> int:
        return len(self.concepts)

    def describe(self, labels: dict | None = None) -> list[str]:
        """One line per concept: ``"channel 12: 4.3 %"`` (or the label of the channel); where the heatmaps are of
        several samples, each line starts with its sample: ``"sample 1: channel 12: 4.3 %"``."""
        lines = []
        several = len(set(self.sample.tolist())) > 1
        for concept, share, sample in zip(self.concepts, self.share.tolist(), self.sample.tolist()):
            name = labels.get(concept, concept) if labels and not isinstance(concept, list) else concept
            line = (f"{'channel' if isinstance(name, int) else 'channels' if isinstance(name, list) else ''} "
                    f"{name}: {share:.1f} %".strip())
            lines.append(f"sample {sample}: {line}" if several else line)
        return lines

    def _rows(self) -> list[dict[str, Any]]:
        """One row per heatmap: its concept, sample, relevance at the layer, share in % and target (the heatmaps
        themselves are tensors: ``.heatmaps``)."""
        return [{"concept": concept, "sample": int(n), "relevance": float(r), "share": float(p), "target": int(t)}
                for concept, n, r, p, t in zip(self.concepts, self.sample.tolist(), self.relevance.tolist(),
                                               self.share.tolist(), self.target.tolist())]


class ConditionalHeatmaps(ConceptTool):
    """Heatmaps of the input conditioned on concepts of a layer, all in one batched backward pass.

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool`.

    Examples
    --------
    >>> crp = xk.concepts.ConditionalHeatmaps(model, layer="features.9")         # doctest: +SKIP
    >>> maps = crp(x[:1], target=2, concepts=[3, [5, 7]])                       # doctest: +SKIP
    >>> maps.heatmaps.shape, maps.share                                          # doctest: +SKIP

    Notes
    -----
    A concept's heatmap is the relevance that flows through its channels of the layer and nothing else
    (Achtibat et al. 2023, Eq. 6-7): relevance that reaches the input along a path bypassing the layer (a
    residual shortcut around it, a parallel branch) is in no concept's heatmap. It is computed as
    ``R(θ) − R(0)``, the heatmap under the mask minus the heatmap with the layer's relevance zeroed (one extra
    row per sample; :func:`~xaikit.propagation.record.through_rows`), exact for methods whose backward is
    linear in the relevance (the LRP rules, gradient, gradient × input, excitation backprop).

    What sums to what, per sample:

    - the heatmaps of all channels sum to the heatmap of the relevance passing through the layer, which is
      the unconditional heatmap when every path from the input to the output crosses the layer (no shortcut
      around it), and the unconditional heatmap minus the shortcut's heatmap otherwise;
    - the total of a concept's heatmap is the concept's relevance at the layer, ``R_c`` (with a conserving
      rule and no bias below the layer; biases and ε absorb their share otherwise).

    Cost: one no-grad forward of one sample (the channel count) and one pass of a batch of ``K + N`` rows
    (``N`` zeroed rows); the method's ``batch_size`` chunks it. In float32 a heatmap carries the rounding of
    the subtraction, about 1e-5 of a typical channel's heatmap.
    """

    def __init__(self, model: nn.Module, layer: str, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto") -> None:
        super().__init__(model, layer, method, method_settings, axis)

    def __call__(self, x: torch.Tensor, target: TargetSpec = None, concepts: Sequence | None = None,
                 **call: Any) -> ConditionalHeatmapsResult:
        """Condition the explanation of each sample of ``x`` on ``concepts`` (default: every channel).

        ``concepts`` is a list of channel indices or of lists of them (a concept made of several channels),
        the same for every sample.
        """
        x = self.check(x)
        n = x.shape[0]
        concepts = None if concepts is None else list(concepts)
        if concepts is not None and not concepts:
            raise ValueError("concepts must hold at least one concept (a channel index or a list of them)")
        channels = self._channels(x, call)
        each = list(range(channels)) if concepts is None else concepts
        masks = self.masks(each, channels).repeat(n, 1)
        sample = torch.arange(n).repeat_interleave(len(each))
        return self._conditional(x, target, sample, masks, call, each * n)

    def _channels(self, x: torch.Tensor, call: dict) -> int:
        """The number of channels of the layer (a forward pass of one sample, without gradients)."""
        from ..batching import select_batch

        one = torch.zeros(1, dtype=torch.long)
        args = select_batch(tuple(call.get("forward_args", ())), one, x.shape[0])
        kwargs = select_batch(dict(call.get("forward_kwargs") or {}), one, x.shape[0])
        return self.layer_output(x[:1], args, kwargs)[1]

    def _conditional(self, x, target, sample: torch.Tensor, masks: torch.Tensor, call: dict,
                     concepts: list) -> ConditionalHeatmapsResult:
        """One batched pass: sample ``sample[k]`` under mask row ``k``, plus one row per sample with the mask
        zeroed (the relevance bypassing the layer, removed from every heatmap). The relevance recorded at the
        layer is the one arriving there (before the mask), so each concept's share needs no pass of its own."""
        expl, rec, rows = self.conditional(x, target, sample, {self.layer: masks}, layers=[self.layer], **call)
        per_channel = rec[self.layer].per_channel()[rows.full]  # the relevance arriving at the layer, per channel
        relevance = (per_channel * masks.to(per_channel.dtype)).sum(1)
        total = per_channel.abs().sum(1).clamp_min(torch.finfo(per_channel.dtype).tiny)
        return ConditionalHeatmapsResult(rows(expl.attribution), list(concepts), sample, relevance,
                                         100 * relevance / total, expl.target[rows.full], self.layer)


class Composition(ConditionalHeatmaps):
    """The top concepts (channels) of a layer for each prediction, with their share of the relevance in % and
    their conditional heatmaps (the seed's flamingo slide: "4.3 % feather, 4.3 % red colour, 2.3 % water").

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool`.
    top : int
        Concepts per sample, ranked by their relevance ``R_c`` (largest first).
    """

    def __init__(self, model: nn.Module, layer: str, top: int = 5, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto") -> None:
        super().__init__(model, layer, method, method_settings, axis)
        check_positive(top, "top", integer=True)
        self.top = top

    def __call__(self, x: torch.Tensor, target: TargetSpec = None, **call: Any) -> ConditionalHeatmapsResult:
        """The top concepts of each sample of ``x`` (``K = N · top`` heatmaps, sample-major)."""
        x = self.check(x)
        expl, rec = self.record(x, target, keep=("relevance",), **call)
        per_channel = rec[self.layer].per_channel()
        channels = per_channel.shape[1]
        if self.top > channels:
            raise ValueError(f"top={self.top} is larger than the {channels} channels of layer {self.layer!r}")
        order = per_channel.argsort(dim=1, descending=True, stable=True)[:, :self.top]  # (N, top)
        masks = torch.zeros(x.shape[0] * self.top, channels, dtype=per_channel.dtype)
        masks[torch.arange(masks.shape[0]), order.reshape(-1)] = 1
        sample = torch.arange(x.shape[0]).repeat_interleave(self.top)
        return self._conditional(x, expl.target, sample, masks, call, order.reshape(-1).tolist())


@dataclass
class HierarchyResult(ResultExport):
    """A concept's relevance split over the channels of a lower layer.

    Attributes
    ----------
    concept : int or list
        The upper concept.
    channels : LongTensor ``(top,)``
        The lower layer's channels that carry most of the concept's relevance, largest first.
    relevance : tensor ``(top,)``
        Their relevance (conditioned on the upper concept).
    share : tensor ``(top,)``
        ``100 · R_c' / Σ |R_c'|`` over all lower channels, conditioned on the upper concept.
    heatmaps : tensor ``(top, *x.shape[1:])``
        The input heatmaps conditioned on both the upper concept and each lower channel.
    total : float
        The upper concept's relevance.
    """

    concept: Any
    channels: torch.Tensor
    relevance: torch.Tensor
    share: torch.Tensor
    heatmaps: torch.Tensor
    total: float

    def _rows(self) -> list[dict[str, Any]]:
        """One row per lower channel: its relevance and share (conditioned on the upper concept)."""
        return [{"concept": self.concept, "channel": int(c), "relevance": float(r), "share": float(p)}
                for c, r, p in zip(self.channels.tolist(), self.relevance.tolist(), self.share.tolist())]


class Hierarchy(ConceptTool):
    """Which lower concepts make up a concept: its relevance split over the channels of a lower layer.

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool`; ``layer`` is the upper layer.
    lower : str
        The lower layer (a module before ``layer`` in the forward pass).
    top : int
        Lower channels kept per concept.
    """

    def __init__(self, model: nn.Module, layer: str, lower: str, top: int = 5, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto") -> None:
        super().__init__(model, layer, method, method_settings, axis)
        self.lower = find_layer(model, lower, "lower")[0]
        check_positive(top, "top", integer=True)
        self.top = top

    def __call__(self, x: torch.Tensor, target: TargetSpec = None, concepts: Sequence | None = None,
                 **call: Any) -> list[HierarchyResult]:
        """Split each concept of ``concepts`` (default: every channel of the layer) for one sample ``x``."""
        x = self.check(x)
        if x.shape[0] != 1:
            raise ValueError(f"x must hold one sample (1, ...), got a batch of {x.shape[0]}; split one at a time")
        expl, rec = self.record(x, target, layers=[self.layer, self.lower], keep=("relevance",), **call)
        channels = rec[self.layer].per_channel().shape[1]
        lower_channels = rec[self.lower].per_channel().shape[1]
        if self.top > lower_channels:
            raise ValueError(f"top={self.top} is larger than the {lower_channels} channels of layer {self.lower!r}")
        concepts = list(range(channels)) if concepts is None else list(concepts)
        upper = self.masks(concepts, channels)
        k = len(concepts)
        target = expl.target if expl.target.min() >= 0 else None
        # pass 1: every concept at once; the lower layer's relevance that flows through each concept
        _, rec, rows = self.conditional(x, target, torch.zeros(k, dtype=torch.long), {self.layer: upper},
                                        layers=[self.layer, self.lower], **call)
        lower = rows(rec[self.lower].per_channel())  # (K, C_lower)
        totals = (rec[self.layer].per_channel()[rows.full] * upper).sum(1)  # arriving at the layer, before its mask
        order = lower.argsort(dim=1, descending=True, stable=True)[:, :self.top]  # (K, top)
        # pass 2: heatmaps of the relevance through (concept, lower channel), K · top conditions in one pass
        pick = torch.arange(k).repeat_interleave(self.top)
        lower_masks = torch.zeros(k * self.top, lower_channels)
        lower_masks[torch.arange(k * self.top), order.reshape(-1)] = 1
        expl2, _, rows2 = self.conditional(x, target, torch.zeros(k * self.top, dtype=torch.long),
                                           {self.layer: upper[pick], self.lower: lower_masks}, **call)
        heatmaps = rows2(expl2.attribution).view(k, self.top, *x.shape[1:])
        norm = lower.abs().sum(1, keepdim=True).clamp_min(torch.finfo(lower.dtype).tiny)
        picked = lower.gather(1, order)
        return [HierarchyResult(concepts[i], order[i], picked[i], 100 * picked[i] / norm[i, 0], heatmaps[i],
                             float(totals[i])) for i in range(k)]


__getattr__ = renamed(__name__, {"ConceptHeatmaps": "ConditionalHeatmapsResult", "ConceptSplit": "HierarchyResult"},
                      globals())
