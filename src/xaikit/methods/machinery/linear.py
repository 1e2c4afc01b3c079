"""Batched linear fits in torch for the surrogate and Shapley methods (no sklearn inside a method).

All functions work on a batch of independent problems: design ``Z`` ``(B, S, d)``, targets ``y`` ``(B, S)``,
and a ``use`` mask ``(B, d)`` of the columns that take part (unused columns get a coefficient of exactly 0).
They compute in float64.
"""
from __future__ import annotations

import warnings

import torch


def _restrict(a: torch.Tensor, b: torch.Tensor, use: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop unused columns from normal equations ``a β = b``: their rows/columns become the identity, rhs 0."""
    pair = use[:, :, None] & use[:, None, :]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    return torch.where(pair, a, eye * (~use[:, :, None])), torch.where(use, b, torch.zeros_like(b))


def _solve(a: torch.Tensor, b: torch.Tensor, what: str) -> torch.Tensor:
    try:
        return torch.linalg.solve(a, b)
    except RuntimeError:  # torch.linalg.LinAlgError: singular system
        warnings.warn(f"{what}: the linear system is singular (too few distinct samples for the number of "
                      "features); using the minimum-norm least-squares solution", RuntimeWarning, stacklevel=3)
        return (torch.linalg.pinv(a) @ b[..., None])[..., 0]


def weighted_ridge(
    z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, use: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted ridge regression with an unpenalised intercept.

    Minimises ``Σ_s w_s (y_s - c - z_s·β)² + alpha ‖β‖²``. Returns ``(β (B, d), c (B,), R² (B,))`` where R² is
    the weighted coefficient of determination of the fit (LIME's "score").
    """
    z, y, w = z.double(), y.double(), weights.double()
    total = w.sum(1, keepdim=True)
    z_mean = (w[..., None] * z).sum(1, keepdim=True) / total[..., None]
    y_mean = (w * y).sum(1, keepdim=True) / total
    zc, yc = z - z_mean, y - y_mean
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + alpha * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    b = (zc.transpose(1, 2) @ (w * yc)[..., None])[..., 0]
    a, b = _restrict(a, b, use)
    beta = _solve(a, b, "LIME surrogate")
    intercept = y_mean[:, 0] - (z_mean[:, 0] * beta).sum(1)
    residual = (w * (yc - (zc @ beta[..., None])[..., 0]) ** 2).sum(1)
    spread = (w * yc**2).sum(1)
    r2 = torch.where(spread > 0, 1 - residual / spread.clamp_min(1e-300), torch.ones_like(spread))
    return beta, intercept, r2


def lasso_select(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, use: torch.Tensor, k: int,
                 grid: int = 30, iterations: int = 100) -> torch.Tensor:
    """K-LASSO feature selection (Ribeiro et al. 2016, Algorithm 1): the ``k`` features of the weighted LASSO
    regularisation path at the largest penalty where at least ``k`` coefficients are non-zero.

    The path is traced on a geometric grid of penalties from λ_max (all coefficients zero) down to
    λ_max/1000 with warm-started FISTA (Beck & Teboulle 2009); at the first grid point with ≥ k non-zero
    coefficients the k largest in magnitude are kept (ties at entry are broken by magnitude). Returns the
    ``(B, d)`` bool selection (a subset of ``use``).
    """
    z, y, w = z.double(), y.double(), weights.double()
    total = w.sum(1, keepdim=True)
    zc = z - (w[..., None] * z).sum(1, keepdim=True) / total[..., None]
    yc = y - (w * y).sum(1, keepdim=True) / total
    gram = zc.transpose(1, 2) @ (w[..., None] * zc)
    corr = (zc.transpose(1, 2) @ (w * yc)[..., None])[..., 0]
    gram, corr = gram * (use[:, :, None] & use[:, None, :]), corr * use
    lipschitz = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(1e-12)[:, None]
    lam_max = corr.abs().amax(1, keepdim=True)
    beta = torch.zeros_like(corr)
    chosen = torch.zeros_like(use)
    done = torch.zeros(use.shape[0], dtype=torch.bool, device=use.device)
    for lam in (lam_max * 10 ** (-3 * i / (grid - 1)) for i in range(grid)):
        momentum, t = beta.clone(), 1.0
        for _ in range(iterations):
            step = momentum - ((gram @ momentum[..., None])[..., 0] - corr) / lipschitz
            new = step.sign() * (step.abs() - lam / lipschitz).clamp_min(0)
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            momentum, beta, t = new + (t - 1) / t_next * (new - beta), new, t_next
        ready = ((beta != 0).sum(1) >= k) & ~done
        if ready.any():
            top = _top_k(beta.abs(), use, k)
            chosen = torch.where(ready[:, None], top, chosen)
            done = done | ready
        if done.all():
            break
    last = _top_k(beta.abs(), use, k)  # the path never reached k features: keep the k largest at λ_max/1000
    return torch.where(done[:, None], chosen, last)


def _top_k(score: torch.Tensor, use: torch.Tensor, k: int) -> torch.Tensor:
    score = torch.where(use, score, torch.full_like(score, -1.0))
    index = score.topk(min(k, score.shape[1]), dim=1).indices
    return torch.zeros_like(use).scatter(1, index, True) & use
