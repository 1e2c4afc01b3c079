"""Small reference architectures for the tests (no torchvision): MLP, VGG-like, ResNet-like with BatchNorm
and residual additions, a DenseNet-like block with concatenation."""
from __future__ import annotations

import torch
from torch import nn


def mlp(bias: bool = True, inputs: int = 8, hidden: int = 16, classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, hidden, bias=bias), nn.ReLU(),
        nn.Linear(hidden, classes, bias=bias),
    )


def vgg_like(bias: bool = True, classes: int = 5, width: int = 8) -> nn.Module:
    c = width
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1, bias=bias), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=bias), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * c * 4 * 4, 32, bias=bias), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(32, classes, bias=bias),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, affine=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNetLike(nn.Module):
    """Stem conv+BN+ReLU, max-pool, two residual stages, global average pool, linear head."""

    def __init__(self, bias: bool = True, classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(width, width, 1, bias)
        self.layer2 = BasicBlock(width, 2 * width, 2, bias)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DenseBlockNet(nn.Module):
    """A DenseNet-like block: every layer sees the concatenation of all earlier feature maps."""

    def __init__(self, bias: bool = True, classes: int = 4, growth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(8 + i * growth), nn.ReLU(), nn.Conv2d(8 + i * growth, growth, 3, padding=1, bias=bias))
            for i in range(3)
        )
        self.head = nn.Linear(8 + 3 * growth, classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        for layer in self.layers:
            features = torch.cat([features, layer(features)], 1)
        return self.head(features.mean((2, 3)))


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def zero_biases(model: nn.Module) -> nn.Module:
    """Zero every bias and BatchNorm shift (running mean and bias), leaving scales: a bias-free network."""
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model


def snapshot(model: nn.Module) -> dict:
    """Everything a call must leave unchanged: parameters and buffers, hooks, modules, training flags."""
    hooks = {}
    for name, m in model.named_modules():
        hooks[name] = tuple(
            len(getattr(m, attr)) for attr in (
                "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_state_dict_hooks", "_load_state_dict_pre_hooks",
            )
        )
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "hooks": hooks,
        "modules": [(n, type(m), m.training) for n, m in model.named_modules()],
        "grads": [p.grad is None for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"]
    assert after["modules"] == before["modules"]
    assert after["grads"] == before["grads"]
    assert after["requires_grad"] == before["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
