"""Perturbation methods with masks: Meaningful Perturbation / extremal perturbations and RISE."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import check_batch_size, chunked, max_chunk, select_batch
from ..errors import check_positive
from ..explanation import Explanation
from ..progress import progress
from ..targets import ResolvedTarget, resolve_target
from .base import Method, register
from .gradient import chunk_key
from .machinery.baselines import BaselineSpec, describe_baseline, resolve_baseline
from .machinery.features import LazyInputs, perturb
from .machinery.scoring import _ForwardMethod, forward_output
from .machinery.seeding import check_seed, make_generator, resolve_seed

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _spatial(x: torch.Tensor, method: str) -> tuple[int, ...]:
    """The spatial shape of ``x`` (N, C, *spatial); tabular inputs (N, D) count as one spatial dimension."""
    spatial = tuple(x.shape[2:]) if x.ndim >= 3 else tuple(x.shape[1:])
    if not 1 <= len(spatial) <= 3:
        raise ValueError(f"{method} needs inputs (N, D) or (N, C, *spatial) with 1-3 spatial dimensions, got {tuple(x.shape)}")
    return spatial


def _upsample(mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Interpolate masks ``(M, 1, *grid)`` to ``(M, 1, *size)`` (linear/bilinear/trilinear)."""
    return F.interpolate(mask, size=size, mode=_MODES[len(size)], align_corners=False)


def _present_shape(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masks ``(M, 1, *spatial)`` as presence broadcastable to a sample of ``x``."""
    return masks if x.ndim >= 3 else masks[:, 0]


@register
class RISE(_ForwardMethod):
    """Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018, Eq. 6 and Sec. 3.2).

    ``S = 1/(p·n) Σ_i f(b + M_i ⊙ (x - b)) M_i`` over n random smooth masks ``M_i``: binary grids of
    ``grid`` cells per spatial dimension, each cell kept with probability ``p``, upsampled (bilinear) to
    ``(grid + 1) · ⌈H/grid⌉`` and cropped at a random shift.

    Parameters
    ----------
    model : nn.Module
    masks : int
        Number n of random masks (the paper uses 4000-8000 for ImageNet models).
    grid : int
        Cells per spatial dimension of the low-resolution grid (paper: 7).
    p : float
        Probability of keeping a cell (paper: 0.5).
    baseline : number, tensor, "zero", "mean" or "blur"
        What masked-out regions show; the paper multiplies by the mask, i.e. ``"zero"`` (default).
    seed : int, optional
        Seed of the masks (private generator; ``None`` draws a fresh seed, reported in ``info["seed"]``).
    batch_size, progress
        As for every forward-only method.

    Notes
    -----
    Cost: ``N * (1 + masks)`` forward passes, no backward pass. The masks are shared by the samples of a
    batch and rebuilt chunk by chunk from their grids, so memory does not grow with ``masks``.
    """

    signed_map = False  # expected scores (all near the mean output), not relevances about zero
    not_for_token_ids = ("it blends inputs with smooth masks, which token ids cannot take; use Occlusion, LIME "
                         "or KernelSHAP for text")

    def __init__(self, model: nn.Module, masks: int = 2000, grid: int = 7, p: float = 0.5,
                 baseline: BaselineSpec = "zero", seed: int | None = None, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        super().__init__(model, batch_size, progress)
        check_positive(masks, "masks", integer=True)
        check_positive(grid, "grid", integer=True)
        if not (isinstance(p, (int, float)) and 0 < p < 1):
            raise ValueError(f"p must be a probability in (0, 1), got {p!r}")
        check_seed(seed)
        self.n_masks, self.grid, self.p, self.baseline, self.seed = masks, grid, float(p), baseline, seed

    def _draw(self, x: torch.Tensor, generator: torch.Generator):
        spatial = _spatial(x, "RISE")
        cells = [min(self.grid, s) for s in spatial]
        cell_size = [math.ceil(s / c) for s, c in zip(spatial, cells)]
        grids = torch.rand((self.n_masks, 1, *cells), generator=generator) < self.p
        shifts = torch.stack([torch.randint(0, c, (self.n_masks,), generator=generator) for c in cell_size], 1)
        up_size = tuple((c + 1) * s for c, s in zip(cells, cell_size))

        def masks(index: torch.Tensor) -> torch.Tensor:
            """Masks ``(m, 1, *spatial)`` for mask numbers ``index``."""
            up = _upsample(grids[index].to(x.device, x.dtype), up_size)
            for d, size in enumerate(spatial):
                dim = d + 2
                offset = (shifts[index, d].to(x.device)[:, None] + torch.arange(size, device=x.device)[None])
                view = [offset.shape[0]] + [1] * (up.ndim - 1)
                view[dim] = size
                expand = list(up.shape)
                expand[dim] = size
                up = up.gather(dim, offset.view(view).expand(expand))
            return up

        return masks

    def attribute(self, x, targets, output, args, kwargs):
        n, count = x.shape[0], self.n_masks
        seed = resolve_seed(self.seed)
        generator = make_generator(seed)
        masks = self._draw(x, generator)
        baseline = resolve_baseline(self.baseline, x)[:, None]

        def build(start: int, stop: int) -> torch.Tensor:
            rows = torch.arange(start, stop)
            return perturb(x, baseline, _present_shape(x, masks(rows % count)), rows // count)

        owner = torch.arange(n).repeat_interleave(count)
        scores = self.scores(LazyInputs(build, n * count, x), owner, targets, n, args, kwargs)
        scores = scores.view(n, count, -1).transpose(1, 2)  # (N, K, masks)
        saliency = None
        for start in range(0, count, 256):  # Σ_i score_i M_i, rebuilding the masks in groups
            index = torch.arange(start, min(count, start + 256))
            part = scores[..., index].to(x.dtype) @ masks(index).flatten(1)
            saliency = part if saliency is None else saliency + part
        saliency = saliency / (self.p * count)
        spatial = _spatial(x, "RISE")
        saliency = saliency.view(n, -1, *spatial)
        if x.ndim >= 3:
            saliency = saliency[:, :, None].expand(n, -1, *x.shape[1:])
        info = {"masks": count, "grid": self.grid, "p": self.p, "seed": seed, "baseline": describe_baseline(self.baseline)}
        return [(saliency[:, k].contiguous(), dict(info)) for k in range(len(targets))]


@register
class MeaningfulPerturbation(Method):
    """Meaningful Perturbation (Fong & Vedaldi, ICCV 2017, Eq. 3-4) and extremal perturbations (Fong, Patrick &
    Vedaldi, ICCV 2019, Eq. 7) by optimising a smooth mask with Adam.

    The perturbation blends the input with the baseline (default: the blurred input) under a mask ``m``
    upsampled from a ``mask_size`` grid: ``Φ(x, m) = b + m ⊙ (x - b)``.

    - ``area=None`` (Fong & Vedaldi 2017, deletion game): minimise
      ``E_τ[f_y(Φ(x(·-τ), m))] + l1 · mean|1 - m| + tv · mean|∇m|^β`` over ``m ∈ [0, 1]`` (projected Adam), with
      a random jitter τ of up to ``jitter`` elements per step. The attribution is ``1 - m``: what must be
      deleted to destroy the score.
    - ``area=a`` (Fong et al. 2019, preservation game with a fixed area): maximise ``E_τ[f_y(Φ(x(·-τ), m))]``
      subject to ``m`` keeping a fraction ``a`` of the input, enforced by the ranking penalty
      ``area_weight · mean(sort(m) - r_a)²`` (``r_a``: zeros then a fraction ``a`` of ones), whose weight grows
      geometrically from ``area_weight/1000`` to ``area_weight`` over the iterations. The attribution is ``m``.

    Parameters
    ----------
    model : nn.Module
    area : float in (0, 1), optional
        Fixed area of the extremal variant; ``None`` for the 2017 deletion game.
    iterations, lr : int, float
        Adam steps and step size (defaults 300 and 0.1).
    l1, tv, tv_beta : float
        Weights of the sparsity and total-variation terms and the TV exponent β (2017 variant; terms are means
        over the mask grid, so the weights do not depend on ``mask_size``).
    area_weight : float
        Final weight of the area penalty (extremal variant).
    mask_size : int
        Mask cells per spatial dimension (the 2017 paper optimises a 28×28 mask on 224×224 images).
    jitter : int
        Largest random shift τ (elements) per spatial dimension and step (paper: 4).
    baseline : number, tensor, "zero", "mean" or "blur"
        The perturbation's reference (default ``"blur"``, σ = 10 as in the paper).
    softmax : bool
        Score the softmax probability of the target (as in both papers) instead of the raw output.
    seed : int, optional
        Seed of the jitter (private generator).
    batch_size, progress
        Samples optimised together (``"auto"`` times chunk sizes), and a progress bar over the iterations.

    Notes
    -----
    Cost: ``iterations`` forward+backward passes per sample. Simplifications, stated honestly: the blur
    perturbation is a blend with one blurred image rather than a mask-dependent blur radius, and the
    extremal mask is smoothed by bilinear upsampling of a coarse grid instead of the paper's smooth max-pooling
    parametrisation.
    """

    def __init__(self, model: nn.Module, area: float | None = None, iterations: int = 300, lr: float = 0.1,
                 l1: float = 0.1, tv: float = 0.2, tv_beta: float = 3.0, area_weight: float = 100.0,
                 mask_size: int = 28, jitter: int = 4, baseline: BaselineSpec = "blur", softmax: bool = True,
                 seed: int | None = None, batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        if area is not None and not (isinstance(area, (int, float)) and 0 < area < 1):
            raise ValueError(f"area must be None or a fraction in (0, 1), got {area!r}")
        check_positive(iterations, "iterations", integer=True)
        check_positive(mask_size, "mask_size", integer=True)
        check_positive(jitter, "jitter", integer=True, allow_zero=True)
        for value, name in ((lr, "lr"), (tv_beta, "tv_beta"), (area_weight, "area_weight")):
            check_positive(value, name)
        for value, name in ((l1, "l1"), (tv, "tv")):
            check_positive(value, name, allow_zero=True)
        check_seed(seed)
        check_batch_size(batch_size)
        self.area, self.iterations, self.lr = area, iterations, float(lr)
        self.l1, self.tv, self.tv_beta, self.area_weight = float(l1), float(tv), float(tv_beta), float(area_weight)
        self.mask_size, self.jitter, self.baseline, self.softmax = mask_size, jitter, baseline, bool(softmax)
        self.seed, self.batch_size, self.progress = seed, batch_size, bool(progress)

    @property
    def name(self) -> str:
        return "MeaningfulPerturbation" if self.area is None else f"ExtremalPerturbation(area={self.area})"

    def _score(self, output: torch.Tensor, target: ResolvedTarget) -> torch.Tensor:
        if self.softmax and output.ndim == 2:
            output = output.softmax(1)
        return target.score(output)

    def _optimise(self, x, baseline, target: ResolvedTarget, args, kwargs, shifts: torch.Tensor):
        spatial = tuple(x.shape[2:])
        n, dims = x.shape[0], tuple(range(2, x.ndim))
        grid = tuple(min(self.mask_size, s) for s in spatial)
        start = 1.0 if self.area is None else 0.5
        param = torch.full((n, 1, *grid), start, dtype=x.dtype, device=x.device, requires_grad=True)
        optimiser = torch.optim.Adam([param], lr=self.lr)
        steps = range(self.iterations)
        bar = progress(steps, desc=self.name, unit="step", enabled=self.progress, leave=False)
        if self.area is not None:
            cells = math.prod(grid)
            ranks = torch.zeros(cells, dtype=x.dtype, device=x.device)
            ranks[cells - int(round(self.area * cells)):] = 1
        for step in bar:
            shift = tuple(int(s) for s in shifts[step])
            source, base = torch.roll(x, shift, dims), torch.roll(baseline, shift, dims)
            with torch.enable_grad():
                mask = _upsample(param, spatial)
                output = self.model(torch.lerp(base, source, mask), *args, **kwargs)
                score = self._score(output, target)
                if self.area is None:
                    diffs = [param.diff(dim=d).abs().pow(self.tv_beta).flatten(1).mean(1) for d in dims]
                    loss = score + self.l1 * (1 - param).abs().flatten(1).mean(1) + self.tv * sum(diffs)
                else:
                    weight = self.area_weight * 1000 ** (step / max(1, self.iterations - 1) - 1)
                    ranked = param.flatten(1).sort(1).values
                    loss = -score + weight * (ranked - ranks).pow(2).mean(1)
                (grad,) = torch.autograd.grad(loss.sum(), param)
            param.grad = grad
            optimiser.step()
            with torch.no_grad():
                param.clamp_(0, 1)
        bar.close()
        return param.detach()

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        if x.ndim < 3 or x.ndim > 5:
            raise ValueError(f"MeaningfulPerturbation needs inputs (N, C, *spatial) with 1-3 spatial dimensions, got {tuple(x.shape)}")
        x = x.detach()
        n = x.shape[0]
        baseline = resolve_baseline(self.baseline, x)
        output = forward_output(self.model, x, forward_args, forward_kwargs)
        resolved = resolve_target(target, output)
        seed = resolve_seed(self.seed)
        generator = make_generator(seed)
        shifts = torch.randint(0, self.jitter + 1, (self.iterations, x.ndim - 2), generator=generator)

        def run(start: int, stop: int) -> torch.Tensor:
            rows = torch.arange(start, stop)
            return self._optimise(
                x[start:stop], baseline[start:stop], resolved.select(rows), select_batch(forward_args, rows, n),
                select_batch(forward_kwargs, rows, n), shifts,
            )

        item_bytes = x[0].numel() * x.element_size()
        masks = torch.cat(chunked(run, n, self.batch_size, key=chunk_key(self, x), cap=max_chunk(item_bytes, x.device)))
        upsampled = _upsample(masks, tuple(x.shape[2:])).expand_as(x)
        attribution = (1 - upsampled if self.area is None else upsampled).contiguous()
        with torch.no_grad():
            kept = self._score(forward_output(self.model, torch.lerp(baseline, x, upsampled),
                                              forward_args, forward_kwargs), resolved)
        info = {"mask": masks, "score_perturbed": kept, "score": self._score(output, resolved), "seed": seed,
                "area": masks.flatten(1).mean(1), "baseline": describe_baseline(self.baseline)}
        return Explanation(attribution, resolved.index, output, self.name, info)
