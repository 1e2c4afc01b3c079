"""Influence functions with an inverse-Hessian–vector product (Koh & Liang, ICML 2017; LiSSA: Agarwal, Bullins &
Hazan, JMLR 2017).

Upweighting a training sample ``z`` by ``ε`` changes the loss at a query ``z'`` by ``ε·I(z, z')`` with
``I(z, z') = −∇ℓ(z')ᵀ H⁻¹ ∇ℓ(z)`` (Koh & Liang eq. 2), ``H`` the Hessian of the mean training loss. The score
reported here is ``−I = ∇ℓ(z')ᵀ (H + λI)⁻¹ ∇ℓ(z)``: positive for a proponent (training on ``z`` lowered the
loss at ``z'``), as TracIn's and TRAK's. The damping ``λ`` makes the inverse exist for a non-convex loss.

``s = (H + λI)⁻¹ ∇ℓ(z')`` is computed once per query by

- ``hessian="exact"``: the Hessian ``(p, p)`` of the attributed parameters from the whole training set
  (``torch.func.hessian``), solved by Cholesky. Cost ``N`` per-sample Hessians, ``p²`` memory: small layers;
- ``hessian="lissa"``: the stochastic Neumann series (LiSSA; Koh & Liang §3): ``h_0 = v``,
  ``h_j = v + (I − (H_j + λI)/s) h_{j−1}``, ``(H + λI)⁻¹ v ≈ h_J / s``, where ``H_j`` is the Hessian of a
  random mini-batch of ``hessian_batch_size`` training samples (``scale`` ``s`` must exceed the largest
  eigenvalue of ``H + λI`` for the series to converge). Cost per block of queries: ``depth × repeats``
  Hessian–vector products on a mini-batch (forward-over-reverse ``torch.func.jvp`` of ``grad``, ≈ 2–3×
  a backward pass each, batched over the queries with ``vmap``); memory ``O(p)`` per query.

Training gradients ``∇ℓ(z_i)`` ``(N, p)`` are kept after :meth:`fit` (``N p`` numbers: attribute the last
layer, ``layer="last"``, the default, for large models).
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..batching import check_batch_size
from ..errors import check_choice, check_positive
from ..methods.base import _checked_init
from ..modes import explains_in_eval
from .attribution import AttributionResult, check_indices, labelled_batches, query_labels, top_of
from .gradients import attributed_parameters, flat, gradient_size, per_sample_gradients, per_sample_losses
from .influence import cross_entropy

HESSIANS = ("lissa", "exact")
#: the largest gradient size for hessian="exact" (a p × p matrix)
EXACT_LIMIT = 4096


class InfluenceFunctionsResult(AttributionResult):
    """The strongest proponents (largest ``−I``) and opponents of each query by influence functions."""


class InfluenceFunctions:
    """Influence of training samples on a query's loss (Koh & Liang 2017) with an iterative or exact iHVP.

    Parameters
    ----------
    model : nn.Module
        The trained model (evaluated in eval mode; never modified).
    layer : "last", "all" or a module name
        The attributed parameters (the others are held fixed).
    loss : callable ``(output, y) -> (N,)``
        The per-sample training loss (default cross-entropy).
    hessian : "lissa" or "exact"
        How ``(H + λI)⁻¹ v`` is computed (see the module's text for the costs).
    damping : float
        ``λ ≥ 0`` added to the Hessian.
    scale : float
        LiSSA's ``s`` (> the largest eigenvalue of ``H + λI``).
    depth : int
        LiSSA's number of recursion steps ``J``.
    repeats : int
        LiSSA estimates averaged (independent mini-batch sequences).
    hessian_batch_size : int
        Training samples per LiSSA Hessian–vector product.
    seed : int
        Seed of LiSSA's mini-batches.
    batch_size : int or "auto"
        Samples per per-sample-gradient batch.
    progress : bool
        Show progress bars.
    """

    def __init__(self, model: nn.Module, layer: str = "last",
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy, hessian: str = "lissa",
                 damping: float = 0.01, scale: float = 10.0, depth: int = 200, repeats: int = 1,
                 hessian_batch_size: int = 128, seed: int = 0, batch_size: int | str = 64,
                 progress: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_choice(hessian, "hessian", HESSIANS)
        if not isinstance(damping, (int, float)) or damping < 0:
            raise ValueError(f"damping must be a number >= 0, got {damping!r}")
        check_positive(scale, "scale")
        check_positive(depth, "depth", integer=True)
        check_positive(repeats, "repeats", integer=True)
        check_positive(hessian_batch_size, "hessian_batch_size", integer=True)
        check_batch_size(batch_size)
        if not callable(loss):
            raise TypeError(f"loss must be a callable (output, y) -> per-sample losses, got {type(loss).__name__}")
        self.model = model
        self.names = attributed_parameters(model, layer)
        self.gradient_size = gradient_size(model, self.names)
        if hessian == "exact" and self.gradient_size > EXACT_LIMIT:
            raise ValueError(f"hessian='exact' needs a {self.gradient_size}² matrix; use hessian='lissa' or a smaller "
                             f"layer= (at most {EXACT_LIMIT} parameters)")
        self.layer, self.loss, self.hessian = layer, loss, hessian
        self.damping, self.scale, self.depth, self.repeats = float(damping), float(scale), depth, repeats
        self.hessian_batch_size, self.seed = hessian_batch_size, seed
        self.batch_size, self.progress = batch_size, progress
        self.state = dict(model.state_dict())
        self.gradients: torch.Tensor | None = None  #: ``∇ℓ(z_i)`` ``(N, p)``
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.train_size = 0
        self._hessian_inverse: torch.Tensor | None = None

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_losses(self.loss, out, y)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return flat(per_sample_gradients(self.model, self.state, self.names, self._loss, x, y), self.names).detach()

    @explains_in_eval
    def fit(self, data: Any) -> "InfluenceFunctions":
        """Per-sample loss gradients of every labelled training sample; the training set is kept for the
        Hessian (``hessian="exact"``: the Hessian is formed and inverted here)."""
        grads, xs, ys = [], [], []
        for x, y, shape in labelled_batches(self.model, data, self.batch_size, "InfluenceFunctions"):
            grads.append(self._gradients(x, y.long()))
            xs.append(x)
            ys.append(y.long())
            self.input_shape = shape
        self.gradients, self.x, self.y = torch.cat(grads), torch.cat(xs), torch.cat(ys)
        self.train_size = self.gradients.shape[0]
        self._hessian_inverse = None
        if self.hessian == "exact":
            h = self.exact_hessian()
            a = h.double() + self.damping * torch.eye(h.shape[0], dtype=torch.float64, device=h.device)
            self._hessian_inverse = torch.linalg.inv(a).to(h.dtype)
        return self

    # ---- the Hessian ----------------------------------------------------------------------------------------

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: self.state[n].detach() for n in self.names}

    def _mean_loss(self, flat_params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for n, p in self._params().items():
            params[n] = flat_params[start:start + p.numel()].view_as(p)
            start += p.numel()
        rest = {n: v for n, v in self.state.items() if n not in params}
        return self._loss(torch.func.functional_call(self.model, {**rest, **params}, (x,)), y).mean()

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.flatten() for p in self._params().values()])

    @explains_in_eval
    def exact_hessian(self) -> torch.Tensor:
        """The Hessian ``(p, p)`` of the mean training loss in the attributed parameters (small layers only)."""
        if self.x is None:
            raise ValueError("InfluenceFunctions has no training data; call fit(data) first")
        if self.gradient_size > EXACT_LIMIT:
            raise ValueError(f"the exact Hessian has {self.gradient_size}² entries; use hessian='lissa'")
        theta = self._flat_params()
        total = torch.zeros(theta.numel(), theta.numel(), dtype=theta.dtype, device=theta.device)
        step = max(1, self.hessian_batch_size)
        for start in range(0, self.train_size, step):
            xb, yb = self.x[start:start + step], self.y[start:start + step]
            total += torch.func.hessian(self._mean_loss)(theta, xb, yb) * xb.shape[0]
        return total / self.train_size

    def _hvp(self, theta: torch.Tensor, vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``H_batch v`` for each row ``v`` of ``vectors`` (forward-over-reverse, vmapped over the rows)."""
        grad = torch.func.grad(self._mean_loss)

        def one(v: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(lambda t: grad(t, x, y), (theta,), (v,))[1]

        return torch.func.vmap(one)(vectors)

    @explains_in_eval
    def inverse_hvp(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(H + λI)⁻¹ v`` for each row of ``vectors`` ``(Q, p)``, by the chosen ``hessian``."""
        if self.x is None:
            raise ValueError("InfluenceFunctions has no training data; call fit(data) first")
        if self._hessian_inverse is not None:
            return vectors @ self._hessian_inverse.T
        theta = self._flat_params()
        g = torch.Generator().manual_seed(self.seed)
        estimate = torch.zeros_like(vectors)
        batch = min(self.hessian_batch_size, self.train_size)
        bar = tqdm(total=self.depth * self.repeats, desc="LiSSA", disable=None if self.progress else True,
                   file=sys.stderr)
        for _ in range(self.repeats):
            h = vectors.clone()
            for _ in range(self.depth):
                pick = torch.randperm(self.train_size, generator=g)[:batch].to(self.x.device)
                hv = self._hvp(theta, h, self.x[pick], self.y[pick]) + self.damping * h
                h = vectors + h - hv / self.scale
                bar.update(1)
            if not torch.isfinite(h).all():
                raise FloatingPointError("LiSSA diverged: raise scale= above the largest eigenvalue of the Hessian "
                                         "(+ damping), or raise damping=")
            estimate += h / self.scale / self.repeats
        bar.close()
        return estimate

    # ---- scoring --------------------------------------------------------------------------------------------

    @explains_in_eval
    def _query(self, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y = query_labels(self.model, x, y, self.input_shape, "InfluenceFunctions")
        return self.inverse_hvp(self._gradients(x, y)), y

    def scores(self, x: torch.Tensor, y: Any = None, indices: Any = None) -> torch.Tensor:
        """``−I(z_i, x) = ∇ℓ(x, y)ᵀ (H + λI)⁻¹ ∇ℓ(z_i)`` ``(Q, N)`` (or for the training samples at ``indices``);
        ``y`` defaults to the model's prediction."""
        s, _ = self._query(x, y)
        assert self.gradients is not None
        idx = check_indices(indices, self.train_size)
        return s @ (self.gradients if idx is None else self.gradients[idx.to(self.gradients.device)]).T

    def self_scores(self) -> torch.Tensor:
        """Self-influence ``∇ℓ(z_i)ᵀ (H + λI)⁻¹ ∇ℓ(z_i)`` ``(N,)`` (LiSSA: one iHVP per training sample)."""
        if self.gradients is None:
            raise ValueError("InfluenceFunctions has no training data; call fit(data) first")
        return (self.inverse_hvp(self.gradients) * self.gradients).sum(1)

    def top(self, x: torch.Tensor, y: Any = None, k: int = 5) -> InfluenceFunctionsResult:
        """The ``k`` strongest proponents and opponents of each query."""
        s, y = self._query(x, y)
        assert self.gradients is not None
        found = top_of(lambda a, b: s @ self.gradients[a:b].T, self.train_size, k, x.shape[0], x.device)
        return InfluenceFunctionsResult(*found, y)


InfluenceFunctions.__init__ = _checked_init(InfluenceFunctions.__init__)  # unknown settings are rejected by name
