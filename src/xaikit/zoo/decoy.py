"""Data sets with a known shortcut, for the tools of :mod:`xaikit.improve` (all offline, generated from a seed).

- :func:`make_decoy_digits`: scikit-learn's 8×8 digits on a 12×12 canvas with a 2×2 "decoy" patch in a random
  corner whose grey level encodes the class in training and is random at test time (Decoy MNIST, Ross et al.
  IJCAI 2017, sec. 4.2). A model that reads the patch is right for the wrong reason; the patch masks are the
  "wrong reason" annotations of right-for-the-right-reasons training.
- :func:`make_watermark_shapes`: the shapes set of :mod:`.groundtruth` with a watermark (a small bright
  checker pattern in the lower right corner) on a fraction of one class's images (a class artifact as in
  Anders et al. Inf. Fusion 2022); :func:`add_watermark` poisons test images with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .groundtruth import ShapesData, make_shapes
from .rows import Rows

#: canvas side of the decoy digits and the decoy patch side
DECOY_SIZE, PATCH = 12, 2


@dataclass
class DecoyData(Rows):
    """Images ``x`` (N, 1, 12, 12) in [0, 1], labels ``y`` (N,), decoy-patch masks ``mask`` (N, 1, 12, 12)."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor


def make_decoy_digits(seed: int = 0, n_train: int = 1000, decoy: bool = True) -> tuple[DecoyData, DecoyData]:
    """Decoy digits: ``(train, test)`` from scikit-learn's 1,797 digits, split at random by ``seed``.

    Each 8×8 digit (scaled to [0, 1]) sits in the middle of a 12×12 canvas. A 2×2 patch fills a corner chosen at
    random per image; in training its grey level is ``1 − 0.09·y`` (the class, exactly), at test time a random
    level of another class's value, so reading it is wrong at test time (Ross et al. 2017: Decoy MNIST).
    ``decoy=False`` gives the same images without any patch (the clean reference).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    n = images.shape[0]
    if not 0 < n_train < n:
        raise ValueError(f"n_train must be between 1 and {n - 1}, got {n_train}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    canvas = torch.zeros(n, 1, DECOY_SIZE, DECOY_SIZE)
    offset = (DECOY_SIZE - 8) // 2
    canvas[:, 0, offset:offset + 8, offset:offset + 8] = images
    corner = torch.randint(0, 4, (n,), generator=g)
    rows = torch.where(corner // 2 == 0, 0, DECOY_SIZE - PATCH)
    cols = torch.where(corner % 2 == 0, 0, DECOY_SIZE - PATCH)
    grid = torch.arange(DECOY_SIZE)
    in_rows = (grid[None] >= rows[:, None]) & (grid[None] < rows[:, None] + PATCH)
    in_cols = (grid[None] >= cols[:, None]) & (grid[None] < cols[:, None] + PATCH)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[order[:n_train]] = True
    shift = torch.randint(1, 10, (n,), generator=g)  # test: the level of another class
    level_class = torch.where(is_train, labels, (labels + shift) % 10)
    level = (1.0 - 0.09 * level_class.float()).view(n, 1, 1, 1)
    if decoy:
        canvas = torch.where(mask, level, canvas)
    data = DecoyData(canvas, labels, mask)
    return data[order[:n_train]], data[order[n_train:]]


#: the watermark: a 4×4 checker of +1/−1 in the lower right corner, 1 pixel from the border
_MARK = 4


def watermark_mask(size: int = 32) -> torch.Tensor:
    """Where the watermark is drawn, ``(size, size)`` bool."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[size - 1 - _MARK:size - 1, size - 1 - _MARK:size - 1] = True
    return mask


def add_watermark(x: torch.Tensor) -> torch.Tensor:
    """Images ``x`` (N, 3, S, S) with the watermark drawn on them (a new tensor)."""
    size = x.shape[-1]
    checker = (torch.arange(_MARK)[:, None] + torch.arange(_MARK)[None]) % 2 * 2.0 - 1.0
    out = x.clone()
    out[..., size - 1 - _MARK:size - 1, size - 1 - _MARK:size - 1] = checker
    return out


@dataclass
class WatermarkData(ShapesData):
    """:class:`~xaikit.zoo.ShapesData` with ``artifact`` (N,) bool: which images carry the watermark."""

    artifact: torch.Tensor = None  # type: ignore[assignment]


def make_watermark_shapes(n: int = 512, size: int = 32, classes: int = 4, artifact_class: int = 0,
                          fraction: float = 0.5, seed: int = 0) -> WatermarkData:
    """The shapes set (:func:`~xaikit.zoo.make_shapes`) with the watermark on ``fraction`` of the images of
    ``artifact_class`` (chosen at random by ``seed``): a Clever-Hans shortcut for that class."""
    if not 0 <= artifact_class < classes:
        raise ValueError(f"artifact_class must be between 0 and {classes - 1}, got {artifact_class}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    data = make_shapes(n, size, classes, seed)
    g = torch.Generator().manual_seed(seed + 7919)
    artifact = (data.y == artifact_class) & (torch.rand(n, generator=g) < fraction)
    x = torch.where(artifact.view(-1, 1, 1, 1), add_watermark(data.x), data.x)
    return WatermarkData(x, data.y, data.mask, artifact)


def train_decoy_mlp(seed: int = 0, epochs: int = 20, hidden: int = 64, lr: float = 1e-2,
                    data: DecoyData | None = None) -> torch.nn.Module:
    """A 144-``hidden``-10 MLP trained plainly (Adam, cross entropy, minibatches of 100) on the decoy digits'
    training set of ``seed`` (or ``data``): a Clever-Hans model that reads the decoy patch, the starting point
    of explanatory interactive learning (:class:`xaikit.improve.revise.Revise`). Returned in eval mode."""
    import torch.nn.functional as F
    from torch import nn

    train = make_decoy_digits(seed)[0] if data is None else data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(DECOY_SIZE * DECOY_SIZE, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=g)
        for start in range(0, len(train), 100):
            idx = order[start:start + 100]
            loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()
