"""Target specifications: which model output an explanation explains.

A target is one of

- ``None``: the arg-max of each sample's output;
- an ``int``: the same output index for every sample;
- a sequence or tensor of ints ``(N,)``: one index per sample;
- a callable ``output -> (N,)``: any scalar per sample (e.g. a margin, a next-token logit); one with a method
  ``indices(output) -> (N,)`` reports what it selects as ``expl.target`` (:class:`~xaikit.NextToken`: the
  token), others report ``-1``;
- :class:`Contrast` ``(a, b)``: explain ``output[a] - output[b]`` ("why a rather than b");
- :class:`Region` ``(cls, mask=|box=|pixel=)``: for dense outputs ``(N, K, *spatial)`` (segmentation), the sum of
  class ``cls``'s output map over a region: a mask (or the pixels predicted as ``cls``), a box, one pixel;
- :class:`Value` ``(output)``: a regression target, the real value of output ``output`` itself (it selects like
  an index; metrics score the raw value, never a softmax over outputs);
- a *per-sample* callable target: a callable that also has ``take(rows)`` (the target of some samples,
  repeats allowed) and ``rows`` (its number of samples, ``None`` if the same for all), e.g.
  :class:`~xaikit.generation.TokenLogits`. It is split and repeated with the batch like an index target.

Outputs with more than one dimension after the batch dimension are indexed in their flattened form
(``output.flatten(1)``). The selected value itself starts the backward pass, so LRP relevance sums to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import torch

from .modes import eval_semantics


@dataclass(frozen=True)
class Contrast:
    """Contrastive target: explain ``output[a] - output[b]`` per sample.

    ``a`` and ``b`` are ints or per-sample sequences; ``a=None`` means the arg-max.
    """

    a: Any
    b: Any


@dataclass(frozen=True)
class Value:
    """Regression target: explain the real value ``output[k]`` of a regression model (one of several outputs).

    ``output`` is an int or per-sample ints (default 0, the single output of a regressor). It selects like an
    index target, so every method explains it; it tells the metrics that the explained score is a value, not a
    class logit, so they score the raw output (no softmax over the outputs).
    """

    output: Any = 0


class Region:
    """Dense-output target: explain ``Σ_{p ∈ region} output[n, cls, p]`` for outputs ``(N, K, *spatial)``.

    The region is one of (exactly one given)

    - ``mask``: a boolean (or 0/1) array over the spatial positions, ``spatial`` (the same for every sample) or
      ``(N, H, W)`` (one per sample, 2-D maps); or ``"predicted"``: the positions whose arg-max class is ``cls`` in the
      explained input's output (fixed there, not recomputed for perturbed inputs);
    - ``box``: ``(top, left, bottom, right)`` of a 2-D map (bottom/right exclusive), or ``(start, stop)`` per
      spatial dimension for other ranks, in that order of starts then stops;
    - ``pixel``: one position, an index per spatial dimension.

    Every method explains it as any scalar target (it is a callable target with a per-sample mask); LRP's
    relevance sums to the region's total. The output map of ``cls`` is weighted by the region: the explained
    value is ``(output[:, cls] * region).sum()`` (Simonyan et al. 2014's class score, summed over the region).
    """

    def __init__(self, cls: int, mask: Any = None, box: Sequence[int] | None = None,
                 pixel: Sequence[int] | None = None) -> None:
        if not isinstance(cls, int) or isinstance(cls, bool) or cls < 0:
            raise TypeError(f"Region cls must be a non-negative int (the class of the output map), got {cls!r}")
        given = [name for name, value in (("mask", mask), ("box", box), ("pixel", pixel)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"Region takes exactly one of mask=, box= or pixel=, got {given or 'none'}")
        if mask is not None and not (isinstance(mask, str) and mask == "predicted"):
            if isinstance(mask, str):
                raise ValueError(f"Region mask must be an array, a tensor or 'predicted', got {mask!r}")
            mask = torch.as_tensor(mask)
            if mask.dtype != torch.bool:
                if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError("Region mask must be binary (bool or 0/1); threshold it, e.g. mask > 0.5")
                mask = mask != 0
        for name, value in (("box", box), ("pixel", pixel)):
            if value is not None:
                value = tuple(value)
                if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                    raise ValueError(f"Region {name} must hold non-negative ints, got {value!r}")
                if name == "box" and len(value) % 2:
                    raise ValueError(f"Region box needs a start and a stop per spatial dimension, got {value!r}")
        self.cls, self.mask = cls, mask
        self.box = None if box is None else tuple(box)
        self.pixel = None if pixel is None else tuple(pixel)

    def __repr__(self) -> str:
        region = (f"mask={tuple(self.mask.shape)}" if isinstance(self.mask, torch.Tensor) else f"mask={self.mask!r}"
                  if self.mask is not None else f"box={self.box}" if self.box is not None else f"pixel={self.pixel}")
        return f"Region({self.cls}, {region})"

    @property
    def rows(self) -> int | None:
        """The number of samples of a per-sample mask ``(N, H, W)``, ``None`` when one region serves all."""
        return self.mask.shape[0] if isinstance(self.mask, torch.Tensor) and self.mask.ndim == 3 else None

    def take(self, rows: torch.Tensor) -> "Region":
        """The region of some samples (a per-sample mask follows its samples)."""
        if self.rows is None:
            return self
        return Region(self.cls, mask=self.mask[torch.as_tensor(rows).to(self.mask.device)])

    def _spatial(self, output: torch.Tensor) -> tuple[int, ...]:
        if output.ndim < 3:
            raise ValueError(f"a Region target needs a dense output (N, K, *spatial) such as a segmentation map, "
                             f"got shape {tuple(output.shape)}; for one value per class give an int target")
        if not self.cls < output.shape[1]:
            raise ValueError(f"Region cls {self.cls} is out of range for an output with {output.shape[1]} classes "
                             f"(valid: 0..{output.shape[1] - 1})")
        return tuple(output.shape[2:])

    def weights(self, output: torch.Tensor) -> torch.Tensor:
        """The region as a 0/1 tensor broadcastable to ``output[:, cls]`` (``(1 or N, *spatial)``)."""
        spatial = self._spatial(output)
        if isinstance(self.mask, str):
            return (output.argmax(1) == self.cls).to(output.dtype)
        if self.mask is not None:
            mask = self.mask.to(output.device)
            if tuple(mask.shape) == spatial:
                mask = mask[None]
            if tuple(mask.shape[1:]) != spatial or mask.shape[0] not in (1, output.shape[0]):
                raise ValueError(f"Region mask has shape {tuple(self.mask.shape)} but the output map is {spatial} "
                                 f"(output {tuple(output.shape)}); give a mask of shape {spatial} or "
                                 f"({output.shape[0]}, {', '.join(map(str, spatial))})")
            return mask.to(output.dtype)
        region = torch.zeros((1, *spatial), dtype=output.dtype, device=output.device)
        if self.pixel is not None:
            if len(self.pixel) != len(spatial) or any(p >= s for p, s in zip(self.pixel, spatial)):
                raise ValueError(f"Region pixel {self.pixel} is not a position of the output map {spatial}")
            region[(0, *self.pixel)] = 1
            return region
        starts, stops = self.box[:len(self.box) // 2], self.box[len(self.box) // 2:]
        if len(starts) == 2 and len(spatial) == 2:  # (top, left, bottom, right)
            starts, stops = (self.box[0], self.box[1]), (self.box[2], self.box[3])
        if len(starts) != len(spatial) or any(a >= b or b > s for a, b, s in zip(starts, stops, spatial)):
            raise ValueError(f"Region box {self.box} is not a non-empty box of the output map {spatial} "
                             "(top, left, bottom, right; bottom and right exclusive)")
        region[(0, *(slice(a, b) for a, b in zip(starts, stops)))] = 1
        return region

    def bind(self, output: torch.Tensor) -> "Region":
        """The region fixed at the explained input's output: ``"predicted"`` becomes that output's mask."""
        if isinstance(self.mask, str):
            self._spatial(output)
            return _Masks(self.cls, (output.argmax(1) == self.cls).detach())
        if isinstance(self.mask, torch.Tensor) and self.mask.ndim == output.ndim - 1:
            self.weights(output)  # checks the shape
            return _Masks(self.cls, self.mask.to(output.device))
        self.weights(output)
        return self

    def indices(self, output: torch.Tensor) -> torch.Tensor:
        """The class whose map is explained, per sample (reported as ``expl.target``)."""
        return torch.full((output.shape[0],), self.cls, dtype=torch.long, device=output.device)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output[:, self.cls] * self.weights(output)).flatten(1).sum(1)

    @staticmethod
    def parse(text: str, name: str = "--target") -> "Region":
        """The command line's form: ``CLS@predicted``, ``CLS@box=TOP,LEFT,BOTTOM,RIGHT``, ``CLS@pixel=ROW,COL``
        or ``CLS@mask=FILE.npy`` (a boolean array ``(H, W)`` or ``(N, H, W)``)."""
        cls, _, region = text.partition("@")
        kind, _, value = region.partition("=")
        form = "CLS@predicted, CLS@box=TOP,LEFT,BOTTOM,RIGHT, CLS@pixel=ROW,COL or CLS@mask=FILE.npy"
        try:
            number = int(cls)
            if kind == "predicted" and not value:
                return Region(number, mask="predicted")
            if kind in ("box", "pixel") and value:
                return Region(number, **{kind: tuple(int(v) for v in value.split(","))})
            if kind == "mask" and value:
                import numpy as np

                return Region(number, mask=np.load(value, allow_pickle=False))
        except (ValueError, TypeError, OSError) as err:
            raise ValueError(f"{name} {text!r}: {err}; write {form}") from None
        raise ValueError(f"{name} {text!r} is not a region target; write {form}")


class _Masks(Region):
    """A region with one mask per sample (a :class:`Region` bound to a batch): split and repeated with it."""

    def __init__(self, cls: int, mask: torch.Tensor) -> None:
        super().__init__(cls, mask=mask)

    @property
    def rows(self) -> int | None:
        return self.mask.shape[0]

    def take(self, rows: torch.Tensor) -> "Region":
        return _Masks(self.cls, self.mask[rows.to(self.mask.device)])

    def bind(self, output: torch.Tensor) -> "Region":
        self.weights(output)
        return self


TargetSpec = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor], Contrast, Value,
                   Region]


@dataclass
class ResolvedTarget:
    """A target spec bound to a batch: ``index`` (N,) into the flattened output (-1 for callables) and the
    scalar selector; ``label`` is what a callable with ``indices`` reports it selects (a token)."""

    index: torch.Tensor
    spec: TargetSpec
    contrast: torch.Tensor | None = None
    label: torch.Tensor | None = None

    @property
    def reported(self) -> torch.Tensor:
        """The target as an explanation reports it (``expl.target``): the label, else the index."""
        return self.index if self.label is None else self.label

    def score(self, output: torch.Tensor) -> torch.Tensor:
        """Per-sample scalar ``(N,)`` whose gradient starts the explanation."""
        if callable(self.spec) and not isinstance(self.spec, Contrast):
            values = self.spec(output)
            if not isinstance(values, torch.Tensor) or values.shape != (output.shape[0],):
                got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
                raise ValueError(f"callable target must return a tensor of shape ({output.shape[0]},), got {got}")
            return values
        flat = _flat(output)
        index = self.index.to(flat.device)
        if flat.shape[0] != index.shape[0]:  # a chunk of repeated samples: caller passes a matching index
            raise ValueError(f"target has {index.shape[0]} entries for an output batch of {flat.shape[0]}")
        values = flat.gather(1, index[:, None])[:, 0]
        if self.contrast is not None:
            values = values - flat.gather(1, self.contrast.to(flat.device)[:, None])[:, 0]
        return values

    def repeat_interleave(self, repeats: int) -> "ResolvedTarget":
        """The same target for a batch where every sample is repeated ``repeats`` times consecutively."""
        contrast = None if self.contrast is None else self.contrast.repeat_interleave(repeats)
        spec = self.spec
        if _per_sample(spec):
            spec = spec.take(torch.arange(self.index.shape[0]).repeat_interleave(repeats))
        elif callable(spec) and not isinstance(spec, Contrast):
            raise ValueError("callable targets cannot be repeated; evaluate them on the repeated output directly")
        label = None if self.label is None else self.label.repeat_interleave(repeats)
        return ResolvedTarget(self.index.repeat_interleave(repeats), spec, contrast, label)

    def select(self, rows: torch.Tensor | slice) -> "ResolvedTarget":
        """The target restricted to some samples of the batch."""
        contrast = None if self.contrast is None else self.contrast[rows]
        spec = self.spec
        if _per_sample(spec):
            spec = spec.take(torch.arange(self.index.shape[0])[rows.cpu() if isinstance(rows, torch.Tensor) else rows])
        return ResolvedTarget(self.index[rows], spec, contrast, None if self.label is None else self.label[rows])


def _per_sample(spec: Any) -> bool:
    """A callable target that knows its samples (``take`` and ``rows``; see the module docstring)."""
    return callable(getattr(spec, "take", None)) and hasattr(spec, "rows")


def _flat(output: torch.Tensor) -> torch.Tensor:
    return output[:, None] if output.ndim == 1 else output.flatten(1)


def _indices(spec: Any, output: torch.Tensor, name: str) -> torch.Tensor:
    n, classes = _flat(output).shape
    if spec is None:
        return _flat(output).argmax(1).detach()
    if isinstance(spec, bool):
        raise TypeError(f"{name} must be an int, a sequence of ints, a tensor, a callable or Contrast, got bool")
    if isinstance(spec, int):
        index = torch.full((n,), spec, dtype=torch.long)
    else:
        try:
            index = torch.as_tensor(spec)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be None, an int, a sequence of ints, a tensor, a callable or Contrast, "
                f"got {type(spec).__name__}"
            ) from None
        if index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {index.dtype}")
        index = index.long().reshape(-1).cpu()
        if index.numel() == 1:
            index = index.expand(n).clone()
        if index.numel() != n:
            raise ValueError(f"{name} has {index.numel()} entries but the batch has {n} samples")
    bad = (index < 0) | (index >= classes)
    if bad.any():
        raise ValueError(
            f"{name} {index[bad][0].item()} is out of range for an output with {classes} values per sample "
            f"(valid: 0..{classes - 1})"
        )
    return index.to(output.device)


def resolve_target(target: TargetSpec, output: torch.Tensor) -> ResolvedTarget:
    """Bind a target spec to a model output of shape ``(N, ...)``; a NaN or infinite target score is an error."""
    if isinstance(target, Contrast):
        a = _indices(target.a, output, "target.a")
        b = _indices(target.b, output, "target.b")
        resolved = ResolvedTarget(a, target, b)
    elif isinstance(target, Value):
        resolved = ResolvedTarget(_indices(target.output, output, "target.output"), target)
    elif callable(target) and not isinstance(target, torch.Tensor):
        if isinstance(target, Region):  # fixed at the explained input (a predicted mask, a per-sample mask)
            target = target.bind(output)
        chosen = getattr(target, "indices", None)
        index = torch.full((output.shape[0],), -1, dtype=torch.long, device=output.device)
        resolved = ResolvedTarget(index, target, label=chosen(output).long() if callable(chosen) else None)
    else:
        resolved = ResolvedTarget(_indices(target, output, "target"), target)
    _check_finite_score(resolved, output)
    return resolved


def _check_finite_score(resolved: ResolvedTarget, output: torch.Tensor) -> None:
    """Raise when the explained score is NaN or infinite: every method would explain garbage (LRP would start
    from NaN and spread it, Shapley values would all be NaN)."""
    with torch.no_grad():
        score = resolved.score(output.detach())
    bad = ~torch.isfinite(score)
    if bad.any():
        rows = bad.nonzero()[:, 0].tolist()
        raise ValueError(
            f"the model's output to explain is {score[bad][0].item()} for sample(s) {rows[:10]}: there is nothing "
            "meaningful to explain; check the model (e.g. a division by zero or log of 0) and its input"
        )


def _slice_spec(spec: Any, start: int, stop: int, batch: int) -> Any:
    if _per_sample(spec):
        return spec.take(torch.arange(start, stop)) if spec.rows == batch else spec
    if spec is None or isinstance(spec, (int, bool)) or (callable(spec) and not isinstance(spec, torch.Tensor)):
        return spec
    values = torch.as_tensor(spec).reshape(-1)
    return values if values.numel() == 1 else values[start:stop] if values.numel() == batch else values


def slice_target(target: TargetSpec, start: int, stop: int, batch: int) -> TargetSpec:
    """The part of a per-sample target spec that belongs to samples ``start:stop`` of a batch of ``batch``."""
    if isinstance(target, Contrast):
        return Contrast(_slice_spec(target.a, start, stop, batch), _slice_spec(target.b, start, stop, batch))
    if isinstance(target, Value):
        return Value(_slice_spec(target.output, start, stop, batch))
    return _slice_spec(target, start, stop, batch)


def check_target(target: TargetSpec, batch: int) -> None:
    """Reject per-sample target specs whose length is neither 1 nor the batch size (before any chunking)."""
    specs = (("target.a", target.a), ("target.b", target.b)) if isinstance(target, Contrast) else \
        (("target.output", target.output),) if isinstance(target, Value) else (("target", target),)
    for name, spec in specs:
        if _per_sample(spec) and spec.rows not in (None, batch):
            raise ValueError(f"{name} has {spec.rows} rows but the batch has {batch} samples")
        if spec is None or isinstance(spec, (int, bool)) or (callable(spec) and not isinstance(spec, torch.Tensor)):
            continue
        try:
            count = torch.as_tensor(spec).numel()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be None, an int, a sequence of ints, a tensor, a callable or Contrast, "
                f"got {type(spec).__name__}"
            ) from None
        if count not in (1, batch):
            raise ValueError(f"{name} has {count} entries but the batch has {batch} samples")


def labels_or_prediction(model: Callable, x: torch.Tensor, y: Any, what: str = "samples") -> torch.Tensor:
    """``(N,)`` class labels of ``x``: ``y`` (one per sample, or one for all) or, for ``y=None``, the model's
    prediction in eval semantics (the arg-max of ``(N, C)`` scores; a single score's sign; a model in training mode
    is neither random nor has its BatchNorm statistics moved). ``what`` names the samples in the error."""
    if y is None:
        with torch.no_grad(), eval_semantics(model, warn=False):
            out = model(x)
        return out.argmax(1) if out.ndim == 2 and out.shape[1] > 1 else (out.reshape(-1) > 0).long()
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if y.numel() == 1:
        y = y.expand(x.shape[0])
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} {what}; give one per sample or one for all")
    return y
