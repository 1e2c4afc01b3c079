"""DeepLIFT (Rescale rule), DeepLIFT-SHAP and GradientSHAP (expected gradients): attributions of
``f(x) − f(reference)``, the reference being one input or a background set.

- :class:`DeepLift`: ``Δx ⊙ m`` with the Rescale multipliers ``m`` (Shrikumar, Greenside & Kundaje, ICML 2017,
  Sec. 3.5.1); see :mod:`xaikit.methods.machinery.rescale` for how the multipliers are computed.
- :class:`DeepLiftShap`: DeepLIFT averaged over the references of a background set (Lundberg & Lee, NeurIPS
  2017, Sec. 4.2, "Deep SHAP"): ``φ = (1/B) Σ_b DeepLIFT(x; b)``.
- :class:`GradientShap`: expected gradients (Erion et al., Nat. Mach. Intell. 2021, Eq. 4; Lundberg & Lee's
  GradientExplainer): ``φ = E_{b ~ background, α ~ U(0,1)} [(x − b) ⊙ ∂f(b + α(x − b))/∂x]``, a Monte-Carlo
  estimate of Integrated Gradients averaged over the background.

Every method stores the explained score at the reference in ``expl.info["base_value"]`` (for a background,
its mean over the background), so that ``attribution.sum() ≈ output_value − base_value``; the deviation is
``expl.info["convergence_delta"]`` (exact up to rounding for DeepLIFT on networks of affine layers and
element-wise non-linearities; a Monte-Carlo error for GradientSHAP).
"""
from __future__ import annotations

import torch
from torch import nn

from ..batching import check_batch_size, chunked, max_chunk, select_batch
from ..errors import check_positive
from ..explanation import Explanation
from ..targets import resolve_target
from .base import Method, register
from .gradient import backprop
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_background, resolve_baseline
from .machinery.rescale import multipliers, warn_not_rescaled
from .machinery.scoring import forward_output
from .machinery.seeding import check_seed, make_generator, resolve_seed


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (x.ndim - 1)


class _Referenced(Method):
    """What DeepLIFT and DeepLIFT-SHAP share: the pairs (sample, reference) explained in chunks of pairs."""

    eps: float

    def _explain_pairs(self, x, references, target, forward_args, forward_kwargs) -> Explanation:
        """``references`` ``(N, B, ...)``: the attribution of sample i is the mean over its B references."""
        x = x.detach()
        n, b = x.shape[0], references.shape[1]
        output = forward_output(self.model, x, forward_args, forward_kwargs)
        resolved = resolve_target(target, output)
        total = torch.zeros_like(x)
        base = torch.zeros(n, dtype=x.dtype, device=x.device)
        unknown: set[str] = set()

        def run(start: int, stop: int) -> None:
            rows = torch.arange(start, stop, device=x.device)
            owner, which = rows // b, rows % b
            owner_cpu = owner.cpu()
            ref = references[owner, which]
            got = multipliers(self.model, x[owner], ref, resolved.select(owner_cpu),
                              select_batch(forward_args, owner_cpu, n), select_batch(forward_kwargs, owner_cpu, n),
                              self.eps)
            total.index_add_(0, owner, (x[owner] - ref) * got.grad / b)
            base.index_add_(0, owner, got.base / b)
            unknown.update(got.not_rescaled)

        item_bytes = 2 * x[0].numel() * x.element_size()
        key = ("deep_lift", id(self.model), tuple(x.shape[1:]), x.dtype, str(x.device))
        chunked(run, n * b, self.batch_size, key=key, cap=max_chunk(item_bytes, x.device),
                progress=self.progress, desc=self.name)
        warn_not_rescaled(unknown, self.name)
        score = resolved.score(output)
        delta = total.flatten(1).sum(1) - (score - base)
        info = {"base_value": base, "score": score, "convergence_delta": delta, "not_rescaled": sorted(unknown)}
        return Explanation(total, resolved.index, output, self.name, info)


@register
class DeepLift(_Referenced):
    """DeepLIFT with the Rescale rule: ``φ = (x − x̄) ⊙ m``, ``m`` the Rescale multipliers of the target output
    (Shrikumar et al. 2017, Eq. 1 and Sec. 3.5.1).

    Summation-to-delta: ``Σ_i φ_i = f_t(x) − f_t(x̄)`` exactly (up to rounding) when every operation between the
    input and the output is affine in its activation (linear, convolution, average pooling, BatchNorm in eval
    mode, sums and reshapes) or an element-wise non-linearity (ReLU, sigmoid, tanh, GELU, ...). Other
    operations (max pooling, products of activations, softmax) are passed back with their gradient and named in
    a warning and in ``info["not_rescaled"]``.

    Parameters
    ----------
    model : nn.Module
    baseline : number, tensor, "zero", "mean" or "blur"
        The reference input x̄ (default ``"zero"``; see :mod:`xaikit.methods.machinery.baselines`).
    eps : float
        Where ``|Δz| ≤ eps`` the multiplier of a non-linearity is its derivative ``σ'(z)`` (the limit of
        ``Δy/Δz``).
    batch_size : int or "auto"
        Samples per pass (each pass runs the samples and their references: twice as many rows).
    progress : bool
        Show a progress bar.

    Notes
    -----
    ``info["base_value"]`` is ``f_t(x̄)``; ``info["convergence_delta"]`` is ``Σ_i φ_i − (f_t(x) − f_t(x̄))``.
    Captum's ``DeepLift`` computes the same multipliers for non-linearities that are ``nn.Module`` objects called
    once; here functional calls (``F.relu``, ``torch.tanh``) and shared modules are rescaled too (the rule is
    applied per call). Captum rescales max pooling with its own rule; here it keeps its gradient (as the paper).
    """

    def __init__(self, model: nn.Module, baseline: BaselineSpec = "zero", eps: float = 1e-10,
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_positive(eps, "eps", allow_zero=True)
        check_batch_size(batch_size)
        self.baseline, self.eps = baseline, float(eps)
        self.batch_size, self.progress = batch_size, bool(progress)

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        reference = resolve_baseline(self.baseline, x.detach())
        expl = self._explain_pairs(x, reference[:, None], target, forward_args, forward_kwargs)
        expl.info["baseline"] = describe_baseline(self.baseline)
        return expl


@register
class DeepLiftShap(_Referenced):
    """DeepLIFT-SHAP: DeepLIFT (Rescale) averaged over a background set, ``φ = (1/B) Σ_b DeepLIFT(x; b)``
    (Lundberg & Lee 2017, Sec. 4.2; Captum's ``DeepLiftShap``, shap's ``DeepExplainer``).

    Parameters
    ----------
    model : nn.Module
    background : tensor ``(B, ...)``
        Reference samples shaped like the samples of ``x`` (a few dozen to a few hundred from the training data).
    eps : float
        As in :class:`DeepLift`.
    batch_size : int or "auto"
        (Sample, reference) pairs per pass.
    progress : bool
        Show a progress bar.

    Notes
    -----
    Cost: ``N · B`` paired passes. ``info["base_value"]`` is the mean of ``f_t`` over the background, and
    ``Σ_i φ_i = f_t(x) − base_value`` where DeepLIFT's summation-to-delta holds.
    """

    def __init__(self, model: nn.Module, background: torch.Tensor, eps: float = 1e-10,
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_positive(eps, "eps", allow_zero=True)
        check_batch_size(batch_size)
        if not isinstance(background, torch.Tensor):
            raise TypeError(f"background must be a tensor of reference samples (B, ...), got "
                            f"{type(background).__name__}")
        self.background, self.eps = background, float(eps)
        self.batch_size, self.progress = batch_size, bool(progress)

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        background = resolve_background(self.background, x.detach())
        references = background.expand(x.shape[0], *background.shape[1:])
        expl = self._explain_pairs(x, references, target, forward_args, forward_kwargs)
        expl.info["background"] = background.shape[1]
        return expl


@register
class GradientShap(Method):
    """GradientSHAP / expected gradients: ``φ = E_{b, α} [(x − b) ⊙ ∇f_t(b + α (x − b))]`` with ``b`` drawn from a
    background set and ``α ~ U(0, 1)`` (Erion et al. 2021, Eq. 4; Lundberg & Lee 2017's GradientExplainer).

    Parameters
    ----------
    model : nn.Module
    background : tensor ``(B, ...)``
        Reference samples shaped like the samples of ``x``.
    samples : int
        Draws ``(b, α)`` per sample (Erion et al. use one per training step; 50-200 for a still estimate).
    noise : float
        Standard deviation of Gaussian noise added to ``x`` at each draw (Captum's ``stdevs``; default 0, as the
        papers).
    seed : int, optional
        Seed of the draws (a private generator; ``None`` draws a fresh seed, reported in ``info["seed"]``). The
        draws of sample i depend on the seed and i only, never on the batch size or the other samples.
    batch_size : int or "auto"
        Draws per backward pass.
    progress : bool
        Show a progress bar.

    Notes
    -----
    ``info["base_value"]`` is the mean of ``f_t`` over the background, ``E_b f_t(b)``; completeness
    ``Σ_i φ_i = f_t(x) − E_b f_t(b)`` holds in expectation, and ``info["convergence_delta"]`` holds the
    Monte-Carlo error of the draws (it falls as ``1/√samples``).
    """

    def __init__(self, model: nn.Module, background: torch.Tensor, samples: int = 50, noise: float = 0.0,
                 seed: int | None = None, batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_positive(samples, "samples", integer=True)
        check_positive(noise, "noise", allow_zero=True)
        check_seed(seed)
        check_batch_size(batch_size)
        if not isinstance(background, torch.Tensor):
            raise TypeError(f"background must be a tensor of reference samples (B, ...), got "
                            f"{type(background).__name__}")
        self.background, self.samples, self.noise, self.seed = background, samples, float(noise), seed
        self.batch_size, self.progress = batch_size, bool(progress)

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        x = x.detach()
        n, t = x.shape[0], self.samples
        background = resolve_background(self.background, x)[0]
        b = background.shape[0]
        seed = resolve_seed(self.seed)
        which, alpha, noise = _draws(seed, n, t, b, x, self.noise)
        which, alpha = which.to(x.device), alpha.to(x.device)
        output = forward_output(self.model, x, forward_args, forward_kwargs)
        resolved = resolve_target(target, output)
        total = torch.zeros_like(x)

        def run(start: int, stop: int) -> None:
            rows = torch.arange(start, stop, device=x.device)
            owner, draw = rows // t, rows % t
            owner_cpu = owner.cpu()
            point = x[owner] if noise is None else x[owner] + noise.to(x.device)[owner, draw]
            ref = background[which[owner, draw]]
            a = alpha[owner, draw].view(_shape(x))
            result = backprop(self.model, ref + a * (point - ref), resolved.select(owner_cpu),
                              select_batch(forward_args, owner_cpu, n), select_batch(forward_kwargs, owner_cpu, n))
            total.index_add_(0, owner, (point - ref) * result.grad / t)

        item_bytes = x[0].numel() * x.element_size()
        key = ("gradient", id(self.model), tuple(x.shape[1:]), x.dtype, str(x.device))
        chunked(run, n * t, self.batch_size, key=key, cap=max_chunk(item_bytes, x.device),
                progress=self.progress, desc=self.name)
        base = background_mean(self.model, resolved, background, forward_args, forward_kwargs, n)
        score = resolved.score(output)
        delta = total.flatten(1).sum(1) - (score - base)
        info = {"base_value": base, "score": score, "convergence_delta": delta, "samples": t, "seed": seed,
                "background": b, "noise": self.noise}
        return Explanation(total, resolved.index, output, self.name, info)


def _draws(seed: int, n: int, t: int, b: int, x: torch.Tensor, noise: float):
    """The draws of each sample from its own generator (seeded by ``seed`` and the sample's position), so that a
    sample's draws never depend on its batch mates: background indices ``(N, T)``, α ``(N, T)``, noise or None."""
    which, alpha, noises = [], [], []
    for i in range(n):  # T draws per sample, not a model call: cheap
        generator = make_generator((seed * 1_000_003 + i) % 2 ** 63)
        which.append(torch.randint(b, (t,), generator=generator))
        alpha.append(torch.rand((t,), generator=generator, dtype=torch.float64))
        if noise:
            noises.append(torch.randn((t, *x.shape[1:]), generator=generator, dtype=x.dtype) * noise)
    return (torch.stack(which), torch.stack(alpha).to(x.dtype), torch.stack(noises) if noise else None)


def background_mean(model, resolved, background: torch.Tensor, forward_args: tuple, forward_kwargs: dict,
                    n: int) -> torch.Tensor:
    """``(N,)``: the mean over the background of each sample's target score (the base value). Without extra
    model inputs the background runs once; with them, once per sample with that sample's inputs."""
    b = background.shape[0]
    owner = torch.arange(n).repeat_interleave(b)
    if not forward_args and not forward_kwargs:
        out = forward_output(model, background, (), {})
        out = out[torch.arange(b).repeat(n)]
    else:
        out = forward_output(model, background.repeat(n, *([1] * (background.ndim - 1))),
                             select_batch(forward_args, owner, n), select_batch(forward_kwargs, owner, n))
    return resolved.select(owner).score(out).view(n, b).mean(1)
