"""Training mode of the engine (method(x, create_graph=True)): the explanation equals the usual one, its
second-order gradients equal finite differences (float64), a training step leaves no hook or state behind and
.grad holds the training gradient only; unsupported cases raise."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.propagation.session import active_session
from xaikit.propagation.state import differentiable


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.nn.functional.max_pool2d(torch.relu(self.c2(h)), 1)
        return self.fc(h.flatten(1))


def _net(seed: int = 1) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = TinyNet().double().eval()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    return model, x, torch.tensor([0, 1, 2, 0])


METHODS = [
    ("lrp", {"composite": "epsilon"}), ("lrp", {"composite": "epsilon_plus"}),
    ("lrp", {"composite": "epsilon_gamma_box", "low": -3.0, "high": 3.0}),
    ("lrp", {"composite": "epsilon_alpha2_beta1_flat"}), ("lrp", {"composite": "zero"}),
    ("gradient", {}), ("input_x_gradient", {}),
]


@pytest.mark.parametrize("name,settings", METHODS)
def test_training_mode_gives_the_usual_explanation(name, settings):
    model, x, y = _net()
    method = xk.get_method(name)(model, **settings)
    usual = method(x, target=y)
    trained = method(x, target=y, create_graph=True)
    assert trained.attribution.requires_grad and not usual.attribution.requires_grad
    torch.testing.assert_close(trained.attribution.detach(), usual.attribution, rtol=1e-10, atol=1e-12)
    if "conservation" in usual.info:
        torch.testing.assert_close(trained.info["conservation"]["absorbed"], usual.info["conservation"]["absorbed"])


@pytest.mark.parametrize("name,settings", METHODS)
def test_second_order_gradients_equal_finite_differences(name, settings):
    model, x, y = _net()
    # the test point is away from every ReLU kink (the finite difference would cross it otherwise)
    z1 = model.c1(x)
    assert z1.abs().min() > 1e-4 and model.c2(torch.relu(z1)).abs().min() > 1e-4
    method = xk.get_method(name)(model, **settings)
    weights = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def loss() -> torch.Tensor:
        attribution = method(x, target=y, create_graph=True).attribution
        return (weights * attribution).sum() + (attribution ** 2).sum()

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params, allow_unused=True)  # (the gradient ignores the last bias)
    assert all(p.grad is None for p in params)
    for p, g in zip(params, grads):
        g = torch.zeros_like(p) if g is None else g
        flat, gflat = p.data.view(-1), g.reshape(-1)
        for i in (0, flat.numel() // 2, flat.numel() - 1):
            old, h = flat[i].item(), 1e-6
            flat[i] = old + h
            up = loss().item()
            flat[i] = old - h
            down = loss().item()
            flat[i] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - gflat[i].item()) <= 1e-5 * max(1.0, abs(fd)), (p.shape, i, fd, gflat[i].item())


def _hooks(model: nn.Module) -> list:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def test_training_step_leaves_no_hook_no_state_and_grad_holds_the_training_gradient():
    model, x, y = _net()
    model.train()
    hooks = _hooks(model)
    lrp = xk.LRP(model, composite="epsilon_plus")

    def training_loss(m: nn.Module, explain) -> torch.Tensor:
        task = nn.functional.cross_entropy(m(x), y)
        return task + 0.1 * (explain(m) ** 2).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the opt-in gives no train-mode warning
        loss = training_loss(model, lambda m: lrp(x, target=y, create_graph=True).attribution)
    assert all(p.grad is None for p in model.parameters())  # the explanation put nothing into .grad
    assert _hooks(model) == hooks and active_session() is None and not differentiable()
    assert model.training and all(m.training for m in model.modules())  # flags restored
    loss.backward()
    # the expected gradient: the same loss on a copy whose explanation is computed independently
    twin, _, _ = _net()
    twin.load_state_dict(model.state_dict())
    expected = torch.autograd.grad(
        training_loss(twin, lambda m: xk.LRP(m, composite="epsilon_plus")(x, target=y, create_graph=True).attribution),
        list(twin.parameters()))
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
    # a second backward through the same graph is refused by autograd as usual (nothing kept alive by us)
    with pytest.raises(RuntimeError):
        loss.backward()


def test_batchnorm_buffers_untouched_and_explained_in_eval_semantics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).train()
    x = torch.randn(5, 2, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expl = xk.LRP(model, composite="epsilon")(x, target=0, create_graph=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    usual = xk.LRP(model, composite="epsilon")(x, target=0)
    # BatchNorm is not folded in training mode: relevance passes it by LRP-0, so compare with LRP-0 through it
    assert expl.attribution.shape == usual.attribution.shape
    assert torch.allclose(expl.attribution.sum((1, 2, 3)) + expl.info["conservation"]["absorbed"],
                          expl.info["conservation"]["start"], atol=1e-4)


def test_unsupported_settings_raise():
    model, x, y = _net()
    with pytest.raises(ValueError, match="create_graph"):
        xk.Occlusion(model)(x, target=y, create_graph=True)
    with pytest.raises(ValueError, match="create_graph"):
        xk.GuidedBackprop(model)(x, target=y, create_graph=True)
    with pytest.raises(TypeError, match="create_graph"):
        xk.Gradient(model)(x, target=y, create_graph="yes")
    # ReLU rules by tensor hooks (Guided Backprop's) have no differentiable form: refused by name
    # (the identity rule, products, norms, attention are supported: tests/test_engine_training.py)
    guided = xk.propagation.with_rules("epsilon", relu="guided")
    with pytest.raises(ValueError, match="relu:guided"):
        xk.LRP(model, composite=guided)(x, target=y, create_graph=True)
    assert not differentiable()
