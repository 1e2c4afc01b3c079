"""Small models on real tabular data: a tanh MLP on scikit-learn's wine data set (13 features, 3 classes) and a
ReLU MLP on its digits (8×8 images as 64 features, 10 classes)."""
from __future__ import annotations

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
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(epochs):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
    finally:
        torch.random.set_rng_state(generator_state)
    for p in model.parameters():
        p.grad = None
    return model.eval(), x, y
