"""Small models on real tabular data: a tanh MLP on scikit-learn's wine data set (13 features, 3 classes) and a
ReLU MLP on its digits (8×8 images as 64 features, 10 classes)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def train_wine_mlp(seed: int = 0, epochs: int = 200) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Train a 13-32-32-3 tanh MLP on standardised wine data (full-batch Adam, about 1 s on a CPU).

    Returns ``(model, x, y)``: the model in eval mode and the standardised features (mean 0, so a zero
    baseline is the data mean) with their labels.
    """
    from sklearn.datasets import load_wine

    data = load_wine()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    x = (x - x.mean(0)) / x.std(0)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(13, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval(), x, y


def train_digits_mlp(seed: int = 0, epochs: int = 300, hidden: int = 32) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Train a 64-``hidden``-10 ReLU MLP on scikit-learn's digits (8×8 images, 10 classes; full-batch Adam,
    about a second on a CPU).

    Returns ``(model, x, y)``: the model in eval mode, the pixels scaled to [0, 1] as ``(1797, 64)`` (0 is the
    blank background, the "absent" value of a pertinent positive) and the labels.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    model = _fit_full_batch(lambda: nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)),
                            lambda model: nn.functional.cross_entropy(model(x), y), epochs, seed)
    return model, x, y


def _fit_full_batch(build: Callable[[], nn.Module], loss: Callable[[nn.Module], torch.Tensor], epochs: int,
                    seed: int) -> nn.Module:
    """``build()`` a model and fit it full-batch with Adam (lr 0.01) under ``seed``; the caller's random state is
    left as it was and no gradient stays behind. Returns the model in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(epochs):
            optimiser.zero_grad()
            loss(model).backward()
            optimiser.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


class BlockAdditive(nn.Module):
    """``f(x) = Σ_b g_b(x[:, block_b])``: a sum of small tanh MLPs on overlapping blocks of features.

    Each ``g_b`` interacts its features at every order, yet the model's Shapley values are exact and cheap: the
    Shapley value is linear in the game, so φ is the sum over blocks of the exact values of each block
    (``2^|block|`` coalitions): :meth:`exact_shapley`.
    """

    def __init__(self, features: int, block: int = 8, stride: int = 4, hidden: int = 16) -> None:
        super().__init__()
        starts = range(0, features, stride)
        self.blocks = [torch.tensor([(s + k) % features for k in range(block)]) for s in starts]
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(block, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            for _ in self.blocks
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(net(x[:, index]) for net, index in zip(self.nets, self.blocks))

    def exact_shapley(self, x: torch.Tensor, baseline: torch.Tensor | None = None) -> torch.Tensor:
        """Exact Shapley values ``(N, D)`` of output 0 for the baseline (default 0), block by block."""
        from ..methods.shapley import ExactShapley

        baseline = torch.zeros_like(x[:1]) if baseline is None else baseline
        phi = torch.zeros(x.shape, dtype=torch.float64)
        for net, index in zip(self.nets, self.blocks):
            part = ExactShapley(net, baseline=baseline[:, index])(x[:, index], target=0)
            phi.index_add_(1, index, part.info["feature_attribution"].double())
        return phi


def train_cancer_blocks(seed: int = 0, epochs: int = 300) -> tuple[BlockAdditive, torch.Tensor, torch.Tensor]:
    """A :class:`BlockAdditive` log-odds model on standardised breast-cancer data (30 features, 8 overlapping
    blocks of 8), trained full-batch with Adam (about 1 s). Returns ``(model, x, y)`` like :func:`train_wine_mlp`."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    model = _fit_full_batch(lambda: BlockAdditive(x.shape[1]),
                            lambda model: nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y), epochs,
                            seed)
    return model, x, y
