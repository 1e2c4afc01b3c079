"""Target specifications: which model output an explanation explains.

A target is one of

- ``None``: the arg-max of each sample's output;
- an ``int``: the same output index for every sample;
- a sequence or tensor of ints ``(N,)``: one index per sample;
- a callable ``output -> (N,)``: any scalar per sample (e.g. a margin, a next-token logit); one with a method
  ``indices(output) -> (N,)`` reports what it selects as ``expl.target`` (:class:`~xaikit.NextToken`: the
  token), others report ``-1``;
- :class:`Contrast` ``(a, b)``: explain ``output[a] - output[b]`` ("why a rather than b");
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


TargetSpec = Union[None, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor], Contrast, Value]


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
