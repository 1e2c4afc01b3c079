"""Noisy linear imputation (Rong et al. 2022, Sec. 4): fill removed pixels from their neighbours.

Every removed pixel i takes the weighted mean of its 8 neighbours j (weight 1/6 for the 4 direct, 1/12 for
the 4 diagonal neighbours; neighbours outside the image are left out), known or removed alike:

    d_i x_i − Σ_j w_ij x_j = 0,   d_i = Σ_j w_ij,

one sparse linear system per image over all its removed pixels, shared by the channels (one matrix, one
right-hand side per channel). The matrix is symmetric and positive definite on every group of removed pixels
that touches a known one. All systems of a batch are solved at once in torch by conjugate gradients,
preconditioned with a multigrid V-cycle: 2×2 aggregation, Galerkin coarse operators (9-point stencils with
per-pixel coefficients), damped Jacobi smoothing, and a dense solve on the coarsest grid. A group of removed
pixels without any known neighbour keeps its initial value, the mean of the image's known pixels. Finally
Gaussian noise is added to the imputed pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: the 9 stencil offsets (dy, dx), row-major; index 4 is the centre
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
#: Rong et al.'s neighbour weights per offset (0 for the centre)
WEIGHTS = [1 / 12, 1 / 6, 1 / 12, 1 / 6, 0.0, 1 / 6, 1 / 12, 1 / 6, 1 / 12]
#: damping of the Jacobi smoother (eigenvalues of D⁻¹A lie in (0, 2])
OMEGA = 0.8
#: scaling of the coarse-grid correction (piecewise-constant aggregation under-corrects smooth errors)
OVERCORRECT = 1.5
#: grids with at most this many pixels are solved densely
COARSEST = 64


def _shifted(v: torch.Tensor) -> list[torch.Tensor]:
    """The 9 neighbour views ``v[i + o]`` (zero outside) of ``v`` (B, C, H, W), in :data:`OFFSETS` order."""
    h, w = v.shape[-2:]
    padded = F.pad(v, (1, 1, 1, 1))
    return [padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] for dy, dx in OFFSETS]


def _apply(stencil: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for a 9-point stencil ``(B, 9, H, W)`` (shared by the channels of ``v`` (B, C, H, W))."""
    out = None
    for k, view in enumerate(_shifted(v)):
        term = stencil[:, k: k + 1] * view
        out = term if out is None else out + term
    return out


def fine_stencil(unknown: torch.Tensor) -> torch.Tensor:
    """The imputation operator on the removed pixels: ``(B, 9, H, W)`` from ``unknown`` (B, 1, H, W) in {0, 1}."""
    ones = torch.ones_like(unknown)
    inside = _shifted(ones)  # 1 where the neighbour is inside the image
    neighbour_unknown = _shifted(unknown)
    degree = sum(w * inside[k] for k, w in enumerate(WEIGHTS))
    rows = [-w * unknown * neighbour_unknown[k] for k, w in enumerate(WEIGHTS)]
    rows[4] = degree * unknown
    return torch.cat(rows, 1)


def coarsen(stencil: torch.Tensor) -> torch.Tensor:
    """Galerkin coarse operator Pᵀ A P for piecewise-constant prolongation over 2×2 blocks."""
    b, _, h, w = stencil.shape
    stencil = F.pad(stencil, (0, w % 2, 0, h % 2))
    coarse = stencil.new_zeros(b, 9, (h + 1) // 2, (w + 1) // 2)
    for a in (0, 1):
        for c in (0, 1):
            child = stencil[:, :, a::2, c::2]
            for k, (dy, dx) in enumerate(OFFSETS):
                delta = 3 * ((a + dy) // 2 + 1) + ((c + dx) // 2 + 1)
                coarse[:, delta] += child[:, k]
    return coarse


def _dense(stencil: torch.Tensor) -> torch.Tensor:
    """The dense matrices ``(B, n, n)`` of a stencil on an ``n``-pixel grid (unit rows where a pixel is known;
    a tiny diagonal shift keeps groups of removed pixels without known neighbours solvable)."""
    b, _, h, w = stencil.shape
    n = h * w
    basis = torch.eye(n, dtype=stencil.dtype, device=stencil.device).reshape(1, n, h, w).expand(b, -1, -1, -1)
    matrix = _apply(stencil, basis).reshape(b, n, n).transpose(1, 2)
    diagonal = matrix.diagonal(dim1=1, dim2=2)
    return matrix + torch.diag_embed(torch.where(diagonal > 0, 1e-6 * diagonal, torch.ones_like(diagonal)))


class FineOperator:
    """A v on the full-resolution grid, for v that is zero on known pixels: the constant weights make the
    neighbour sum separable, Σ_j w_ij v_j = ((1 2 1) ⊗ (1 2 1) ∗ v − 4 v) / 12, which is far cheaper than a
    general 9-point stencil."""

    def __init__(self, unknown: torch.Tensor) -> None:
        degree = _shifted(torch.ones_like(unknown[:1]))
        degree = sum(w * inside for w, inside in zip(WEIGHTS, degree))
        self.centre = unknown * (degree + 1 / 3)
        self.side = unknown / 12

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        rows = v * 2  # (1 2 1) along the width, then along the height, with zeros outside
        rows[..., 1:].add_(v[..., :-1])
        rows[..., :-1].add_(v[..., 1:])
        box = rows * 2
        box[..., 1:, :].add_(rows[..., :-1, :])
        box[..., :-1, :].add_(rows[..., 1:, :])
        return (self.centre * v).addcmul_(self.side, box, value=-1)

    def select(self, rows: torch.Tensor) -> "FineOperator":
        other = object.__new__(FineOperator)
        other.centre, other.side = self.centre[rows], self.side[rows]
        return other


class Multigrid:
    """A symmetric V-cycle for the operators of a batch, used as the preconditioner of conjugate gradients."""

    def __init__(self, stencil: torch.Tensor, fine: FineOperator) -> None:
        self.fine = fine
        self.levels = [stencil]
        while stencil.shape[-1] * stencil.shape[-2] > COARSEST:
            stencil = coarsen(stencil)
            self.levels.append(stencil)
        diagonals = [s[:, 4:5] for s in self.levels]
        self.inverse = [torch.where(d > 0, OMEGA / d.clamp_min(1e-30), torch.zeros_like(d)) for d in diagonals]
        self.scale = [OVERCORRECT * (d > 0).to(d.dtype) for d in diagonals]
        self.dense = _dense(self.levels[-1])

    def select(self, rows: torch.Tensor) -> "Multigrid":
        """The V-cycle of some images of the batch."""
        other = object.__new__(Multigrid)
        other.fine = self.fine.select(rows)
        other.levels = [s[rows] for s in self.levels]
        other.inverse = [i[rows] for i in self.inverse]
        other.scale = [i[rows] for i in self.scale]
        other.dense = self.dense[rows]
        return other

    def apply(self, level: int, v: torch.Tensor) -> torch.Tensor:
        return self.fine(v) if level == 0 else _apply(self.levels[level], v)

    def __call__(self, residual: torch.Tensor, level: int = 0) -> torch.Tensor:
        if level == len(self.levels) - 1:
            b, c, h, w = residual.shape
            rhs = residual.reshape(b, c, h * w).transpose(1, 2)
            return torch.linalg.solve(self.dense, rhs).transpose(1, 2).reshape(b, c, h, w)
        inverse = self.inverse[level]
        correction = inverse * residual  # pre-smoothing (one Jacobi step from zero)
        rest = residual - self.apply(level, correction)
        h, w = rest.shape[-2:]
        coarse = F.avg_pool2d(F.pad(rest, (0, w % 2, 0, h % 2)), 2) * 4  # restriction Pᵀ: sum over blocks
        fine = self(coarse, level + 1).repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
        correction = correction.addcmul_(self.scale[level], fine)
        return correction.addcmul_(inverse, residual - self.apply(level, correction))  # post-smoothing


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor | None = None,
                            tol: float = 1e-5, max_iter: int = 500) -> torch.Tensor:
    """Impute the ``removed`` pixels of images ``x``.

    Parameters
    ----------
    x : (M, C, H, W) tensor
        Images.
    removed : (M, H, W) bool tensor
        Pixels to impute (all channels of a pixel together).
    noise : (M, C, H, W) tensor, optional
        Added to the imputed pixels (Rong et al. add Gaussian noise so that the imputation does not leak).
    tol : float
        Relative residual ‖r‖ ≤ tol·‖b‖ at which a system counts as solved.
    """
    m, c, h, w = x.shape
    unknown = removed.reshape(m, 1, h, w).to(x.dtype)
    known = 1 - unknown
    values = x * known
    count = known.sum((2, 3), keepdim=True)
    mean = torch.where(count > 0, values.sum((2, 3), keepdim=True) / count.clamp_min(1), x.mean((2, 3), keepdim=True))
    start = values + mean * unknown
    fine = FineOperator(unknown)
    # A x_U = b with b = Σ_{known j} w_ij x_j: the residual of the start is b − A x_U⁽⁰⁾ on the removed pixels
    rhs = unknown * sum(w * v for w, v in zip(WEIGHTS, _shifted(values)))
    residual = rhs - fine(mean * unknown)
    imputed = start + conjugate_gradients(Multigrid(fine_stencil(unknown), fine), residual, rhs, tol, max_iter)
    if noise is not None:
        imputed = imputed + noise * unknown
    return imputed


def conjugate_gradients(precondition: Multigrid, residual: torch.Tensor, rhs: torch.Tensor, tol: float,
                        max_iter: int) -> torch.Tensor:
    """Solve A e = residual for every image and channel of the batch (multigrid-preconditioned CG).

    Images whose systems have all converged are dropped from the iteration (in steps, to keep the copying
    cheap), so easy systems do not pay for the hard ones.
    """
    dims = (2, 3)
    result = torch.zeros_like(residual)
    rows = torch.arange(residual.shape[0], device=residual.device)
    limit = (tol ** 2) * rhs.square().sum(dims, keepdim=True)
    solution = torch.zeros_like(residual)
    z = precondition(residual)
    direction = z
    rz = (residual * z).sum(dims, keepdim=True)
    for _ in range(max_iter):
        active = residual.square().sum(dims, keepdim=True) > limit
        busy = active.flatten(1).any(1)
        if not bool(busy.any()):
            break
        if int(busy.sum()) <= 0.75 * len(rows):  # drop the finished images
            result[rows] = solution
            keep = busy.nonzero().flatten()
            rows = rows[keep]
            precondition = precondition.select(keep)
            solution, residual, direction = solution[keep], residual[keep], direction[keep]
            rz, limit, active = rz[keep], limit[keep], active[keep]
        a_dir = precondition.fine(direction)
        curvature = (direction * a_dir).sum(dims, keepdim=True)
        alpha = torch.where(active & (curvature > 0), rz / curvature.clamp_min(1e-30), torch.zeros_like(rz))
        solution = solution.addcmul_(alpha, direction)
        residual = residual.addcmul_(alpha, a_dir, value=-1)
        z = precondition(residual)
        rz_new = (residual * z).sum(dims, keepdim=True)
        beta = torch.where(active & (rz > 0), rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        direction = z.addcmul_(beta, direction)
        rz = rz_new
    result[rows] = solution
    return result
