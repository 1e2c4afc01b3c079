"""A small neural surrogate of a coalition game, used as a control variate by the Shapley estimators.

Shapley values are linear in the game, so for any function ``g`` of coalitions

    φ(v) = φ(g) + φ(v - g).

If ``φ(g)`` can be computed (almost) exactly and ``g`` follows ``v`` closely, a sampling estimator ``φ̂``
applied to the residual ``v - g`` instead of ``v`` has a much smaller error: its error is the error of ``φ̂``
on a game of small spread. This is regression-adjusted Monte Carlo (Witter, Liu & Musco, NeurIPS 2025, who
fit gradient-boosted trees); here ``g`` is a one-hidden-layer tanh network of the coalition vector, the
function class of the games that neural networks make when features are switched off, fitted to the very
evaluations the estimator already made (no extra model evaluation). Written as a correction of the plain
estimate, the estimate is

    φ̂_adjusted = φ̂(v) + φ(g) - φ̂(g),

so only the part of ``g`` that the plain estimator gets wrong (on the same coalitions) is added.

Choices, each measured on scikit-learn's wine and breast-cancer games (median error over 20 rows × 3 seeds,
``benchmarks/results/shapley.md``; the alternatives tried are listed there):

- inputs ``a_j (2 z_j - 1)`` with ``a_j`` the square root of the size of feature j's change (the size: root
  of the summed squared difference between the sample and the baseline over its elements), scaled to root
  mean square 1 over the features: with the penalties below, a prior that features which change more matter
  more (10-20 % lower error at 128-256 evaluations than equal scales);
- 12 hidden units; L2 and L1 penalties (1e-3 each) on the first layer, scaled by ``128 / M`` for a fit to
  ``M > 128`` coalitions; the L1 part favours networks that use few features per unit (games made of
  interacting groups of features);
- 1500 full-batch Adam steps with the learning rate annealed from 0.02 to 0 (cosine), on the values
  standardised per game, in float64. The fit still carries small changes of the values on: moving them by
  1e-7 moved φ by up to 8e-4 at 128 evaluations on wine (with a constant learning rate and L2 only, up to
  2e-3);
- three networks from different starting weights, their corrections averaged (up to 12 % lower error at
  128-256 evaluations than one);
- ``φ(g)`` by enumerating all ``2^d`` coalitions when ``d <= 16``, else by the regression estimator of
  :mod:`xaikit.methods.machinery.kernel_design` on ``2^16`` coalitions of ``g`` (cheap: ``g`` is a tiny network);
- every game (sample × target) gets its own networks, all fitted in one batched optimisation; the starting
  weights depend only on the seed, and the loss is a sum over games, so a game's fit is the same, bit for
  bit, in any batch (given the same values);
- a game that is additive up to rounding gets no network: the plain estimators are exact on it.

Cost: ``3 × 1500`` steps of a batched product ``(games, 12, d) @ (games, d, M)`` and its gradient; for
cheap models this can exceed the model evaluations (then ``estimator="plain"`` with more samples may be the
better trade), for image or language models it is a few per cent of them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .features import Features
from .kernel_design import coalitions, kernel_design, shapley_weights

HIDDEN = 12
#: L2 and L1 penalties on the first layer's weights for a fit to PENALTY_POINTS coalitions; a fit to M
#: coalitions uses them × min(1, PENALTY_POINTS / M) (a fixed prior against a growing sum of squared errors)
WEIGHT_DECAY = 1e-3
SPARSITY = 1e-3
PENALTY_POINTS = 128
STEPS = 1500
LEARNING_RATE = 0.02
#: networks from different starting weights whose corrections are averaged
ENSEMBLE = 3
#: the surrogate's Shapley values are computed exactly up to this many features, estimated above
MAX_EXACT_FEATURES = 16
#: coalitions of the surrogate evaluated to estimate its Shapley values above MAX_EXACT_FEATURES
SURROGATE_COALITIONS = 1 << 16


@dataclass
class Surrogate:
    """For each of B games, ``members`` networks ``g(z) = mean + sd (a + c · tanh(W u + w0))``, ``u = scale (2z - 1)``;
    the surrogate of a game is the mean of its members. Parameters are stored member-major: ``(members * B, ...)``."""

    weight: torch.Tensor  # (E * B, H, d)
    bias: torch.Tensor  # (E * B, H, 1)
    out: torch.Tensor  # (E * B, 1, H)
    intercept: torch.Tensor  # (E * B, 1, 1)
    scale: torch.Tensor  # (E * B, d, 1)
    mean: torch.Tensor  # (E * B, 1)
    sd: torch.Tensor  # (E * B, 1)
    members: int

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Values ``(B, M)`` of coalitions ``z`` (bool): ``(M, d)`` for every game, or ``(B, M, d)`` each its own."""
        if z.ndim == 3:
            z = z.repeat(self.members, 1, 1)
        standardised = _network(self.weight, self.bias, self.out, self.intercept, _inputs(z, self.scale))
        values = standardised * self.sd + self.mean
        return values.view(self.members, -1, values.shape[1]).mean(0)

    def shapley(self, seed: int) -> torch.Tensor:
        """Shapley values ``(B, d)`` of every game's surrogate (exact for ``d <= 16``; see the module docstring)."""
        d = self.weight.shape[2]
        if d <= MAX_EXACT_FEATURES:
            z = coalitions(torch.arange(2**d, device=self.weight.device), d)
            return self(z) @ shapley_weights(z)
        design = kernel_design(d, SURROGATE_COALITIONS, True, torch.Generator().manual_seed(seed))
        return self(design.with_ends().to(self.weight.device)) @ design.weights.to(self.weight.device)


def feature_deviation(x: torch.Tensor, baseline: torch.Tensor, features: Features) -> torch.Tensor:
    """``(N, d)`` size of each feature's change: the root of ``Σ (x - b)^2`` over its elements, averaged over the
    B baselines ``(N or 1, B, ...)``; for token ids, the number of tokens that differ."""
    if x.is_floating_point():
        change = (x[:, None] - baseline).double().pow(2).mean(1)
    else:
        change = (x[:, None] != baseline).double().mean(1)
    index = features.mask.expand(x.shape[0], *x.shape[1:]).reshape(x.shape[0], -1).to(x.device)
    total = torch.zeros((x.shape[0], features.d), dtype=torch.float64, device=x.device)
    return total.scatter_add_(1, index, change.reshape(x.shape[0], -1)).sqrt()


def additive(z: torch.Tensor, values: torch.Tensor, eps: float) -> torch.Tensor:
    """``(B,)`` bool: whether each game is additive on its coalitions (``z``: ``(M, d)`` or ``(B, M, d)``) up to
    rounding: a least-squares fit of ``v(S) = a + Σ_{j∈S} b_j`` leaves a residual below ``64 eps`` of the
    values' norm (``eps``: the resolution of the model's outputs). Such a game needs no surrogate: the plain
    estimators are exact on it."""
    z = z.double().expand(values.shape[0], *z.shape[-2:])  # (B, M, d)
    design = torch.cat([torch.ones_like(z[..., :1]), z], 2)
    values = values.double()[:, :, None]
    residual = values - design @ torch.linalg.lstsq(design, values).solution
    return residual.norm(dim=(1, 2)) <= 64 * eps * values.norm(dim=(1, 2))


def feature_scale(deviation: torch.Tensor) -> torch.Tensor:
    """``(N, d)`` sizes of the features' changes -> input scales ``sqrt(size)``, root mean square 1 per sample.

    The square root is a milder prior than the size itself (breast cancer, 128 evaluations: median error
    0.49 vs 0.51-0.54 of the reference's; the size squared: 0.69). Features of size 0 (e.g. padding slots)
    get 0; a sample whose features all have size 0 gets ones.
    """
    root = deviation.sqrt()
    rms = root.pow(2).mean(1, keepdim=True).sqrt()
    return torch.where(rms > 0, root / rms.clamp_min(torch.finfo(root.dtype).tiny), torch.ones_like(root))


def fit_surrogate(z: torch.Tensor, values: torch.Tensor, scale: torch.Tensor, seed: int,
                  members: int = ENSEMBLE, steps: int = STEPS) -> Surrogate:
    """Fit ``members`` networks per game to ``values`` ``(B, M)`` at coalitions ``z``: ``(M, d)``, or ``(B, M, d)``.

    ``scale`` ``(B, d)``: the input scale of every feature (:func:`feature_scale`). Member e of every game starts
    from the same weights (drawn from ``seed + 7919 e``); all networks are fitted in one batched optimisation.
    Runs with gradients on (also under ``torch.no_grad`` or ``torch.inference_mode``); touches no other state.
    """
    games, d = values.shape[0], z.shape[-1]
    dtype, device = torch.float64, values.device
    starts = [torch.Generator().manual_seed(seed + 7919 * member) for member in range(members)]
    start_weight = torch.stack([torch.randn((HIDDEN, d), generator=g, dtype=dtype) for g in starts]) / math.sqrt(d)
    start_out = torch.stack([torch.randn((1, HIDDEN), generator=g, dtype=dtype) for g in starts]) / math.sqrt(HIDDEN)
    with torch.inference_mode(False), torch.enable_grad():
        values, scale = values.to(dtype).clone(), scale.to(dtype).clone()[:, :, None]
        mean = values.mean(1, keepdim=True)
        # the spread written out: Tensor.std's algorithm rounds differently with the number of rows, and the fit
        # would amplify that; this way a game's fit is bit for bit the same in any batch
        spread = (values - mean).pow(2).sum(1, keepdim=True).div(max(values.shape[1] - 1, 1)).sqrt()
        sd = spread.clamp_min(torch.finfo(dtype).eps * mean.abs().clamp_min(1.0))
        target = ((values - mean) / sd).repeat(members, 1)
        u = _inputs(z.clone(), scale).repeat(members, 1, 1)
        size = (members * games,)
        weight = start_weight.to(device)[:, None].expand(members, games, HIDDEN, d).reshape(*size, HIDDEN, d)
        out = start_out.to(device)[:, None].expand(members, games, 1, HIDDEN).reshape(*size, 1, HIDDEN)
        weight, out = weight.clone().requires_grad_(), out.clone().requires_grad_()
        bias = torch.zeros((*size, HIDDEN, 1), dtype=dtype, device=device, requires_grad=True)
        intercept = torch.zeros((*size, 1, 1), dtype=dtype, device=device, requires_grad=True)
        optimiser = torch.optim.Adam([weight, bias, out, intercept], lr=LEARNING_RATE)
        penalty = min(1.0, PENALTY_POINTS / values.shape[1])
        # a learning rate annealed to 0 ends the fit in a minimum rather than mid-step
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        for _ in range(steps):
            optimiser.zero_grad()
            fitted = _network(weight, bias, out, intercept, u)
            loss = (fitted - target).pow(2).mean(1).sum() + penalty * (WEIGHT_DECAY * weight.pow(2).sum()
                                                                      + SPARSITY * weight.abs().sum())
            loss.backward()
            optimiser.step()
            schedule.step()
    return Surrogate(weight.detach(), bias.detach(), out.detach(), intercept.detach(), scale.repeat(members, 1, 1),
                     mean.repeat(members, 1), sd.repeat(members, 1), members)


#: seconds per unit of work (one step of one member on one game, per coalition and feature), per device type
_STEP_SECONDS: dict[str, float] = {}
#: the calibration fit: games, coalitions, features, steps
_CALIBRATION = (8, 512, 16, 4)


def fit_seconds(games: int, rows: int, d: int, device: torch.device | str = "cpu") -> float:
    """The estimated time of :func:`fit_surrogate` for ``games`` games of ``rows`` coalitions on d features.

    The work of a fit is ``ENSEMBLE × games × STEPS`` products of ``(HIDDEN, d) @ (d, rows)`` and their gradients;
    its time per unit is measured once per process and device type, by timing a short fit of known size
    (:data:`_CALIBRATION`, a few milliseconds), and scaled.
    """
    kind = torch.device(device).type
    if kind not in _STEP_SECONDS:
        g, m, dims, steps = _CALIBRATION
        generator = torch.Generator().manual_seed(0)
        z = (torch.rand((m, dims), generator=generator) < 0.5).to(device)
        values = torch.randn((g, m), generator=generator, dtype=torch.float64).to(device)
        scale = torch.ones((g, dims), dtype=torch.float64, device=device)
        fit_surrogate(z, values, scale, 0, steps=1)  # warm-up (allocations, kernels)
        _synchronise(kind)
        began = time.perf_counter()
        fit_surrogate(z, values, scale, 0, steps=steps)
        _synchronise(kind)
        _STEP_SECONDS[kind] = (time.perf_counter() - began) / (ENSEMBLE * g * steps * m * (dims + 1))
    return _STEP_SECONDS[kind] * ENSEMBLE * games * STEPS * rows * (d + 1)


def _synchronise(kind: str) -> None:
    """Wait for the device's queued work (timings of asynchronous devices)."""
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def surrogate_correction(z: torch.Tensor, values: torch.Tensor, scale: torch.Tensor,
                         estimate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int,
                         eps: float) -> torch.Tensor:
    """``φ(g) - φ̂(g)`` ``(B, d)``: what a sampling estimator gets wrong on networks ``g`` fitted to each game.

    Parameters
    ----------
    z : (M, d) or (B, M, d) bool
        The coalitions the estimator evaluated (shared, or per game).
    values : (B, M)
        The games' values there.
    scale : (B, d)
        Input scales (:func:`feature_scale`).
    estimate : callable
        ``estimate(g_values, games)``: the estimator on the networks' values ``(G, M)`` of the games ``games``
        (indices into B); it must be the estimator that made the uncorrected estimate.
    seed, eps
        Seed of the starting weights; resolution of the model's outputs (see :func:`additive`).

    Adding the result to the estimator's own estimate gives ``φ(g) + φ̂(v - g)``. Additive games get 0.
    """
    correction = torch.zeros((values.shape[0], z.shape[-1]), dtype=torch.float64, device=values.device)
    games = (~additive(z, values, eps)).nonzero().flatten()
    if games.numel():
        fit_z = z if z.ndim == 2 else z[games]
        surrogate = fit_surrogate(fit_z, values[games], scale[games], seed)
        correction[games] = surrogate.shapley(seed) - estimate(surrogate(fit_z), games)
    return correction


def _network(weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, intercept: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
    """The standardised outputs ``(G, M)`` of G one-hidden-layer tanh networks on inputs ``u`` ``(G, d, M)``."""
    return (intercept + out @ torch.tanh(weight @ u + bias)).squeeze(1)


def _inputs(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Network inputs ``(B, d, M)``: ``scale_j (2 z_j - 1)`` for coalitions ``(M, d)`` or ``(B, M, d)``."""
    return (2 * z.to(scale.dtype) - 1).transpose(-1, -2) * scale
