"""Activation maximisation / feature visualisation: synthesise an input that maximally activates a unit
(Erhan et al. 2009; Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017).

The image is parameterised in a decorrelated space: a Fourier spectrum scaled by ``1/f`` (so every frequency
learns at a similar rate, Olah et al. 2017, "The Enemy of Feature Visualization"), mapped through a colour
decorrelation matrix (for 3 channels) and a sigmoid into the model's input range. Each step applies a random
jitter, scale and rotation (one affine resampling per image: "transformation robustness") and maximises the
objective with Adam. Objectives: a channel's mean activation, a neuron (one unit), a direction in the
channel space, or a class logit. Several objectives are optimised as one batch. Optionally start from a real
image (its exact parameters are found by inverting the parameterisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..deprecation import renamed
from ..errors import check_choice, check_positive
from ..layers import capture, find_layer
from ..modes import eval_semantics
from ..propagation.record import channel_axis
from ..results import ResultExport
from ..settings import CheckedSettings, checked_init

#: square root of the colour correlation of ImageNet photos (Olah et al. 2017): decorrelates RGB
COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
OBJECTIVES = ("channel", "neuron", "direction", "class")


@dataclass
class FeatureVisualisationResult(ResultExport):
    """Synthesised inputs ``images (K, *shape)`` and the objective per step ``history (steps + 1, K)``."""

    images: torch.Tensor
    history: torch.Tensor
    objective: str
    units: list

    def _rows(self) -> list[dict[str, Any]]:
        """One row per synthesised input: its unit and the objective at the start and at the end (the images
        themselves are tensors: ``.images``)."""
        return [{"objective": self.objective, "unit": plain_unit, "start": float(self.history[0, k]),
                 "end": float(self.history[-1, k])} for k, plain_unit in enumerate(self.units)]


class FourierImage(nn.Module):
    """A batch of images ``(K, C, H, W)`` in ``[low, high]`` from decorrelated, ``1/f``-scaled Fourier
    parameters."""

    @checked_init
    def __init__(self, batch: int, shape: Sequence[int], low: float, high: float, decorrelate: bool = True,
                 decay: float = 1.0, sd: float = 0.01, generator: torch.Generator | None = None) -> None:
        super().__init__()
        channels, h, w = shape
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freq = torch.sqrt(fy ** 2 + fx ** 2)
        self.register_buffer("scale", 1.0 / torch.clamp(freq, min=1.0 / max(h, w)) ** decay)
        self.shape, self.low, self.high = (channels, h, w), low, high
        colour = COLOUR_SQRT / COLOUR_SQRT.norm(dim=0).max() if decorrelate and channels == 3 else torch.eye(channels)
        self.register_buffer("colour", colour)
        spectrum = torch.randn(batch, channels, h, w // 2 + 1, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        _, h, w = self.shape
        image = torch.fft.irfft2(torch.view_as_complex(self.spectrum) * self.scale, s=(h, w), norm="ortho")
        image = torch.einsum("kchw,dc->kdhw", image, self.colour)
        return self.low + (self.high - self.low) * torch.sigmoid(image)

    @torch.no_grad()
    def start_from(self, images: torch.Tensor) -> None:
        """Set the parameters so that :meth:`forward` gives ``images`` (clipped just inside the range)."""
        _, h, w = self.shape
        unit = ((images - self.low) / (self.high - self.low)).clamp(1e-3, 1 - 1e-3)
        linear = torch.logit(unit)
        linear = torch.einsum("kdhw,cd->kchw", linear, torch.linalg.inv(self.colour))
        spectrum = torch.fft.rfft2(linear, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum.expand(self.spectrum.shape[0], -1, -1, -1)))


def random_affine(images: torch.Tensor, jitter: float, scales: tuple[float, float], degrees: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Jitter (fraction of the side), scale and rotate each image by one random affine resampling."""
    k = images.shape[0]
    angle = (torch.rand(k, generator=generator) * 2 - 1) * math.radians(degrees)
    scale = scales[0] + (scales[1] - scales[0]) * torch.rand(k, generator=generator)
    shift = (torch.rand(k, 2, generator=generator) * 2 - 1) * jitter * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


class FeatureVisualisation(CheckedSettings):
    """Synthesise inputs that maximise a unit of a layer (or a class logit).

    Parameters
    ----------
    model : nn.Module
    layer : str or None
        The layer whose unit is maximised (``None`` with ``objective="class"``: the model output).
    shape : sequence of int
        The input shape without the batch, ``(C, H, W)`` (any channel count and size).
    objective : "channel", "neuron", "direction" or "class"
        ``channel``: mean activation of a channel; ``neuron``: the channel's unit at the centre (or at
        ``position``); ``direction``: mean over positions of ``⟨a, v⟩`` for a vector ``v`` over the
        channels; ``class``: the logit of a class.
    steps, lr : int, float
        Adam steps and learning rate.
    low, high : float
        The input range (EfficientNet-Lite0: -1, 1).
    decorrelate : bool
        Colour decorrelation (3 channels) and ``1/f`` frequency scaling; without it, a pixel image.
    jitter, scales, degrees : float, (float, float), float
        Random translation (fraction of the side), scale range and rotation range per step.
    axis : int or "auto"
        Channel axis of the layer output.
    seed : int
    """

    def __init__(self, model: nn.Module, layer: str | None, shape: Sequence[int], objective: str = "channel",
                 steps: int = 128, lr: float = 0.05, low: float = -1.0, high: float = 1.0,
                 decorrelate: bool = True, jitter: float = 0.05, scales: tuple[float, float] = (0.9, 1.1),
                 degrees: float = 10.0, axis: int | str = "auto", position: Sequence[int] | None = None,
                 seed: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_choice(objective, "objective", OBJECTIVES)
        if layer is None and objective != "class":
            raise ValueError(f"layer is required for objective {objective!r} (None only for 'class')")
        self.module = None if layer is None else find_layer(model, layer)[1]
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"shape must be (channels, height, width) of positive ints, got {shape!r}")
        check_positive(steps, "steps", integer=True, allow_zero=True)
        check_positive(lr, "lr")
        if not high > low:
            raise ValueError(f"high must be larger than low, got low={low}, high={high}")
        self.model, self.layer, self.shape, self.objective = model, layer, shape, objective
        self.steps, self.lr, self.low, self.high, self.decorrelate = steps, lr, low, high, decorrelate
        self.jitter, self.scales, self.degrees, self.axis = jitter, tuple(scales), degrees, axis
        self.position, self.seed = position, seed

    def __call__(self, units: Sequence[Any] | int, start: torch.Tensor | None = None) -> FeatureVisualisationResult:
        """One synthesised input per unit: channel/class indices, or direction vectors for ``"direction"``."""
        units = [units] if isinstance(units, int) or (isinstance(units, torch.Tensor) and units.ndim == 1
                                                     and self.objective == "direction") else list(units)
        if not units:
            raise ValueError("units must name at least one channel, class or direction")
        g = torch.Generator().manual_seed(self.seed)
        device = next(self.model.parameters()).device
        image = FourierImage(len(units), self.shape, self.low, self.high, self.decorrelate, generator=g).to(device)
        if start is not None:
            if start.shape[-3:] != self.shape:
                raise ValueError(f"start must be an image of shape {self.shape}, got {tuple(start.shape)}")
            image.start_from(start.reshape(-1, *self.shape).to(device))
        optimiser = torch.optim.Adam(image.parameters(), lr=self.lr)
        history = []
        params = list(image.parameters())
        for step in range(self.steps + 1):
            with torch.enable_grad():
                x = image()
                if step < self.steps:
                    x = random_affine(x, self.jitter, self.scales, self.degrees, g)
                value = self._objective(x, units)
            history.append(value.detach())
            if step == self.steps:
                break
            # gradients of the image parameters only: the model's .grad fields are not touched
            grads = torch.autograd.grad(-value.sum(), params)
            for p, grad in zip(params, grads):
                p.grad = grad
            optimiser.step()
        with torch.no_grad():
            final = image()
        return FeatureVisualisationResult(final.detach(), torch.stack(history), self.objective, units)

    def score(self, x: torch.Tensor, units: Sequence[Any]) -> torch.Tensor:
        """The objective of each unit on inputs ``x`` (K, *shape) (e.g. to compare with real images)."""
        with torch.no_grad():
            return self._objective(x, list(units))

    def _objective(self, x: torch.Tensor, units: list) -> torch.Tensor:
        with eval_semantics(self.model):
            return self._evaluate(x, units)

    def _evaluate(self, x: torch.Tensor, units: list) -> torch.Tensor:
        if self.objective == "class":
            out = self.model(x)
            out = out.logits if hasattr(out, "logits") else out
            index = torch.as_tensor(units, device=out.device)
            if int(index.max()) >= out.shape[-1] or int(index.min()) < 0:
                raise ValueError(f"units: class out of range for {out.shape[-1]} outputs")
            return out.gather(1, index[:, None])[:, 0]
        with capture(self.model, self.module, stop=True) as captured:  # the rest of the model is not needed
            self.model(x)
        out, mod = captured[-1], self.module
        axis = channel_axis(mod, out.ndim) if self.axis == "auto" else self.axis % out.ndim
        a = out.movedim(axis, 1)  # (K, C, ...)
        if self.objective == "direction":
            v = torch.stack([torch.as_tensor(u, dtype=a.dtype, device=a.device) for u in units])
            if v.shape[1] != a.shape[1]:
                raise ValueError(f"units: direction of length {v.shape[1]} for {a.shape[1]} channels")
            return torch.einsum("kc...,kc->k...", a, v).reshape(a.shape[0], -1).mean(1)
        index = torch.as_tensor(units, device=a.device)
        if int(index.max()) >= a.shape[1] or int(index.min()) < 0:
            raise ValueError(f"units: channel out of range; layer {self.layer!r} has {a.shape[1]} channels")
        chosen = a[torch.arange(a.shape[0]), index]  # (K, ...)
        if self.objective == "channel":
            return chosen.reshape(a.shape[0], -1).mean(1)
        spatial = chosen.shape[1:]
        where = tuple(self.position) if self.position is not None else tuple(s // 2 for s in spatial)
        return chosen[(slice(None), *where)]


__getattr__ = renamed(__name__, {"Visualisation": "FeatureVisualisationResult"}, globals())
