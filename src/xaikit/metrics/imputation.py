"""Noisy linear imputation (Rong et al. 2022, Sec. 4): fill removed pixels from their neighbours.

Every removed pixel i takes the weighted mean of its 8 neighbours j (weight 1/6 for the 4 direct, 1/12 for
the 4 diagonal neighbours; neighbours outside the image are left out), known or removed alike:

    d_i x_i − Σ_j w_ij x_j = 0,   d_i = Σ_j w_ij,

one sparse linear system per image over all its removed pixels, shared by the channels (one matrix, one
right-hand side per channel). The matrix is symmetric and positive definite on every group of removed pixels
that touches a known one. All systems of a batch are solved at once in torch by conjugate gradients,
preconditioned with a multigrid V-cycle: 2×2 aggregation, Galerkin coarse operators (9-point stencils with
per-pixel coefficients), damped Jacobi smoothing, and a dense solve on the coarsest grid. The iteration
starts from a pull-push fill of the known pixels (block means, coarser and coarser, blended back down
bilinearly): smooth, built from the known pixels only (so a truncated solve cannot leak removed values), and
on the ROAD benchmark systems it saves about a sixth of the V-cycles over starting from the image mean. A
group of removed pixels without any known neighbour keeps that initial value. Finally Gaussian noise is
added to the imputed pixels.

**How accurately.** Rong et al. add Gaussian noise (in ROAD: std ``noise`` × the image's value range) to the
imputed pixels, so solving far below that noise buys nothing. With ``atol`` (ROAD passes
:data:`ACCURACY` × the noise std, i.e. a tenth of it) a system counts as solved once its *estimated largest
pixel error* is at most ``atol``: the error of the iterate is e = A⁻¹r, and the V-cycle applied to the
residual, z = M⁻¹r, is the multigrid's approximation of it, so the estimate is :data:`SAFETY` × max |z| (over
the removed pixels and channels). The safety factor covers the V-cycle's under-estimate of the slowest error
components; on the ROAD benchmark systems (EfficientNet-Lite0 inputs, 10 %, ..., 90 % removed) the true
largest error was at most 2.8 × max |z| once it mattered. The test suite checks the resulting true error
against a direct sparse solve on random, hole and relevance-shaped masks. Without ``atol`` (or where it is 0,
e.g. ROAD with ``noise=0``) the relative residual tolerance ``tol`` decides. On the ROAD benchmark (36 systems
of 224×224, 10 %, ..., 90 % removed) this takes 3 CG iterations at 10–30 % and 8–9 at 90 % (13 for all at
relative residual 1e-5) with a largest true error of 0.07 σ; the set-up plus one V-cycle for all 36 systems
already cost about as much as 6–8 forward passes of EfficientNet-Lite0 (benchmarks/results/metrics.md).
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
#: the accuracy ROAD asks for: the largest imputation error as a fraction of the added noise's std
ACCURACY = 0.1
#: the estimated error is this multiple of max |M⁻¹ r| (see the module docstring)
SAFETY = 4.0


def _shifted(v: torch.Tensor) -> list[torch.Tensor]:
    """The 9 neighbour views ``v[i + o]`` (zero outside) of ``v`` (B, C, H, W), in :data:`OFFSETS` order."""
    h, w = v.shape[-2:]
    padded = F.pad(v, (1, 1, 1, 1))
    return [padded[..., 1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] for dy, dx in OFFSETS]


def _apply(stencil: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for a 9-point stencil ``(B, 9, H, W)`` (shared by the channels of ``v`` (B, C, H, W))."""
    views = _shifted(v)
    out = views[0] * stencil[:, :1]
    for k in range(1, 9):
        out.addcmul_(stencil[:, k: k + 1], views[k])
    return out


def _residual(stencil: torch.Tensor, rhs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """rhs − A v for a 9-point stencil (see :func:`_apply`)."""
    out = rhs.clone()
    for k, view in enumerate(_shifted(v)):
        out.addcmul_(stencil[:, k: k + 1], view, value=-1)
    return out


def _degree(unknown: torch.Tensor) -> torch.Tensor:
    """d_i = Σ_j w_ij over the neighbours inside the image: ``(1, 1, H, W)``."""
    inside = _shifted(torch.ones_like(unknown[:1]))
    return sum(w * view for w, view in zip(WEIGHTS, inside))


def fine_stencil(unknown: torch.Tensor) -> torch.Tensor:
    """The imputation operator on the removed pixels: ``(B, 9, H, W)`` from ``unknown`` (B, 1, H, W) in {0, 1}."""
    neighbour_unknown = _shifted(unknown)
    stencil = unknown.new_empty(unknown.shape[0], 9, *unknown.shape[2:])
    for k, w in enumerate(WEIGHTS):
        if k == 4:
            torch.mul(unknown, _degree(unknown), out=stencil[:, 4:5])
        else:
            torch.mul(unknown, neighbour_unknown[k], out=stencil[:, k: k + 1]).mul_(-w)
    return stencil


def _pair(stencil: torch.Tensor, offsets: int, axis: int) -> torch.Tensor:
    """Aggregate pairs of pixels along ``axis`` (−1 or −2) of a stencil viewed as ``(B, 3, 3, H, W)`` whose
    dimension ``offsets`` holds that axis' offset −1, 0, +1: an entry of the even pixel of a pair with offset
    −1 couples to the previous pair, one of the odd pixel with offset +1 to the next, all others stay inside."""
    even = stencil[..., 0::2] if axis == -1 else stencil[..., 0::2, :]
    odd = stencil[..., 1::2] if axis == -1 else stencil[..., 1::2, :]
    paired = even.clone()  # offset −1 of the even pixel; offset 0 below
    paired.narrow(offsets, 2, 1).copy_(odd.narrow(offsets, 2, 1))
    inside = paired.narrow(offsets, 1, 1)
    inside.add_(even.narrow(offsets, 2, 1)).add_(odd.narrow(offsets, 0, 1)).add_(odd.narrow(offsets, 1, 1))
    return paired


def coarsen(stencil: torch.Tensor) -> torch.Tensor:
    """Galerkin coarse operator Pᵀ A P for piecewise-constant prolongation over 2×2 blocks (pairs of
    columns, then pairs of rows)."""
    b, _, h, w = stencil.shape
    if h % 2 or w % 2:
        stencil = F.pad(stencil, (0, w % 2, 0, h % 2))
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    grid = stencil.reshape(b, 3, 3, 2 * h2, 2 * w2)  # (B, dy, dx, H, W)
    grid = _pair(grid, 2, -1)
    grid = _pair(grid, 1, -2)
    return grid.reshape(b, 9, h2, w2)


def _dense(stencil: torch.Tensor) -> torch.Tensor:
    """The dense matrices ``(B, n, n)`` of a stencil on an ``n``-pixel grid (unit rows where a pixel is known;
    a tiny diagonal shift keeps groups of removed pixels without known neighbours solvable)."""
    b, _, h, w = stencil.shape
    n = h * w
    basis = torch.eye(n, dtype=stencil.dtype, device=stencil.device).reshape(1, n, h, w).expand(b, -1, -1, -1)
    matrix = _apply(stencil, basis).reshape(b, n, n).transpose(1, 2)
    diagonal = matrix.diagonal(dim1=1, dim2=2)
    return matrix + torch.diag_embed(torch.where(diagonal > 0, 1e-6 * diagonal, torch.ones_like(diagonal)))


def _box(v: torch.Tensor) -> torch.Tensor:
    """(1 2 1) ⊗ (1 2 1) ∗ v with zeros outside."""
    rows = v * 2
    rows[..., 1:].add_(v[..., :-1])
    rows[..., :-1].add_(v[..., 1:])
    box = rows * 2
    box[..., 1:, :].add_(rows[..., :-1, :])
    box[..., :-1, :].add_(rows[..., 1:, :])
    return box


class FineOperator:
    """A v on the full-resolution grid, for v that is zero on known pixels: the constant weights make the
    neighbour sum separable, Σ_j w_ij v_j = ((1 2 1) ⊗ (1 2 1) ∗ v − 4 v) / 12, which is far cheaper than a
    general 9-point stencil."""

    def __init__(self, unknown: torch.Tensor) -> None:
        self.centre = unknown * (_degree(unknown) + 1 / 3)
        self.side = unknown / 12

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return (self.centre * v).addcmul_(self.side, _box(v), value=-1)

    def residual(self, rhs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """rhs − A v."""
        return torch.addcmul(rhs, self.centre, v, value=-1).addcmul_(self.side, _box(v))

    def select(self, rows: torch.Tensor) -> "FineOperator":
        other = object.__new__(FineOperator)
        other.centre, other.side = self.centre[rows], self.side[rows]
        return other


def _restrict(v: torch.Tensor) -> torch.Tensor:
    """Pᵀ v: sums over 2×2 blocks (a last odd row/column forms blocks of its own)."""
    h, w = v.shape[-2:]
    if h % 2 or w % 2:
        v = F.pad(v, (0, w % 2, 0, h % 2))
    rows = v[..., ::2] + v[..., 1::2]
    return rows[..., ::2, :] + rows[..., 1::2, :]


def _add_prolonged(target: torch.Tensor, scale: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """target += scale ⊙ P coarse (piecewise-constant over 2×2 blocks), in place."""
    b, c, h, w = target.shape
    if h % 2 or w % 2:
        fine = coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
        return target.addcmul_(scale, fine)
    h2, w2 = h // 2, w // 2
    target.view(b, c, h2, 2, w2, 2).addcmul_(scale.view(scale.shape[0], scale.shape[1], h2, 2, w2, 2),
                                             coarse.view(b, c, h2, 1, w2, 1))
    return target


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
        self.levels[0] = None  # the fine level is applied by ``fine``; its stencil was only needed to coarsen

    def select(self, rows: torch.Tensor) -> "Multigrid":
        """The V-cycle of some images of the batch."""
        other = object.__new__(Multigrid)
        other.fine = self.fine.select(rows)
        other.levels = [None if s is None else s[rows] for s in self.levels]
        other.inverse = [i[rows] for i in self.inverse]
        other.scale = [i[rows] for i in self.scale]
        other.dense = self.dense[rows]
        return other

    def residual(self, level: int, rhs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.fine.residual(rhs, v) if level == 0 else _residual(self.levels[level], rhs, v)

    def __call__(self, residual: torch.Tensor, level: int = 0) -> torch.Tensor:
        if level == len(self.levels) - 1:
            b, c, h, w = residual.shape
            rhs = residual.reshape(b, c, h * w).transpose(1, 2)
            return torch.linalg.solve(self.dense, rhs).transpose(1, 2).reshape(b, c, h, w)
        inverse = self.inverse[level]
        correction = inverse * residual  # pre-smoothing (one Jacobi step from zero)
        coarse = self(_restrict(self.residual(level, residual, correction)), level + 1)
        correction = _add_prolonged(correction, self.scale[level], coarse)
        return correction.addcmul_(inverse, self.residual(level, residual, correction))  # post-smoothing


def _pull_push(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """A smooth first guess from the known pixels only (pull-push): block sums of the known values and of
    their count, coarser and coarser; then, from the coarsest grid down, every block takes the mean of its
    known pixels, blended (by its share of known pixels, clamped to 1) with the bilinearly upsampled guess of
    the grid above. Returns the guess on the full grid."""
    pyramid = [(values, known)]
    while pyramid[-1][0].shape[-1] * pyramid[-1][0].shape[-2] > COARSEST:
        v, k = pyramid[-1]
        pyramid.append((_restrict(v), _restrict(k)))
    v, k = pyramid[-1]
    total = v.sum((2, 3), keepdim=True) / k.sum((2, 3), keepdim=True).clamp_min(1)
    guess = torch.where(k > 0, v / k.clamp_min(1e-30), total)
    for v, k in reversed(pyramid[:-1]):
        up = F.interpolate(guess, size=v.shape[-2:], mode="bilinear", align_corners=False)
        share = k.clamp(max=1)
        guess = (v / k.clamp_min(1)).mul_(share).addcmul_(1 - share, up) if v is not values else up
    return guess


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: torch.Tensor | None = None,
                            tol: float = 1e-5, max_iter: int = 500,
                            atol: float | torch.Tensor | None = None) -> torch.Tensor:
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
    atol : float or (M,) tensor, optional
        Absolute accuracy per image: a system also counts as solved once its estimated largest pixel error
        (:data:`SAFETY` × max |M⁻¹r|, see the module docstring) is at most ``atol``. ROAD passes
        :data:`ACCURACY` × the noise std. 0 or ``None``: only ``tol`` decides.
    """
    m, c, h, w = x.shape
    unknown = removed.reshape(m, 1, h, w).to(x.dtype)
    known = 1 - unknown
    values = x * known
    count = known.sum((2, 3), keepdim=True)
    mean = torch.where(count > 0, values.sum((2, 3), keepdim=True) / count.clamp_min(1), x.mean((2, 3), keepdim=True))
    guess = torch.where(count > 0, _pull_push(values, known), mean) * unknown
    start = values + guess
    fine = FineOperator(unknown)
    # A x_U = b with b = Σ_{known j} w_ij x_j: the residual of the start is b − A x_U⁽⁰⁾ on the removed pixels
    rhs = unknown * (_box(values) / 12)
    residual = fine.residual(rhs, guess)
    if atol is not None:
        atol = torch.as_tensor(atol, dtype=x.dtype, device=x.device).expand(m).reshape(m, 1, 1, 1)
    imputed = start + conjugate_gradients(Multigrid(fine_stencil(unknown), fine), residual, rhs, tol, max_iter,
                                          atol)
    if noise is not None:
        imputed = imputed + noise * unknown
    return imputed


def conjugate_gradients(precondition: Multigrid, residual: torch.Tensor, rhs: torch.Tensor, tol: float,
                        max_iter: int, atol: torch.Tensor | None = None) -> torch.Tensor:
    """Solve A e = residual for every image and channel of the batch (multigrid-preconditioned CG).

    A system is solved when ‖r‖ ≤ tol·‖rhs‖ per channel, or (with ``atol`` (M, 1, 1, 1)) when
    :data:`SAFETY` × max |M⁻¹r| ≤ atol over its channels. Images whose systems are solved are dropped from
    the iteration (in steps, to keep the copying cheap), so easy systems do not pay for the hard ones.
    """
    m, c = residual.shape[:2]
    result = torch.zeros_like(residual)
    rows = torch.arange(m, device=residual.device)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]

    def norm(a: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(a.flatten(2), dim=2)

    limit = tol * norm(rhs)
    bound = None if atol is None else atol.reshape(m, 1) / SAFETY
    solution = torch.zeros_like(residual)
    z = precondition(residual)
    direction = z
    rz = dot(residual, z)
    for _ in range(max_iter):
        active = (norm(residual) > limit).any(1)
        if bound is not None:
            active &= (z.flatten(1).abs().amax(1, keepdim=True) > bound).flatten()
        if not bool(active.any()):
            break
        if int(active.sum()) <= 0.75 * len(rows):  # drop the finished images
            result[rows] = solution
            keep = active.nonzero().flatten()
            rows = rows[keep]
            precondition = precondition.select(keep)
            solution, residual, direction = solution[keep], residual[keep], direction[keep]
            rz, limit, active = rz[keep], limit[keep], active[keep]
            bound = None if bound is None else bound[keep]
        busy = active.view(-1, 1, 1, 1)
        a_dir = precondition.fine(direction)
        curvature = dot(direction, a_dir)
        alpha = torch.where(busy & (curvature > 0), rz / curvature.clamp_min(1e-30), torch.zeros_like(rz))
        solution = solution.addcmul_(alpha, direction)
        residual = residual.addcmul_(alpha, a_dir, value=-1)
        z = precondition(residual)
        rz_new = dot(residual, z)
        beta = torch.where(busy & (rz > 0), rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        direction = torch.addcmul(z, beta, direction)
        rz = rz_new
    result[rows] = solution
    return result
