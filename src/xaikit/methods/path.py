"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017): path integral of gradients from a baseline."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..batching import check_batch_size, chunked, max_chunk, select_batch
from ..errors import check_choice, check_positive
from ..explanation import Explanation
from ..targets import resolve_target
from .base import Method, register
from .gradient import backprop
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from .machinery.scoring import forward_output

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes α_k in [0, 1] and weights w_k with ``∫_0^1 g(α) dα ≈ Σ_k w_k g(α_k)`` (float64)."""
    check_choice(rule, "rule", RULES)
    k = torch.arange(steps, dtype=torch.float64)
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (torch.from_numpy(nodes) + 1) / 2, torch.from_numpy(weights) / 2
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("rule 'riemann_trapezoid' needs steps >= 2")
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (steps - 1), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (k + offset) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


@register
class IntegratedGradients(Method):
    """Integrated Gradients: ``IG_i = (x_i - b_i) ∫_0^1 ∂f(b + α(x - b))/∂x_i dα`` (Sundararajan et al. 2017, Eq. 1).

    Parameters
    ----------
    model : nn.Module
    steps : int
        Number of points on the straight path (the paper suggests 20-300).
    rule : str
        Quadrature of the path integral: ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
        ``"riemann_trapezoid"`` or ``"gauss_legendre"`` (default; exact for polynomials of degree
        ``2 * steps - 1`` along the path).
    baseline : number, tensor, "zero", "mean" or "blur"
        The reference input b (default ``"zero"``; see :mod:`xaikit.methods.machinery.baselines`).
    batch_size : int or "auto"
        Interpolated inputs per forward/backward pass; ``"auto"`` times chunk sizes and keeps the fastest.
    progress : bool
        Show a progress bar.

    Notes
    -----
    Cost: ``N * steps`` forward+backward passes plus ``2 N`` forward passes for ``f(x)`` and ``f(b)``.
    Completeness (Prop. 1 of the paper): ``Σ_i IG_i = f(x) - f(b)``; the quadrature error is reported per
    sample as ``expl.info["convergence_delta"] = Σ_i IG_i - (f(x) - f(b))``.
    """

    token_mode = "embedding"  # token ids: the path runs between embedding vectors

    def __init__(self, model: nn.Module, steps: int = 32, rule: str = "gauss_legendre",
                 baseline: BaselineSpec = "zero", batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_positive(steps, "steps", integer=True)
        check_batch_size(batch_size)
        self.nodes, self.weights = quadrature(rule, steps)
        self.steps, self.rule, self.baseline = steps, rule, baseline
        self.batch_size, self.progress = batch_size, bool(progress)

    @property
    def name(self) -> str:
        return f"IntegratedGradients({self.rule}, {self.steps})"

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        x = x.detach()
        n, steps = x.shape[0], self.steps
        baseline = resolve_baseline(self.baseline, x)
        both = torch.arange(2 * n) % n  # f(x) and f(b) in one forward pass
        ends = forward_output(self.model, torch.cat([x, baseline]), select_batch(forward_args, both, n),
                              select_batch(forward_kwargs, both, n))
        output, base_output = ends[:n], ends[n:]
        resolved = resolve_target(target, output)
        alphas = self.nodes.to(x.device, x.dtype)
        weights = self.weights.to(x.device, x.dtype)
        total = torch.zeros_like(x)  # Σ_k w_k ∂f/∂x at α_k, per sample

        def run(start: int, stop: int) -> None:
            rows = torch.arange(start, stop, device=x.device)
            owner, step = rows // steps, rows % steps
            shape = (-1,) + (1,) * (x.ndim - 1)
            points = torch.lerp(baseline[owner], x[owner], alphas[step].view(shape))
            owner_cpu = owner.cpu()
            result = backprop(
                self.model, points, resolved.select(owner_cpu),
                select_batch(forward_args, owner_cpu, n), select_batch(forward_kwargs, owner_cpu, n),
            )
            total.index_add_(0, owner, result.grad * weights[step].view(shape))

        item_bytes = x[0].numel() * x.element_size()
        key = ("gradient", id(self.model), tuple(x.shape[1:]), x.dtype, str(x.device))
        chunked(run, n * steps, self.batch_size, key=key, cap=max_chunk(item_bytes, x.device),
                progress=self.progress, desc=self.name)
        attribution = (x - baseline) * total
        base_score = resolved.score(base_output)
        score = resolved.score(output)
        delta = attribution.flatten(1).sum(1) - (score - base_score)
        info = {"convergence_delta": delta, "score": score, "baseline_score": base_score, "base_value": base_score,
                "steps": steps, "rule": self.rule, "baseline": describe_baseline(self.baseline)}
        return Explanation(attribution, resolved.index, output, self.name, info)
