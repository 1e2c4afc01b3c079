"""Reference samples of channels: relevance and activation maximisation over a data set (Achtibat et al., Nat.
Mach. Intell. 2023, §"Relevance maximization"; activation maximisation over data, Erhan et al. 2009).

One streamed pass over a data set (a DataLoader or any iterable of ``(x, y)`` batches) explains every batch
once, records the layer's activation and relevance, and keeps, per channel, the ``n`` samples with the
largest activation (maximum over the channel's units) and the ``n`` samples with the largest relevance (sum
over its units, for the sample's label or prediction). Only ``(C, n)`` values, sample indices and targets are
kept. With ``cache=`` a directory, the state is written after every ``save_every`` batches (atomically); a run
that was interrupted resumes from it, and gives exactly the same references as an uninterrupted one (the
merge of top-n lists is exact, ties go to the earlier sample). The data must come in the same order.

For a reference sample, :meth:`ReferenceSamples.crops` cuts out the input region the channel looks at: from
the channel's conditional heatmap (CRP) or from its receptive field (the input support of the gradient of the
channel's strongest unit).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Data
from ..deprecation import renamed
from ..errors import check_choice, check_positive
from ..fingerprint import fingerprint
from ..layers import capture, find_layer
from ..methods.base import Method
from ..methods.resolve import DEFAULT_METHODS, passed_on
from ..modes import eval_semantics
from ..propagation.record import channel_axis
from ..results import ResultExport
from .base import ConceptTool, iterate_batches


@dataclass
class ReferenceSamplesResult(ResultExport):
    """The top-``n`` samples per channel of a layer.

    Attributes
    ----------
    ids, values, targets : dict of str to tensor ``(C, n)``
        For ``"activation"`` and ``"relevance"``: the data-set index (position in the stream) of the
        reference samples, largest first, their value, and the explained target (``-1`` for padding where
        fewer than ``n`` samples were seen).
    layer : str
    seen : int
        Samples processed.
    """

    ids: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    layer: str
    seen: int

    @property
    def channels(self) -> int:
        return self.ids["relevance"].shape[0]

    def of(self, channel: int, by: str = "relevance") -> torch.Tensor:
        """The sample indices of a channel's references (valid ones only)."""
        check_choice(by, "by", ("relevance", "activation"))
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < self.channels:
            raise ValueError(f"channel {channel!r} is out of range; the layer has {self.channels} channels")
        ids = self.ids[by][channel]
        return ids[ids >= 0]

    def _rows(self) -> list[dict[str, Any]]:
        """One row per (channel, kind, rank) of a valid reference: the sample index, its value and target."""
        rows = []
        for by in ("activation", "relevance"):
            ids, values, targets = self.ids[by], self.values[by], self.targets[by]
            for c, r in (ids >= 0).nonzero().tolist():
                rows.append({"channel": c, "by": by, "rank": r, "sample": int(ids[c, r]),
                             "value": float(values[c, r]), "target": int(targets[c, r])})
        return rows


#: the format of the cached state (2: keyed on xaikit.fingerprint: weights, settings, every batch's data)
CACHE_VERSION = 2


class _OtherData(Exception):
    """The data of a cached pass is not the data given now (found after batches were skipped)."""


def _merge(values: torch.Tensor, ids: torch.Tensor, targets: torch.Tensor, new_values: torch.Tensor,
           new_ids: torch.Tensor, new_targets: torch.Tensor, n: int):
    """Top-``n`` per row of the union of the kept (earlier samples) and new columns; ties keep the earlier."""
    all_values = torch.cat([values, new_values], 1)
    all_ids = torch.cat([ids, new_ids], 1)
    all_targets = torch.cat([targets, new_targets], 1)
    order = all_values.argsort(dim=1, descending=True, stable=True)[:, :n]
    return all_values.gather(1, order), all_ids.gather(1, order), all_targets.gather(1, order)


class ReferenceSamples(ConceptTool):
    """The top-``n`` reference samples of every channel of a layer, by activation and by relevance.

    Parameters
    ----------
    model, layer, method, method_settings, axis
        See :class:`~xaikit.concepts.base.ConceptTool`.
    n : int
        Reference samples kept per channel.
    target : "label" or "prediction"
        The output explained for the relevance: the sample's label (data gives ``(x, y)``) or the prediction.
    cache : str or Path, optional
        Directory for the resumable state (``references.pt``). It keys on the model's weights and buffers, the
        settings (layer, ``n``, target, axis, the method and its settings) and the fingerprint of every batch
        (:mod:`xaikit.fingerprint`): a state written for anything else is rebuilt, with a warning.
    save_every : int
        Batches between writes of the state.
    progress : bool
        Show a progress bar.

    Notes
    -----
    A method given by name explains each data batch as one chunk (up to the memory budget), so that a resumed
    run computes exactly what an uninterrupted one does.

    Examples
    --------
    >>> refs = xk.concepts.ReferenceSamples(model, layer="features.9", n=8, cache="refs/")(loader)  # doctest: +SKIP
    >>> refs.of(3, by="relevance")                                                                 # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, layer: str, n: int = 8, method: str | Method | None = None,
                 method_settings: dict | None = None, axis: int | str = "auto", target: str = "label",
                 cache: str | os.PathLike | None = None, save_every: int = 1, progress: bool = True) -> None:
        # each data batch as one chunk (up to the memory budget): the same chunks in a resumed run, so the values
        # agree bit for bit (the auto chunk size may differ between runs)
        method_settings = passed_on(method, method_settings, DEFAULT_METHODS["image"], batch_size=1 << 30)
        super().__init__(model, layer, method, method_settings, axis)
        check_positive(n, "n", integer=True)
        check_positive(save_every, "save_every", integer=True)
        check_choice(target, "target", ("label", "prediction"))
        self.n, self.target, self.save_every, self.progress = n, target, save_every, progress
        self.cache = None if cache is None else Path(cache)

    # -- the pass over the data --------------------------------------------------------------------------
    def _key(self) -> dict:
        """What the references depend on besides the data: the model's weights and buffers, and the settings
        (:func:`xaikit.fingerprint.fingerprint`; the method object with its settings, the model counted once)."""
        settings = {"layer": self.layer, "n": self.n, "target": self.target, "axis": self.axis}
        return {"version": CACHE_VERSION, "settings": settings, "method": self.method.name,
                "fingerprint": fingerprint(self.model, settings, self.method)}

    def _load(self, key: dict) -> dict | None:
        """The cached state when it was written for ``key`` (else ``None``, with a warning that it is rebuilt)."""
        if self.cache is None or not (self.cache / "references.pt").exists():
            return None
        state = torch.load(self.cache / "references.pt", weights_only=True)
        old = state.get("key")
        if old != key:
            if not isinstance(old, dict):
                why = "an earlier version of xaikit (no fingerprint)"
            elif (old.get("settings"), old.get("method")) != (key["settings"], key["method"]):
                why = f"other settings ({old.get('settings')}, {old.get('method')})"
            else:
                why = "other model weights or buffers, or other method settings"
            self._stale(why)
            return None
        return state

    def _stale(self, why: str) -> None:
        warnings.warn(f"cache {str(self.cache)!r} holds references computed for {why}; rebuilding it", UserWarning,
                      stacklevel=4)

    def _save(self, state: dict) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self.cache / "references.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.cache / "references.pt")

    def __call__(self, data: Any) -> ReferenceSamplesResult:
        """One pass over ``data`` (resumed from the cache where it was written for this model, these settings
        and the same data: the fingerprint of every batch already processed is compared as it comes again)."""
        key = self._key() if self.cache is not None else None  # no cache: nothing to hash
        try:
            state = self._pass(data, key, self._load(key))
        except _OtherData as stale:
            if iter(data) is data:  # an iterator is read only once
                raise ValueError(f"cache {str(self.cache)!r} holds references of other data ({stale}); the data is "
                                 "an iterator that cannot be read again: delete the cache or use another directory"
                                 ) from None
            self._stale(f"other data ({stale})")
            state = self._pass(data, key, None)
        keep = state["keep"]
        return ReferenceSamplesResult({k: keep[k][1] for k in ("activation", "relevance")},
                          {k: keep[k][0] for k in ("activation", "relevance")},
                          {k: keep[k][2] for k in ("activation", "relevance")}, self.layer, state["seen"])

    def _pass(self, data: Any, key: dict, state: dict | None) -> dict:
        """The pass, from ``state`` (a cached one, or ``None``); raises :class:`_OtherData` where a batch that
        the cached state holds is not the batch the data gives now (or the data ends before them)."""
        from ..progress import Progress

        fresh = {"key": key, "batches": 0, "seen": 0, "keep": None, "data": []}
        state = state or fresh
        done_batches = state["batches"]
        bar = Progress(None, f"references {self.layer}", "sample", enabled=self.progress)
        batch_index = -1
        try:
            for batch_index, (x, y) in enumerate(iterate_batches(data)):
                digest = fingerprint(x, y) if self.cache is not None else None
                if batch_index < done_batches:  # processed before (an interrupted or finished run): the same batch?
                    if digest == state["data"][batch_index]:
                        continue
                    if batch_index > 0:
                        raise _OtherData(f"batch {batch_index} differs")
                    self._stale("other data (the first batch differs)")  # nothing skipped yet: start afresh here
                    state, done_batches = fresh, 0
                x = self.check(x)
                if self.target == "label" and y is None:
                    raise ValueError("data must give labels (x, y) for target='label'; or pass target='prediction'")
                expl, rec = self.record(x, y.tolist() if self.target == "label" else None)
                recorded = rec[self.layer]
                activation = _per_channel(recorded.activation, recorded.axis, "max")
                relevance = _per_channel(recorded.relevance, recorded.axis, "sum")
                state["keep"] = self._update(state["keep"], activation, relevance, expl.target, state["seen"])
                state["seen"] += x.shape[0]
                state["batches"] = batch_index + 1
                state["data"].append(digest)
                bar.update(x.shape[0])
                if self.cache is not None and state["batches"] % self.save_every == 0:
                    self._save(state)
        finally:
            bar.close()
        if batch_index + 1 < done_batches:
            raise _OtherData(f"{batch_index + 1} batches, not {done_batches}")
        if state["keep"] is None:
            raise ValueError("data is empty: no batch to find reference samples in")
        if self.cache is not None:
            self._save(state)
        return state

    def _update(self, keep: dict | None, activation: torch.Tensor, relevance: torch.Tensor, target: torch.Tensor,
                offset: int) -> dict:
        channels, batch = activation.shape[1], activation.shape[0]
        ids = torch.arange(offset, offset + batch).expand(channels, -1)
        targets = target.view(1, -1).expand(channels, -1).cpu()
        if keep is None:
            empty = lambda dtype, fill: torch.full((channels, 0), fill, dtype=dtype)  # noqa: E731
            keep = {k: (empty(activation.dtype, 0), empty(torch.long, -1), empty(torch.long, -1))
                    for k in ("activation", "relevance")}
        for key, value in (("activation", activation), ("relevance", relevance)):
            keep[key] = _merge(*keep[key], value.t().detach().cpu(), ids, targets, self.n)
        return keep

    # -- crops ---------------------------------------------------------------------------------------------
    def crops(self, data: Any, refs: ReferenceSamplesResult, channel: int, by: str = "relevance", mode: str = "heatmap",
              size: int = 64, threshold: float = 0.3, margin: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """The input regions of a channel's reference samples, resized to ``size`` × ``size``.

        Parameters
        ----------
        data : any form of :class:`xaikit.data.Data` with random access (a tensor, ``(x, y)``, a Dataset, a
            DataLoader over one, a folder)
            The data set of the pass (indexed by the reference's position in the stream).
        mode : "heatmap" or "receptive_field"
            Crop the box of the channel's conditional heatmap where it exceeds ``threshold`` × its maximum
            (positive relevance), or the receptive field of the channel's strongest unit (the input support of
            its gradient).

        Returns ``(crops (n, C_in, size, size), heatmaps (n, *x.shape[1:]))``; for images only.
        """
        check_choice(mode, "mode", ("heatmap", "receptive_field"))
        ids = refs.of(channel, by)
        if ids.numel() == 0:
            raise ValueError(f"channel {channel} has no reference samples")
        x = Data(data, name="data").samples(ids)
        if x.ndim != 4:
            raise ValueError(f"crops are for images (N, C, H, W); got samples of shape {tuple(x.shape[1:])}")
        targets = refs.targets[by][channel][: ids.numel()]
        masks = self.masks([channel] * ids.numel(), refs.channels, "channel")
        expl, _, rows = self.conditional(x, targets, torch.arange(ids.numel()), {self.layer: masks})
        heatmaps = rows(expl.attribution)
        if mode == "heatmap":
            region = heatmaps.sum(1).clamp(min=0)
            peak = region.flatten(1).amax(1).clamp_min(torch.finfo(region.dtype).tiny).view(-1, 1, 1)
            support = region >= threshold * peak
        else:
            support = self._receptive_field(x, channel)
        return _crop(x, support, size, margin), heatmaps

    def _receptive_field(self, x: torch.Tensor, channel: int) -> torch.Tensor:
        """``(n, H, W)`` bool: where the gradient of the channel's largest unit w.r.t. the input is non-zero."""
        _, module = find_layer(self.model, self.layer)
        leaf = x.detach().requires_grad_(True)
        with torch.enable_grad(), eval_semantics(self.model), capture(self.model, module) as captured:
            self.model(leaf)
        out = captured[-1]
        axis = channel_axis(module, out.ndim) if self.axis == "auto" else self.axis % out.ndim
        units = out.movedim(axis, 1)[:, channel].reshape(x.shape[0], -1)
        best = units.argmax(1)
        (grad,) = torch.autograd.grad(units.gather(1, best[:, None]).sum(), leaf)
        return grad.abs().sum(1) > 0


def _per_channel(value: torch.Tensor, axis: int, how: str) -> torch.Tensor:
    v = value.movedim(axis, -1)
    v = v.reshape(v.shape[0], -1, v.shape[-1])
    return v.amax(1) if how == "max" else v.sum(1)


def _crop(x: torch.Tensor, support: torch.Tensor, size: int, margin: int) -> torch.Tensor:
    """Crop each image to the bounding box of its support (whole image where empty), resized to size²."""
    out = []
    h, w = x.shape[-2:]
    for image, s in zip(x, support):
        rows, cols = s.any(1).nonzero(), s.any(0).nonzero()
        if rows.numel() == 0:
            top, bottom, left, right = 0, h, 0, w
        else:
            top, bottom = max(0, int(rows.min()) - margin), min(h, int(rows.max()) + 1 + margin)
            left, right = max(0, int(cols.min()) - margin), min(w, int(cols.max()) + 1 + margin)
        patch = image[:, top:bottom, left:right]
        out.append(F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


__getattr__ = renamed(__name__, {"References": "ReferenceSamplesResult"}, globals())
