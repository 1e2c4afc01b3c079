"""Gradient methods and the backward pass they share with the propagation engine.

- :class:`Gradient`: the sensitivity map ``∂f_t/∂x`` (Simonyan et al. 2014).
- :class:`InputXGradient`: ``x ⊙ ∂f_t/∂x`` (Shrikumar et al. 2016); on a ReLU network without biases this
  equals LRP-0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..batching import check_batch_size, chunked, max_chunk, select_batch
from ..explanation import Explanation
from ..propagation.remat import check_context, check_remat, long_context_kwargs, rematerialised, use_remat
from ..propagation.state import differentiable
from ..targets import ResolvedTarget, TargetSpec, resolve_target, slice_target
from ..tokens import TokenInput, model_scores
from .base import Method, register


@dataclass
class Backprop:
    """Result of one explained forward/backward pass."""

    grad: torch.Tensor  #: d score / d x
    output: torch.Tensor  #: detached model output
    target: ResolvedTarget
    score: torch.Tensor  #: detached (N,) selected output values (the starting relevance)
    extra: dict = field(default_factory=dict)  #: method-specific results of the pass


def backprop(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetSpec | ResolvedTarget,
    forward_args: tuple = (),
    forward_kwargs: dict[str, Any] | None = None,
    forward: Callable[..., torch.Tensor] | None = None,
    allow_unused: bool = False,
) -> Backprop:
    """Forward ``x`` through ``model`` (or ``forward``), select the target and return the gradient w.r.t. ``x``.

    Only the gradient of ``x`` is computed (``torch.autograd.grad``): the model's ``.grad`` fields are untouched.
    Inside :func:`~xaikit.propagation.state.differentiable_pass` the gradient keeps its graph
    (``create_graph=True``), also back through ``x`` when ``x`` has one.
    ``allow_unused`` returns a zero gradient where the output does not reach ``x`` through the graph (LRP
    first-layer rules write their relevance outside the gradient).
    """
    forward = forward or model
    create_graph = differentiable()  # training mode: the gradient keeps its graph (and x's, if it has one)
    x_leaf = x.view_as(x) if create_graph and x.requires_grad else x.detach().requires_grad_(True)
    with torch.enable_grad():
        output = model_scores(forward(x_leaf, *forward_args, **(forward_kwargs or {})))
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"the model returned {type(output).__name__}; wrap it so that it returns a tensor of scores "
                "(e.g. lambda x: model(x).logits)"
            )
        check_rows(output, x_leaf)
        resolved = target if isinstance(target, ResolvedTarget) else resolve_target(target, output)
        score = resolved.score(output)
        if not score.requires_grad:
            raise ValueError(
                "the model output does not depend differentiably on x (is there torch.no_grad, .detach() or an "
                "integer cast inside forward?); gradient methods need a differentiable model"
            )
        (grad,) = torch.autograd.grad(score.sum(), x_leaf, allow_unused=True, create_graph=create_graph)
    if grad is None and allow_unused:
        grad = torch.zeros_like(x)
    elif grad is None:
        raise ValueError("the selected output does not depend on x; check which input the model uses")
    return Backprop(grad, output.detach(), resolved, score.detach())


def check_rows(output: torch.Tensor, x: torch.Tensor) -> None:
    """Raise unless the model output has one row per input sample (its first dimension is ``x``'s).

    Attribution methods explain one output value per sample (the target) by that sample's input, and LRP's
    conservation report compares the relevance of each sample with its own start value. An output whose batch
    differs from the input's (a time-major model returning ``(L, N, ...)``, outputs flattened over positions,
    a pooling over the batch) has no such pairing, so it is refused rather than guessed.
    """
    if output.ndim == 0 or output.shape[0] != x.shape[0]:
        shape = tuple(output.shape)
        raise ValueError(
            f"the model returned an output of shape {shape} for a batch of {x.shape[0]} input sample(s) (x of shape "
            f"{tuple(x.shape)}); attribution methods and LRP's conservation report need one output row per input "
            f"sample, shape ({x.shape[0]}, ...): make the model return its batch first (e.g. transpose a time-major "
            "output, or reshape flattened rows back to (batch, ...))"
        )


def chunk_key(method: Method, x: torch.Tensor) -> tuple:
    """Cache key for the auto chunk size of a method on a model and per-sample input shape."""
    return (type(method).__name__, id(method.model), tuple(x.shape[1:]), x.dtype, str(x.device))


def map_samples(
    method: Method,
    x: torch.Tensor,
    target: TargetSpec,
    forward_args: tuple,
    forward_kwargs: dict,
    batch_size: int | str,
    explain_chunk: Callable[[torch.Tensor, TargetSpec, tuple, dict], tuple[torch.Tensor, Backprop]],
    cost_per_sample: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[Backprop]]:
    """Run ``explain_chunk`` over chunks of the batch.

    Returns (attribution, output, target index, score, the per-chunk :class:`Backprop` results).

    ``explain_chunk(x_chunk, target_chunk, args_chunk, kwargs_chunk) -> (attribution, Backprop)``.
    ``cost_per_sample`` (e.g. IG steps) scales the memory estimate.
    """
    n = x.shape[0]
    if differentiable():  # training mode: one pass over the batch (no chunk-size exploration)
        batch_size = n

    def run(start: int, stop: int):
        rows = torch.arange(start, stop)
        return explain_chunk(
            x[start:stop], slice_target(target, start, stop, n),
            select_batch(forward_args, rows, n), select_batch(forward_kwargs, rows, n),
        )

    item_bytes = x[0].numel() * x.element_size() * cost_per_sample
    parts = chunked(run, n, batch_size, key=chunk_key(method, x), cap=max_chunk(item_bytes, x.device),
                    progress=getattr(method, "progress", False), desc=method.name)
    attribution = torch.cat([a for a, _ in parts])
    output = torch.cat([b.output for _, b in parts])
    index = torch.cat([b.target.reported for _, b in parts])
    score = torch.cat([b.score for _, b in parts])
    return attribution, output, index, score, [b for _, b in parts]


@register
class Gradient(Method):
    """Sensitivity map: the gradient of the target output w.r.t. the input (Simonyan et al. 2014).

    Parameters
    ----------
    model : nn.Module
    batch_size : int or "auto"
        Samples per backward pass.
    absolute : bool
        Return ``|∂f/∂x|`` as in the original saliency map (default ``False``: signed gradient).
    embedding : str, nn.Module or None
        For integer token ids ``(N, L)``: the input embedding to explain at (found automatically by default,
        see :mod:`xaikit.tokens`). The attribution is then one value per token: the L2 norm of the gradient
        w.r.t. the token's embedding vector (``Gradient``) or ``Σ_d e_d ∂f/∂e_d`` (``InputXGradient``).
    progress : bool
        Show a progress bar over the chunks of the batch.
    remat : bool or "auto"
        Rematerialise the model's repeated blocks (a decoder's layers) in the backward pass, as
        :class:`~xaikit.LRP` does (``"auto"``, default: token ids of at least 1,024 tokens; see
        :mod:`xaikit.propagation.remat`), so that both run with the same memory layout.
        ``expl.info["remat"]`` says whether it ran.
    """

    token_reduction = "norm"
    multiply_by_input: bool = False
    allow_integer_input = True
    differentiable = True

    def __init__(self, model: nn.Module, batch_size: int | str = "auto", absolute: bool = False,
                 embedding: str | nn.Module | None = None, progress: bool = False,
                 remat: bool | str = "auto") -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        check_remat(remat)
        self.remat, self.rematerialising = remat, False
        self.batch_size, self.progress = batch_size, bool(progress)
        self.absolute = absolute
        self.tokens = TokenInput(model, embedding)

    def _chunk(self, x, target, args, kwargs):
        with rematerialised(self.model, self.rematerialising):
            return self._plain_chunk(x, target, args, kwargs)

    def _plain_chunk(self, x, target, args, kwargs):
        if x.is_floating_point():
            result = backprop(self.model, x, target, args, kwargs)
            attribution = result.grad * x if self.multiply_by_input else result.grad
        else:  # token ids: explained at the embedding vectors
            vectors = self.tokens.embed(x)
            result = backprop(self.model, vectors, target, args, kwargs, forward=self.tokens.forward(x))
            if self.multiply_by_input:
                attribution = (result.grad * vectors).sum(-1)
            else:
                attribution = result.grad.norm(dim=-1)
        return (attribution.abs() if self.absolute else attribution), result

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        cost = 1
        if not x.is_floating_point():
            self.tokens.check(x, forward_kwargs)
            check_context(self.model, x)
            cost = self.tokens.dim()
        self.rematerialising = use_remat(self.remat, self.model, x)
        if self.rematerialising:
            target, forward_kwargs = long_context_kwargs(self.model, target, x.shape[-1], forward_kwargs)
        attribution, output, index, score, _ = map_samples(
            self, x, target, forward_args, forward_kwargs, self.batch_size, self._chunk, cost
        )
        return Explanation(attribution, index, output, self.name, {"score": score, "remat": self.rematerialising})


@register
class InputXGradient(Gradient):
    """Gradient × input, ``x ⊙ ∂f/∂x`` (Shrikumar et al. 2016). Equals LRP-0 on bias-free ReLU networks."""

    token_reduction = "sum"
    multiply_by_input = True
