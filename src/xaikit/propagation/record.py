"""Engine extension points: *record* relevance and activations at named layers, and *condition* the relevance
that flows through chosen channels of a layer (concept-conditional relevance, CRP; Achtibat et al., Nat. Mach.
Intell. 2023).

Both work with every gradient-based method, because every one of them is "input × (modified) gradient": the
relevance of a layer output ``a`` is ``R = a ⊙ g`` with ``g`` the (modified) gradient that reaches ``a`` in
the backward pass (plain autograd for :class:`~xaikit.Gradient`/:class:`~xaikit.InputXGradient`, the rules of
the propagation engine for :class:`~xaikit.LRP`). A :class:`Recorder` registers forward hooks on the named
modules for the duration of a ``with`` block only (removed in ``finally``, also when the block raises); the
hooks put tensor hooks on the layer outputs, which live on the autograd graph of that one call. The model's
parameters, buffers and modules are not changed.

Conditioning (CRP, Eq. 6-7 of the paper): the relevance at a layer is multiplied by a mask ``θ`` before it
flows on, ``R ← R ⊙ θ``. Many conditions of one sample run as one batched backward pass: repeat the sample, one
mask row per copy (:func:`condition_masks`). The mask acts on the layer output only: relevance that reaches
the input along a path that bypasses the layer (a residual shortcut, a parallel branch) is not masked, so the
input heatmap under ``θ`` is ``R(θ) = R_bypass + R_through(θ)``. Every rule of the engine is linear in the
relevance it receives, and a path crosses a layer at most once, so ``R_through`` is linear in ``θ`` and
``R_bypass = R(0)``: :func:`through_rows` adds the rows with the masks zeroed that remove the bypass by
inclusion–exclusion, ``R_through(θ) = R(θ) − R(0)`` (over several conditioned layers, the relevance that
flows through all of them). This is the concept-conditional heatmap of CRP: the relevance that flows through
the concept's channels only.

Example
-------
>>> import torch, xaikit as xk
>>> from xaikit.propagation.record import Recorder, condition_masks
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                             torch.nn.Linear(4 * 6 * 6, 2)).eval()
>>> x = torch.randn(1, 3, 8, 8)
>>> with Recorder(model, ["1"]) as rec:                      # relevance and activation at module "1"
...     expl = xk.LRP(model, composite="epsilon")(x, target=0)
>>> rec["1"].relevance.shape, rec["1"].activation.shape
(torch.Size([1, 4, 6, 6]), torch.Size([1, 4, 6, 6]))
>>> masks = condition_masks([[0], [1], [2], [3]], channels=4)   # one concept (channel) per row
>>> with Recorder(model, [], masks={"1": masks}):            # 4 conditional heatmaps in one pass
...     heatmaps = xk.LRP(model, composite="epsilon")(x.expand(4, -1, -1, -1), target=0).attribution
>>> heatmaps.shape
torch.Size([4, 3, 8, 8])

The relevance of a layer whose output is consumed only by a BatchNorm that the engine folds into it, or only
by a ReLU/ReLU6 whose relevance its rule reads (see :class:`.state.LayerState`), is that of the folded layer or of the
rectifier's output, as the rule sees it: ``R_z = R_y`` for ``y = ReLU(z)``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..layers import Hooks, find_layer, find_layers, first_tensor
from .session import Session, active_session


def find_modules(model: nn.Module, names: Sequence[str] | str, argument: str = "layers") -> dict[str, nn.Module]:
    """The modules of ``model`` called ``names`` (as in ``model.named_modules()``): :func:`xaikit.layers.find_layers`
    (an unknown name raises a ``ValueError`` naming ``argument``, the close names and the valid names)."""
    return find_layers(model, names, argument)


def channel_axis(module: nn.Module, ndim: int) -> int:
    """The channel axis of a module's output: 1 for convolutions, batch norms and pooling (``(N, C, ...)``) and
    any output of 4 or more dimensions; the last axis otherwise (dense layers, transformer hidden units)."""
    conv_like = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                 nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.GroupNorm)
    return 1 if isinstance(module, conv_like) or ndim >= 4 else ndim - 1


def condition_masks(concepts: Sequence[Sequence[int] | int], channels: int, argument: str = "concepts",
                    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """A ``(K, channels)`` 0/1 mask, row k set at the channels of concept k (an int or a list of ints).

    Raises a ``ValueError`` naming ``argument`` for a channel out of range or an empty concept list.
    """
    if isinstance(concepts, torch.Tensor):
        concepts = concepts.tolist()
    concepts = list(concepts)
    if not concepts:
        raise ValueError(f"{argument} must hold at least one concept (a channel index or a list of them)")
    mask = torch.zeros(len(concepts), channels, dtype=dtype, device=device)
    for row, concept in enumerate(concepts):
        ids = [concept] if isinstance(concept, int) else list(concept)
        for c in ids:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < channels:
                raise ValueError(f"{argument}: channel {c!r} of concept {row} is out of range; the layer has "
                                 f"{channels} channels (0 to {channels - 1})")
        mask[row, ids] = 1
    return mask


@dataclass
class Through:
    """The batch rows that give, for each condition ``k``, the relevance flowing through every conditioned layer.

    Run the explanation on ``x[sample]`` under ``masks`` (one mask row per batch row) and call the object on
    anything linear in the relevance of those rows (the input heatmaps, a recorded layer's relevance):
    ``through(value)[k] = Σ_terms sign · value[rows[k]]`` (see :func:`through_rows`).

    Attributes
    ----------
    sample : LongTensor ``(U,)``
        The explained sample of each batch row (distinct conditions only).
    masks : dict of str to tensor ``(U, ...)``
        The mask rows of each conditioned layer.
    terms : list of ``(sign, rows)``
        ``rows`` ``(K,)``: for condition ``k``, the batch row with the masks of a subset of the layers kept and
        the others zeroed; ``sign = (−1)^(number zeroed)``. The first term keeps every mask.
    """

    sample: torch.Tensor
    masks: dict[str, torch.Tensor]
    terms: list[tuple[int, torch.Tensor]]

    @property
    def full(self) -> torch.Tensor:
        """``(K,)``: the batch row of each condition with every mask applied (e.g. to read the relevance
        arriving at a conditioned layer, which its own mask does not change)."""
        return self.terms[0][1]

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        """``(K, ...)``: the part of ``value`` (``(U, ...)``, linear in the relevance of each row) that flows
        through every conditioned layer."""
        out = value[self.full]
        for sign, rows in self.terms[1:]:
            out = out.add_(value[rows], alpha=sign)
        return out


def through_rows(sample: torch.Tensor, masks: dict[str, torch.Tensor]) -> Through:
    """The rows that remove the relevance of paths bypassing the conditioned layers (CRP, Achtibat et al. 2023,
    Eq. 6-7: a concept's heatmap is the relevance flowing through its units).

    With the forward pass fixed, the input relevance is a sum over the paths of the backward graph; a path
    crosses each layer at most once (a module called twice is refused) and picks up the mask value of the unit
    it crosses. So ``R(θ_1, …, θ_m)`` is linear in each ``θ_i`` and the part flowing through every layer is the
    mixed term (Möbius inversion over the subsets ``T`` of the layers)::

        R_through(θ) = Σ_T (−1)^(m − |T|) R(θ_T, 0 elsewhere)      (m = 1: R(θ) − R(0))

    Exact for every method whose backward is linear in the relevance (the LRP rules, gradient, gradient ×
    input, excitation backprop); guided backprop and DeconvNet rectify the gradient, so no split of their
    heatmap over paths exists. Rows that coincide are run once (the zeroed rows of one sample are shared).

    Parameters
    ----------
    sample : LongTensor ``(K,)``
        The explained sample of each condition.
    masks : dict of str to tensor ``(K, ...)``
        One mask row per condition for each conditioned layer (as for :class:`Recorder`).
    """
    sample = torch.as_tensor(sample, dtype=torch.long).reshape(-1)
    k = sample.shape[0]
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.ndim < 2 or mask.shape[0] != k:
            raise ValueError(f"masks[{name!r}] must be a tensor with one row per condition ({k}), got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    flat = [mask.reshape(k, -1).to(torch.float64) for mask in masks.values()]
    keys, signs = [], []
    for kept in itertools.product((True, False), repeat=len(flat)):
        parts = [m if on else torch.zeros_like(m) for m, on in zip(flat, kept)]
        keys.append(torch.cat([sample.to(torch.float64).view(-1, 1), *parts], 1))
        signs.append((-1) ** kept.count(False))
    unique, inverse = torch.unique(torch.cat(keys), dim=0, return_inverse=True)
    inverse = inverse.view(len(keys), k)
    columns = unique[:, 1:].split([m.shape[1] for m in flat], 1)
    rows_masks = {name: col.to(mask.dtype).reshape(-1, *mask.shape[1:])
                  for (name, mask), col in zip(masks.items(), columns)}
    return Through(unique[:, 0].long(), rows_masks, [(s, inverse[i]) for i, s in enumerate(signs)])


@dataclass
class Recorded:
    """What a :class:`Recorder` saw at one layer, over the passes of its ``with`` block (rows in call order).

    Attributes
    ----------
    name : str
        The module name.
    axis : int
        The channel axis of the output (see :func:`channel_axis`).
    activations, relevances : list of tensors
        Per forward pass with gradients: the layer output (a detached copy; ``None`` when not kept) and
        ``R = a ⊙ g`` (filled by the backward pass; ``None`` where it did not reach the layer or was not kept).
    """

    name: str
    axis: int = 1
    shapes: list[torch.Size] = field(default_factory=list)
    activations: list[torch.Tensor | None] = field(default_factory=list)
    relevances: list[torch.Tensor | None] = field(default_factory=list)

    def _cat(self, parts: list, what: str) -> torch.Tensor:
        if not parts:
            raise ValueError(f"layer {self.name!r} was not called in a forward pass with gradients")
        if any(p is None for p in parts) and what == "activation":
            raise ValueError(f"the activation of layer {self.name!r} was not kept (keep=...)")
        return torch.cat(parts)

    @property
    def activation(self) -> torch.Tensor:
        """The layer outputs of all recorded passes, concatenated along the batch."""
        return self._cat(self.activations, "activation")

    @property
    def relevance(self) -> torch.Tensor:
        """``R = a ⊙ g`` at the layer output for all recorded passes, concatenated along the batch (zero for a
        pass whose backward did not reach the layer)."""
        like = next((r for r in self.relevances if r is not None), None)
        return self._cat([torch.zeros(s) if like is None else like.new_zeros(s) if r is None else r
                          for s, r in zip(self.shapes, self.relevances)], "relevance")

    def per_channel(self, which: str = "relevance") -> torch.Tensor:
        """``(N, C)``: the relevance (or activation) summed over every axis but the batch and the channels."""
        value = self.relevance if which == "relevance" else self.activation
        value = value.movedim(self.axis, -1)
        return value.reshape(value.shape[0], -1, value.shape[-1]).sum(1)


class Recorder:
    """Record ``R = a ⊙ g`` and activations at named layers, and mask the relevance flowing through them.

    Use as a context manager around any explanation call(s) of a gradient-based method; the hooks exist only
    inside the ``with`` block.

    Parameters
    ----------
    model : nn.Module
    layers : sequence of str or nn.Module
        Module names (or modules of ``model``) whose output relevance and activation are recorded; the
        records are keyed by name.
    masks : dict of str to tensor, optional
        ``{layer: θ}`` conditions (CRP): the relevance at the layer output is multiplied by ``θ`` before it
        flows on. ``θ`` is ``(K, C)`` (per channel along the layer's channel axis, see
        :func:`condition_masks`) or ``(K, *output.shape[1:])`` (per unit); row ``r`` of the ``K`` rows
        applies to the ``r``-th sample of the passes in the block, counted over all passes with gradients.
        ``θ`` may also be a function ``channels -> tensor``, called at the layer's first output (when the
        number of channels is known).
    axis : int or "auto"
        Channel axis of the layer outputs (``"auto"``: :func:`channel_axis`; e.g. ``1`` selects ViT tokens of
        an ``(N, L, D)`` output).
    keep : sequence of "relevance", "activation"
        What to keep for the recorded layers (``()`` with ``masks`` only conditions).

    Notes
    -----
    A module called more than once in one forward pass (a shared activation module) is refused: its
    relevance would be ambiguous; name a module that is called once. The relevance recorded at a conditioned
    layer is the relevance arriving there, before its own mask (the masked one is ``R ⊙ θ``). A mask does not
    touch relevance that bypasses the layer (a residual shortcut): run the rows of :func:`through_rows` for
    the relevance flowing through the layer only.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str | nn.Module] | str | nn.Module = (),
                 masks: dict[str, torch.Tensor] | None = None, axis: int | str = "auto",
                 keep: Sequence[str] = ("relevance", "activation")) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        layers = list(find_layers(model, layers, "layers"))  # names (a module of the model is named)
        masks = {find_layer(model, name, "masks")[0]: mask for name, mask in (masks or {}).items()}
        for name, mask in masks.items():
            if callable(mask) and not isinstance(mask, torch.Tensor):
                continue
            if not isinstance(mask, torch.Tensor) or mask.ndim < 2 or not mask.is_floating_point():
                raise ValueError(f"masks[{name!r}] must be a floating-point tensor (K, C) or (K, *unit_shape), "
                                 f"e.g. from condition_masks()")
        unknown = set(keep) - {"relevance", "activation"}
        if unknown:
            raise ValueError(f"keep: unknown value {sorted(unknown)[0]!r}; valid: 'relevance', 'activation'")
        if axis != "auto" and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise ValueError(f"axis must be 'auto' or an int, got {axis!r}")
        self.model = model
        self.modules = find_modules(model, [*layers, *[n for n in masks if n not in layers]],
                                    "layers" if not masks else "layers/masks")
        self.layers, self.masks, self.axis, self.keep = layers, masks, axis, tuple(keep)
        self.records = {name: Recorded(name) for name in layers}
        self.rows = {name: 0 for name in self.modules}  #: rows of grad-enabled passes seen per layer
        self._hooks = Hooks()
        self._calls: dict[str, int] = {}

    def __getitem__(self, name: str) -> Recorded:
        if name not in self.records:
            raise KeyError(f"layer {name!r} was not recorded; recorded: {', '.join(self.records) or 'none'}")
        return self.records[name]

    def __enter__(self) -> "Recorder":
        try:
            self._hooks.pre(self.model, self._new_pass)
            for name, module in self.modules.items():
                self._hooks.forward(module, self._hook(name))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (called on leaving the ``with`` block, also when it raised)."""
        self._hooks.close()

    # -- hooks -----------------------------------------------------------------------------------------
    def _new_pass(self, module: nn.Module, inputs: Any) -> None:
        self._calls.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, out: Any) -> None:
            # outside the engine's TorchFunctionMode: the hook's own operations are no uses of the layer output
            # (they would, e.g., undo a BatchNorm fold that needs the BatchNorm to be its only consumer)
            with torch._C.DisableTorchFunction():
                observe(module, out)

        def observe(module: nn.Module, out: Any) -> None:
            t = first_tensor(out)
            if t is None:
                raise TypeError(f"layer {name!r} returns {type(out).__name__} without a tensor; choose another layer")
            if not (torch.is_grad_enabled() and t.requires_grad):
                return  # a pass without backward (e.g. a no-grad forward for the outputs): nothing to record
            self._calls[name] = self._calls.get(name, 0) + 1
            if self._calls[name] > 1:
                raise ValueError(f"layers: module {name!r} is called more than once in one forward pass (a shared "
                                 "module), so its relevance is ambiguous; name a module that is called once")
            axis = channel_axis(module, t.ndim) if self.axis == "auto" else self.axis % t.ndim
            start = self.rows[name]
            self.rows[name] += t.shape[0]
            mask = self._mask_for(name, t, axis, start) if name in self.masks else None
            record = self.records.get(name)
            value = slot = None
            if record is not None:
                record.axis = axis
                copy = t.detach().clone()  # the value now: a later in-place operation may change ``t``
                record.shapes.append(t.shape)
                record.activations.append(copy if "activation" in self.keep else None)
                record.relevances.append(None)
                slot = len(record.relevances) - 1
                if "relevance" in self.keep:
                    value = _relevance_value(active_session(), t, copy)
            if mask is None and value is None:
                return

            def on_grad(g: torch.Tensor) -> torch.Tensor | None:
                if value is not None:
                    record.relevances[slot] = value(g)
                return None if mask is None else g * mask

            t.register_hook(on_grad)

        return hook

    def _mask_for(self, name: str, t: torch.Tensor, axis: int, start: int) -> torch.Tensor:
        mask = self.masks[name]
        if callable(mask) and not isinstance(mask, torch.Tensor):
            mask = self.masks[name] = mask(t.shape[axis])
        stop = start + t.shape[0]
        if stop > mask.shape[0]:
            raise ValueError(f"masks[{name!r}] has {mask.shape[0]} rows but the passes reached sample {stop}; "
                             "give one mask row per explained sample")
        rows = mask[start:stop].to(t.device, t.dtype)
        if rows.ndim == 2 and (t.ndim > 2 or axis == t.ndim - 1):
            if rows.shape[1] != t.shape[axis]:
                raise ValueError(f"masks[{name!r}] has {rows.shape[1]} channels but layer {name!r} has "
                                 f"{t.shape[axis]} along axis {axis}")
            shape = [rows.shape[0]] + [1] * (t.ndim - 1)
            shape[axis] = rows.shape[1]
            return rows.view(shape)
        if tuple(rows.shape[1:]) != tuple(t.shape[1:]):
            raise ValueError(f"masks[{name!r}] of unit shape {tuple(rows.shape[1:])} does not match the output "
                             f"{tuple(t.shape[1:])} of layer {name!r}; give (K, C) or (K, *output.shape[1:])")
        return rows


def _relevance_value(session: Session | None, out: torch.Tensor, copy: torch.Tensor):
    """``g -> R`` at the layer output ``out``: ``out ⊙ g``, or what the engine's rule reads for a layer output
    whose BatchNorm is folded into it or whose rectifier passes the gradient on unchanged, or whose plain ε
    hook has already rescaled the gradient (evaluated in the backward pass, when the forward has ended)."""
    state = key = None
    if session is not None:
        state, key = session.layers.get(id(out)), "layer"
        if state is None:
            state, key = session.fold_outputs.get(id(out)), "fold"

    def value(g: torch.Tensor) -> torch.Tensor:
        g = g.detach()
        if state is None:
            return copy * g
        if state.layer is None:  # plain ε: the engine's hook ran first and gave g·|z|/(|z| + ε)
            eps = state.extra["epsilon"]
            if not state.folded:
                return g * (copy + eps * copy.sign())
            scale, bias = state.fold  # z' = scale·(z − b) + b' (the folded output); g = scale·g'·|z'|/(|z'| + ε)
            view = (-1,) + (1,) * (copy.ndim - 2) if copy.ndim > 2 else (-1,)
            s = scale.view(view)
            z = s * (copy - (0 if state.bias is None else state.bias.detach().view(view))) + bias.view(view)
            return (g * (z + eps * z.sign()) / s).nan_to_num_(0.0, 0.0, 0.0)
        if key == "fold" and not state.folded:
            return copy * g
        rectifier = state.fused_rectifier()
        if rectifier is not None:
            return rectifier.get().detach() * g
        if state.folded:
            return state.z_fold.get().detach() * g
        return copy * g

    return value
