"""A localisation data set with known object masks, and a small CNN that learns it in seconds on a CPU.

Each image shows one object on a textured background (random colour gratings plus pixel noise). The class
is the object's *shape* (disk, square, triangle, cross); position, size and colour are random, so a model
must look at the object to classify it, and its mask is the ground truth for localisation metrics.
Everything is generated from a seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .rows import Rows

#: object shapes, one class each
SHAPES = ("disk", "square", "triangle", "cross")


@dataclass
class ShapesData(Rows):
    """Images ``x`` (N, 3, S, S) in [-1, 1], labels ``y`` (N,) and object masks ``mask`` (N, S, S) bool."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    def astuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, mask)``, the ``data`` argument of :func:`xaikit.metrics.benchmark`."""
        return self.x, self.y, self.mask


def _shape_masks(kind: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, radius: torch.Tensor, size: int) -> torch.Tensor:
    """Masks (N, S, S) of the shapes centred at (cy, cx) with half-size ``radius`` (all as (N,) tensors)."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dy = grid.view(1, -1, 1) - cy.view(-1, 1, 1)
    dx = grid.view(1, 1, -1) - cx.view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    disk = dy ** 2 + dx ** 2 <= r ** 2
    square = (dy.abs() <= 0.8 * r) & (dx.abs() <= 0.8 * r)
    triangle = (dy <= 0.8 * r) & (dy >= -r) & (dx.abs() <= (dy + r) / 1.8 * 1.0)
    cross = ((dy.abs() <= 0.3 * r) & (dx.abs() <= r)) | ((dx.abs() <= 0.3 * r) & (dy.abs() <= r))
    shapes = torch.stack([disk, square, triangle, cross], 1)  # (N, 4, S, S)
    return shapes.gather(1, kind.view(-1, 1, 1, 1).expand(-1, 1, size, size))[:, 0]


def make_shapes(n: int = 512, size: int = 32, classes: int = 4, seed: int = 0) -> ShapesData:
    """Generate ``n`` images of ``size`` × ``size`` pixels with one object each, balanced over ``classes`` shapes.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Side length in pixels (at least 16).
    classes : int
        Number of shape classes (2 to 4, in the order of :data:`SHAPES`).
    seed : int
        Seed of every random choice (same seed, same data).
    """
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be between 2 and {len(SHAPES)}, got {classes}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    radius = size * (0.16 + 0.1 * torch.rand(n, generator=g))
    cy = radius + (size - 2 * radius) * torch.rand(n, generator=g)
    cx = radius + (size - 2 * radius) * torch.rand(n, generator=g)
    mask = _shape_masks(y, cy, cx, radius, size)
    # background: two colour gratings with random frequency, orientation and phase, plus pixel noise
    coords = torch.arange(size, dtype=torch.float32)
    background = torch.zeros(n, 3, size, size)
    for _ in range(2):
        angle = math.pi * torch.rand(n, generator=g)
        frequency = 2 * math.pi * (1 + 3 * torch.rand(n, generator=g)) / size
        phase = 2 * math.pi * torch.rand(n, generator=g)
        wave = torch.sin(frequency.view(-1, 1, 1) * (coords.view(1, -1, 1) * torch.sin(angle).view(-1, 1, 1)
                         + coords.view(1, 1, -1) * torch.cos(angle).view(-1, 1, 1)) + phase.view(-1, 1, 1))
        colour = torch.rand(n, 3, generator=g) - 0.5
        background += 0.35 * colour.view(n, 3, 1, 1) * wave[:, None]
    background += 0.1 * torch.randn(n, 3, size, size, generator=g) - 0.4
    colour = 0.3 + 0.7 * torch.rand(n, 3, generator=g)  # a bright object of random hue on a darker background
    x = torch.where(mask[:, None], colour.view(n, 3, 1, 1) + 0.05 * torch.randn(n, 3, size, size, generator=g),
                    background)
    return ShapesData(x.clamp(-1, 1), y, mask)


class ShapesCNN(nn.Module):
    """A small CNN for :func:`make_shapes`: conv–BN–ReLU, conv–ReLU, pool, two conv–ReLU–pool stages,
    global average pooling and a linear head."""

    def __init__(self, classes: int = 4, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * w, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def train_shapes_model(data: ShapesData | None = None, epochs: int = 8, batch_size: int = 32, lr: float = 0.01,
                       width: int = 8, seed: int = 0, verbose: bool = False) -> nn.Module:
    """Train a :class:`ShapesCNN` on ``data`` (default: ``make_shapes(1024, seed=seed)``) with Adam and a
    one-cycle learning rate.

    Returns the model in eval mode; ``model.train_info`` holds the training accuracy per epoch and the time.
    With the defaults it classifies held-out images (``make_shapes(512, seed=1)``) almost perfectly.
    Training runs in one thread (the caller's thread count is restored): a multi-threaded convolution sums in
    an order that depends on the thread count, so the weights would differ between machines.
    """
    data = data if data is not None else make_shapes(1024, seed=seed)
    classes = int(data.y.max()) + 1
    torch_state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        model = ShapesCNN(classes, width)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=lr, total_steps=epochs * math.ceil(len(data) / batch_size))
        g = torch.Generator().manual_seed(seed)
        history = []
        began = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(data), generator=g)
            correct = 0
            for start in range(0, len(data), batch_size):
                idx = order[start: start + batch_size]
                logits = model(data.x[idx])
                loss = nn.functional.cross_entropy(logits, data.y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                scheduler.step()
                correct += int((logits.argmax(1) == data.y[idx]).sum())
            history.append(correct / len(data))
            if verbose:
                print(f"epoch {epoch + 1}: train accuracy {history[-1]:.3f}")
    finally:
        torch.random.set_rng_state(torch_state)
        torch.set_num_threads(threads)
    model.eval()
    for p in model.parameters():
        p.grad = None
    model.train_info = {"accuracy": history, "time_s": time.perf_counter() - began}
    return model


#: weights of ``train_shapes_model(seed=0)`` shipped with the package (``python -m xaikit.zoo.groundtruth``
#: writes them again)
BUNDLED_WEIGHTS = Path(__file__).with_name("weights") / "shapes_cnn_seed0.pt"


def load_shapes_model(seed: int = 0) -> nn.Module:
    """The :class:`ShapesCNN` of ``train_shapes_model(seed=seed)``: the shipped weights for seed 0 (no training,
    the same numbers on every machine), trained on the spot (seconds, deterministic) for other seeds."""
    if seed != 0:
        return train_shapes_model(seed=seed)
    model = ShapesCNN(len(SHAPES))
    model.load_state_dict(torch.load(BUNDLED_WEIGHTS, weights_only=True))
    return model.eval()


def accuracy(model: nn.Module, data: ShapesData) -> float:
    """Accuracy of ``model`` on ``data``."""
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).float().mean())


if __name__ == "__main__":  # re-create the shipped weights
    BUNDLED_WEIGHTS.parent.mkdir(exist_ok=True)
    torch.save(train_shapes_model(seed=0, verbose=True).state_dict(), BUNDLED_WEIGHTS)
    print(f"wrote {BUNDLED_WEIGHTS}")
