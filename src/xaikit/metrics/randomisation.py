"""Randomisation: does the explanation change when the model's parameters (or the explained class) change?

Parameters are randomised on a deep copy of the model (together with the method, so that the method explains
the copy); the user's model is never touched. Each layer draws its new values from its own generator stream,
seeded by ``(seed, layer index)``, so layers of the same shape never receive identical weights. Every
parameter tensor of a randomised layer is redrawn from a Gaussian with the trained tensor's mean and standard
deviation (a weight tensor without spread uses the fan-in scale 1/√fan_in), which keeps activations at their
trained scale. Normalisation layers (BatchNorm, LayerNorm, GroupNorm) are left as trained unless
``include_norm=True``, and then only their affine parameters are redrawn: their running statistics are never
reset.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import check_choice, check_positive, unknown_module
from ..methods.base import Method
from ..methods.machinery.baselines import gaussian_blur
from ..methods.machinery.seeding import make_generator
from ..progress import nested
from .base import Case, Metric, MetricResult, pearson, register, spearman
from .pixels import to_pixels

__all__ = ["MPRT", "SmoothMPRT", "EfficientMPRT", "RandomLogit", "SIMILARITIES", "randomisable_layers",
           "randomise_layer", "similarity"]

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
SIMILARITIES = ("spearman", "spearman_abs", "pearson", "cosine", "ssim")


def randomisable_layers(model: nn.Module, include_norm: bool = False) -> list[str]:
    """Names of the modules that own parameters, in registration (usually forward) order."""
    return [name for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))
            and (include_norm or not isinstance(module, NORMS))]


def _stream(seed: int, index: int) -> torch.Generator:
    """An independent generator for layer ``index`` (NumPy SeedSequence entropy mixing of (seed, index))."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def randomise_layer(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of ``module`` (not its buffers) from N(mean, std) of its trained values."""
    for param in module.parameters(recurse=False):
        values = param.detach()
        std = float(values.float().std()) if values.numel() > 1 else float(values.abs().mean())
        if std == 0 and values.ndim >= 2:
            std = 1 / math.sqrt(max(1, values[0].numel()))
        mean = float(values.float().mean())
        draw = torch.randn(values.shape, generator=generator, dtype=torch.float32) * std + mean
        param.copy_(draw.to(param.dtype).to(param.device))


def _ssim(a: torch.Tensor, b: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of per-sample min-max normalised 2-D maps, Gaussian window σ=1.5."""
    def scaled(v):
        low, high = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
        return ((v - low) / (high - low).clamp_min(1e-30)).reshape(-1, 1, *spatial)

    if len(spatial) != 2:
        raise ValueError(f"similarity='ssim' needs 2-D maps, got spatial shape {spatial}")
    x, y = scaled(a), scaled(b)
    sigma = 1.5 if min(spatial) >= 11 else max(0.5, min(spatial) / 8)
    blur = lambda v: gaussian_blur(v, sigma)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return ssim.flatten(1).mean(1)


def similarity(kind: str, a: torch.Tensor, b: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Per-sample similarity of pixel relevance maps ``(N, P)``."""
    if kind == "spearman":
        return spearman(a, b)
    if kind == "spearman_abs":
        return spearman(a.abs(), b.abs())
    if kind == "pearson":
        return pearson(a, b)
    if kind == "cosine":
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    return _ssim(a, b, spatial)


class _Randomisation(Metric):
    family = "randomisation"
    needs_method = True
    higher_is_better = False

    def _similarity(self, case: Case, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return similarity(self.similarity, to_pixels(a, case.layout), to_pixels(b, case.layout), case.layout.spatial)

    def _clone(self, case: Case) -> tuple[nn.Module, Method]:
        """Deep copies of the model and the method, sharing the copied model as the method's model does."""
        own = {id(p) for p in case.model.parameters()}
        if own and not own & {id(p) for p in case.method.model.parameters()}:
            raise ValueError("the method explains a different model than the one passed to the metric; build the "
                             "method on this model (e.g. xk.Gradient(model))")
        return copy.deepcopy((case.model, case.method))

    def _explain(self, case: Case, method: Method) -> torch.Tensor:
        """The (smoothed, where ``samples > 1``) attribution of the batch by ``method``."""
        rows = torch.arange(case.n, device=case.x.device)
        if self.samples <= 1:
            return case.explain(case.x, rows, method)
        x = case.x
        dims = tuple(range(1, x.ndim))
        spread = (x.amax(dims, keepdim=True) - x.amin(dims, keepdim=True))
        draw = torch.randn(self.samples, *x.shape[1:], generator=make_generator(self.seed), dtype=x.dtype).to(x.device)
        inputs = (x[:, None] + self.noise * spread[:, None] * draw[None]).reshape(-1, *x.shape[1:])
        owner = rows.repeat_interleave(self.samples)
        attribution = case.explain(inputs, owner, method)
        return attribution.reshape(case.n, self.samples, *attribution.shape[1:]).mean(1)


@register
class MPRT(_Randomisation):
    """Model parameter randomisation test (Adebayo et al. 2018).

    Layers (modules with parameters, see :func:`randomisable_layers`; or the names in ``layers``) are
    randomised ``"top_down"`` (from the output) or ``"bottom_up"``, ``"cascading"`` (each stage keeps the
    earlier randomisations) or ``"independent"`` (one layer at a time). After each stage the batch is explained
    again and compared with the original explanation by ``similarity`` (``"spearman"`` rank correlation,
    ``"spearman_abs"``, ``"pearson"``, ``"cosine"`` or ``"ssim"``) on pixel relevance. The curve holds the
    similarity per stage (first column: the unrandomised model, ``info["layers"]`` the stage names); the score is
    its mean over the randomised stages. An explanation that depends on the model changes: lower is better.
    """

    needs_module = "it randomises the model's layers"

    def __init__(self, order: str = "top_down", mode: str = "cascading", similarity: str = "spearman",
                 layers: Sequence[str] | None = None, include_norm: bool = False, samples: int = 1,
                 noise: float = 0.0, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_choice(order, "order", ("top_down", "bottom_up"))
        check_choice(mode, "mode", ("cascading", "independent"))
        check_choice(similarity, "similarity", SIMILARITIES)
        check_positive(samples, "samples", integer=True)
        check_positive(noise, "noise", allow_zero=True)
        if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
            raise TypeError("layers must be a sequence of module names")
        self._common(batch_size, False, seed)
        self.order, self.mode, self.similarity = order, mode, similarity
        self.layers, self.include_norm, self.samples, self.noise = layers, bool(include_norm), samples, noise

    has_curve = True

    def stages(self, model: nn.Module) -> list[str]:
        """The layer names in the order they are randomised."""
        available = randomisable_layers(model, self.include_norm)
        names = available if self.layers is None else list(self.layers)
        every = randomisable_layers(model, True)
        unknown = [n for n in names if n not in every]
        if unknown:
            raise unknown_module("layers", unknown[0], available, "is not a layer with parameters of the model")
        if not names:
            raise ValueError("the model has no layer with parameters to randomise")
        return list(reversed(names)) if self.order == "top_down" else names

    def compute(self, case: Case) -> MetricResult:
        names = self.stages(case.model)
        index = {name: i for i, name in enumerate(randomisable_layers(case.model, True))}
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2 ** 31, (1,)))
        model, method = self._clone(case)
        modules = dict(model.named_modules())  # names checked by stages(); "" is a model owning parameters
        original = case.attribution if self.samples <= 1 else self._explain(case, case.method)
        columns = [self._similarity(case, original, original)]
        # one explanation of the batch per stage: shown (and forecast from the first stage) inside a command
        with nested(len(names), f"{self.name} stages", "layer") as bar:
            for stage, name in enumerate(names):
                module = modules[name]
                saved = {k: v.detach().clone() for k, v in module.named_parameters(recurse=False)}
                randomise_layer(module, _stream(seed, index[name]))
                columns.append(self._similarity(case, original, self._explain(case, method)))
                if self.mode == "independent":
                    with torch.no_grad():
                        for k, v in module.named_parameters(recurse=False):
                            v.copy_(saved[k])
                bar.update(1)
                if stage == 0:
                    bar.estimate(f"{self.name} on {case.n} sample(s), {len(names)} layers", bar.elapsed * len(names))
        curve = torch.stack(columns, 1)
        return MetricResult(curve[:, 1:].nanmean(1), curve, {"layers": ["original", *names]})


@register
class SmoothMPRT(MPRT):
    """Smooth MPRT (Hedström et al. 2023): MPRT on explanations averaged over ``samples`` noisy copies of the
    input (Gaussian noise, std ``noise`` × the sample's range), which removes the noise that otherwise
    dominates the similarity. Lower is better."""

    def __init__(self, order: str = "top_down", mode: str = "cascading", similarity: str = "spearman",
                 layers: Sequence[str] | None = None, include_norm: bool = False, samples: int = 20,
                 noise: float = 0.1, batch_size: int | str = "auto", seed: int | None = 0) -> None:
        super().__init__(order, mode, similarity, layers, include_norm, samples, noise, batch_size, seed)


@register
class EfficientMPRT(_Randomisation):
    """Efficient MPRT (Hedström et al. 2023): randomise all layers at once and measure the rise in explanation
    complexity, H(R(f̂, x)) / H(R(f, x)), with H the entropy of the histogram (``bins`` bins) of pixel
    relevance. A faithful explanation of a random model becomes noisier: higher is better."""

    needs_module = "it randomises the model's layers"

    higher_is_better = True

    def __init__(self, bins: int = 100, include_norm: bool = False, batch_size: int | str = "auto",
                 seed: int | None = 0) -> None:
        check_positive(bins, "bins", integer=True)
        self._common(batch_size, False, seed)
        self.bins, self.include_norm, self.samples = bins, bool(include_norm), 1

    def entropy(self, pixels: torch.Tensor) -> torch.Tensor:
        """Entropy of the per-sample histogram of ``pixels`` (N, P) over its own range."""
        low, high = pixels.amin(1, keepdim=True), pixels.amax(1, keepdim=True)
        scaled = (pixels - low) / (high - low).clamp_min(1e-30)
        bins = (scaled * self.bins).long().clamp(0, self.bins - 1)
        counts = torch.zeros(pixels.shape[0], self.bins, device=pixels.device).scatter_add_(1, bins, torch.ones_like(scaled))
        share = counts / pixels.shape[1]
        return -torch.special.xlogy(share, share).sum(1)

    def compute(self, case: Case) -> MetricResult:
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2 ** 31, (1,)))
        model, method = self._clone(case)
        modules = dict(model.named_modules())
        for i, name in enumerate(randomisable_layers(case.model, True)):
            if name in randomisable_layers(case.model, self.include_norm):
                randomise_layer(modules[name], _stream(seed, i))
        before = self.entropy(to_pixels(case.attribution, case.layout))
        after = self.entropy(to_pixels(self._explain(case, method), case.layout))
        return MetricResult(after / before, info={"entropy_before": before, "entropy_after": after})


@register
class RandomLogit(_Randomisation):
    """Random logit test (Sixt et al. 2020): the similarity between the explanation of the target class and of
    another class, (target + r) mod K with r drawn from {1, ..., K−1} once per call. An explanation that is
    class-specific differs: lower is better."""

    def __init__(self, similarity: str = "ssim", batch_size: int | str = "auto", seed: int | None = 0) -> None:
        check_choice(similarity, "similarity", SIMILARITIES)
        self._common(batch_size, False, seed)
        self.similarity, self.samples = similarity, 1

    def compute(self, case: Case) -> MetricResult:
        classes = case.output.flatten(1).shape[1]
        if classes < 2:
            raise ValueError("RandomLogit needs a model output with at least two classes")
        if case.target.index.lt(0).any():
            raise ValueError("RandomLogit needs class-index targets (not a callable)")
        offset = int(torch.randint(1, classes, (1,), generator=make_generator(self.seed)))
        other = (case.target.index + offset) % classes
        rows = torch.arange(case.n, device=case.x.device)
        again = case.explain(case.x, rows, target=other)
        return MetricResult(self._similarity(case, case.attribution, again), info={"other": other})
