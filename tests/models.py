"""Small reference architectures for the tests (no torchvision): MLP, VGG-like, ResNet-like with BatchNorm
and residual additions, a DenseNet-like block with concatenation; CNN patterns of modern architectures (SE
blocks, ConvNeXt, Swin window attention, channel shuffle, GroupNorm, U-Net, in-model input normalisation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


# -- CNN patterns of modern architectures, written as their authors write them (issue 11's model matrix) ----------
class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): x · σ(W₂ relu(W₁ mean(x)))[:, :, None, None]."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s.flatten(1))[:, :, None, None]


class SENet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem, self.se, self.conv = nn.Conv2d(3, 8, 3, padding=1), SEBlock(8, 4), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h = self.se(F.relu(self.stem(x)))
        return self.head(F.relu(self.conv(h)).mean((2, 3)))


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of (N, C, H, W), written out as ConvNeXt does for channels-first inputs."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtLike(nn.Module):
    """Depthwise 7×7 conv → LayerNorm2d → pointwise MLP with GELU → layer scale → residual."""

    def __init__(self, classes: int = 3, dim: int = 8):
        super().__init__()
        self.stem, self.norm0 = nn.Conv2d(3, dim, 2, stride=2), LayerNorm2d(dim)
        self.dw, self.norm = nn.Conv2d(dim, dim, 7, padding=3, groups=dim), LayerNorm2d(dim)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.norm0(self.stem(x))
        h = self.norm(self.dw(x)).permute(0, 2, 3, 1)
        h = (self.gamma * self.pw2(F.gelu(self.pw1(h)))).permute(0, 3, 1, 2)
        return self.head((x + h).mean((2, 3)))


class WindowAttention(nn.Module):
    """Swin-style shifted-window self-attention on (N, H, W, C): roll, partition, attention, reverse, roll back."""

    def __init__(self, classes: int = 3, dim: int = 8, heads: int = 2, window: int = 2, shift: int = 1):
        super().__init__()
        self.embed, self.qkv, self.proj = nn.Conv2d(3, dim, 2, stride=2), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)
        self.heads, self.window, self.shift = heads, window, shift

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        n, h, w, c = x.shape
        win, heads = self.window, self.heads
        y = torch.roll(self.norm(x), shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = y.view(n, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, win * win, c)
        q, k, v = self.qkv(y).reshape(y.shape[0], win * win, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax((q * (c // heads) ** -0.5) @ k.transpose(-2, -1), -1)
        y = self.proj((a @ v).transpose(1, 2).reshape(-1, win * win, c))
        y = y.view(n, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        return self.head((x + y).mean((1, 2)))


class ShuffleNetLike(nn.Module):
    """Grouped 1×1 conv → channel shuffle → depthwise conv → grouped 1×1 conv (ShuffleNet)."""

    def __init__(self, classes: int = 3, groups: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.g1, self.dw = nn.Conv2d(8, 8, 1, groups=groups), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.g2, self.head, self.groups = nn.Conv2d(8, 8, 1, groups=groups), nn.Linear(8, classes), groups

    def forward(self, x):
        x = F.relu(self.stem(x))
        h = F.relu(self.g1(x))
        n, c, hh, ww = h.shape
        h = h.view(n, self.groups, c // self.groups, hh, ww).transpose(1, 2).contiguous().view(n, c, hh, ww)
        h = self.g2(self.dw(h))
        return self.head(F.relu(x + h).mean((2, 3)))


class GroupNormNet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.c2, self.n2 = nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h = F.silu(self.n1(self.c1(x)))
        return self.head(F.silu(self.n2(self.c2(h))).mean((2, 3)))


class UNetLike(nn.Module):
    """Encoder conv (stride 2) → bottleneck → ConvTranspose up → concatenated skip → conv → pooled head."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.enc, self.down = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.up, self.dec = nn.ConvTranspose2d(8, 4, 2, stride=2), nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        e = F.relu(self.enc(x))
        u = F.relu(self.up(F.relu(self.down(e))))
        return self.head(F.relu(self.dec(torch.cat([e, u], 1))).mean((2, 3)))


class NormalisedInput(nn.Module):
    """Normalises its input inside forward ((x − mean)/std, as torchvision's transform_input=True does)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, classes)

    def forward(self, x):
        x = (x - self.input_mean) / self.input_std
        return self.head(F.relu(self.conv(x)).mean((2, 3)))


CNN_PATTERNS = {
    "se": SENet, "convnext": ConvNeXtLike, "window_attention": WindowAttention, "channel_shuffle": ShuffleNetLike,
    "group_norm": GroupNormNet, "unet": UNetLike, "input_normalisation": NormalisedInput,
}


def zero_constants(model: nn.Module) -> nn.Module:
    """:func:`zero_biases`, and the mean an in-model input normalisation subtracts: every additive constant."""
    zero_biases(model)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("input_mean"):
                buffer.zero_()
    return model
