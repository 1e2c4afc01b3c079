"""Each method on a model whose answer is known: occlusion sums, Grad-CAM closed forms, localisation by RISE and
meaningful/extremal perturbation, SmoothGrad's noise, K-LASSO, feature masks, and the real EfficientNet-Lite0."""
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from test_methods_closed_form import Interacting, brute_force_shapley
from xaikit.batching import batched_forward
from xaikit.methods.machinery.features import LazyInputs, resolve_features


class WeightedSum(nn.Module):
    """f(x) = [Σ W ⊙ x, -Σ W ⊙ x] for inputs of any rank."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)), requires_grad=False)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("shape", [(7,), (2, 9), (3, 6, 5), (2, 4, 3, 5)])
def test_occlusion_any_rank_window_one_is_weight_times_input(shape):
    model = WeightedSum(shape).double().eval()  # float64: a drop is a difference of two sums of many terms
    x = torch.randn(2, *shape, dtype=torch.float64)
    window = tuple(1 for _ in shape)  # one element per window, channels included
    expl = xk.Occlusion(model, window=window)(x, target=0)
    torch.testing.assert_close(expl.attribution, model.w * x, atol=1e-5, rtol=1e-5)
    assert expl.info["windows"] == model.w.numel()


def test_occlusion_overlapping_windows_average_the_drops():
    model = WeightedSum((1, 10)).eval()
    x = torch.randn(1, 1, 10)
    expl = xk.Occlusion(model, window=3, stride=2)(x, target=0)
    contrib = (model.w * x)[0, 0]
    starts = [0, 2, 4, 6, 7]  # the last window is aligned with the end
    expected = torch.zeros(10)
    for i in range(10):
        drops = [contrib[s:s + 3].sum() for s in starts if s <= i < s + 3]
        expected[i] = torch.stack(drops).mean()
    torch.testing.assert_close(expl.attribution[0, 0], expected, atol=1e-5, rtol=1e-5)
    assert expl.info["windows"] == 5


class ConvGap(nn.Module):
    """conv -> global average pool -> linear: Grad-CAM has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Conv2d(3, 5, 3, padding=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_grad_cam_closed_form_on_conv_gap():
    model = ConvGap().eval()
    x = torch.randn(2, 3, 6, 6)
    a = model.features(x).detach()
    w = model.head.weight[1].detach()
    g = (w / 36).view(1, 5, 1, 1)  # ∂y/∂A is constant over space
    expl = xk.GradCAM(model, layer="features", upsample=False)(x, target=1)
    torch.testing.assert_close(expl.attribution[:, 0], (g * a).sum(1).clamp_min(0), atol=1e-6, rtol=1e-5)
    alpha = g**2 / (2 * g**2 + (a * g**3).sum((2, 3), keepdim=True))
    weights = 36 * alpha * g.clamp_min(0)  # Σ over the 6×6 positions of a constant
    plus = xk.GradCAMPlusPlus(model, layer="features", upsample=False)(x, target=1)
    torch.testing.assert_close(plus.attribution[:, 0], (weights * a).sum(1).clamp_min(0), atol=1e-6, rtol=1e-5)
    up = xk.GradCAM(model, layer="features")(x, target=1)  # same resolution: upsampling repeats over channels
    assert up.attribution.shape == x.shape
    torch.testing.assert_close(up.attribution, expl.attribution.expand_as(x))
    signed = xk.GradCAM(model, layer="features", upsample=False, relu=False)(x, target=1)
    torch.testing.assert_close(signed.attribution[:, 0], (g * a).sum(1), atol=1e-6, rtol=1e-5)


class RegionScore(nn.Module):
    """Two logits [k·mean of x over a region R - c, 0]: only R matters."""

    def __init__(self, rank: int = 2, k: float = 2.0, c: float = 3.0) -> None:
        super().__init__()
        self.k, self.c = k, c

    def forward(self, x):
        logit = self.k * x[:, :, 2:6, 2:6].mean((1, 2, 3)) - self.c
        return torch.stack([logit, torch.zeros_like(logit)], 1)


def region_image() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(1, 1, 16, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[2:6, 2:6] = True
    x[0, 0][inside] = 3.0
    return x, inside


def test_rise_saliency_concentrates_on_the_region():
    x, inside = region_image()
    expl = xk.RISE(RegionScore().eval(), masks=400, grid=4, seed=0)(x, target=0)
    s = expl.attribution[0, 0]
    assert s[inside].mean() > 3 * s[~inside].mean()
    assert inside.flatten()[s.argmax()]  # the most salient element lies in R


def test_meaningful_perturbation_deletes_the_region():
    x, inside = region_image()
    model = RegionScore().eval()
    expl = xk.MeaningfulPerturbation(model, iterations=60, mask_size=16, jitter=0, baseline="zero", seed=0)(x, target=0)
    deleted = expl.attribution[0, 0]  # 1 - m
    assert deleted[inside].mean() > 0.5 > deleted[~inside].mean() + 0.3
    assert expl.info["score_perturbed"][0] < expl.info["score"][0]


def test_extremal_perturbation_keeps_the_region_at_the_requested_area():
    x, inside = region_image()
    area = float(inside.float().mean())  # 1/16
    expl = xk.MeaningfulPerturbation(RegionScore().eval(), area=area, iterations=80, mask_size=16, jitter=0,
                                     baseline="zero", seed=0)(x, target=0)
    kept = expl.attribution[0, 0]  # m
    assert kept[inside].mean() > 0.7 and kept[~inside].mean() < 0.1
    assert abs(float(expl.info["area"][0]) - area) < 0.05


def test_smoothgrad_wraps_methods_and_noise_falls_as_one_over_sqrt_t():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    x = torch.randn(3, 8)
    exact = xk.Gradient(model)(x, target=1).attribution
    torch.testing.assert_close(xk.SmoothGrad(model, sigma=0.0, samples=3, seed=0)(x, target=1).attribution, exact)
    ig = xk.IntegratedGradients(model, steps=4)
    wrapped = xk.SmoothGrad(model, method=ig, sigma=0.0, samples=2, seed=0)(x, target=1)
    torch.testing.assert_close(wrapped.attribution, ig(x, target=1).attribution)
    by_name = xk.SmoothGrad(model, method="integrated_gradients", method_settings={"steps": 4}, sigma=0.0,
                            samples=2, seed=0)
    torch.testing.assert_close(by_name(x, target=1).attribution, wrapped.attribution)
    assert by_name.name == "SmoothGrad(IntegratedGradients(gauss_legendre, 4))"

    def spread(samples: int) -> torch.Tensor:
        runs = torch.stack([xk.SmoothGrad(model, samples=samples, sigma=0.3, seed=s)(x, target=1).attribution
                            for s in range(60)])
        return runs.var(0).mean().sqrt()  # Monte-Carlo noise of the average, over all elements

    ratio = float(spread(4) / spread(16))
    assert 1.6 < ratio < 2.5, ratio  # 4× the samples: half the noise (√4 = 2), at 4× the cost


def test_lime_k_lasso_selects_the_dominant_features():
    model = nn.Linear(10, 1).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.05, 3.0, -0.1, 0.02, -2.5, 0.04, 0.0, 0.08, -0.03, 0.06]]))
    x = torch.ones(2, 10)
    expl = xk.LIME(model, samples=200, num_features=2, seed=0)(x, target=0)
    assert expl.info["selected"].nonzero()[:, 1].tolist() == [1, 4, 1, 4]
    assert (expl.attribution[:, [0, 2, 3, 5, 6, 7, 8, 9]] == 0).all()
    torch.testing.assert_close(expl.attribution[:, [1, 4]], torch.tensor([[3.0, -2.5]] * 2), atol=0.2, rtol=0.05)


def test_feature_masks_grid_custom_and_per_sample():
    x = torch.randn(2, 3, 8, 8)
    grid = resolve_features("grid:4", x)
    assert grid.count.tolist() == [16, 16] and grid.mask.shape == (2, 1, 8, 8)
    assert grid.mask[0, 0, :2, :2].unique().tolist() == [0] and grid.mask[0, 0, 6:, 6:].unique().tolist() == [15]
    labels = torch.tensor([[7, 7, -2], [40, 7, 7]])  # any integers, renumbered in increasing order
    custom = resolve_features(labels.repeat(2, 1)[None].expand(2, 4, 3), torch.randn(2, 4, 3))
    assert custom.count.tolist() == [3, 3]
    per_sample = torch.stack([torch.arange(8) % 3, torch.arange(8) % 5])
    features = resolve_features(per_sample, torch.randn(2, 8))
    assert features.count.tolist() == [3, 5]
    assert features.valid().tolist() == [[True] * 3 + [False] * 2, [True] * 5]


def test_per_sample_feature_counts_exact_and_sampled_shapley():
    """Sample 0 has 3 feature groups, sample 1 has 5: padded slots carry nothing and the values stay exact."""
    model = Interacting(seed=7).eval()
    x = torch.randn(2, 8)
    mask = torch.stack([torch.arange(8) % 3, torch.arange(8) % 5])
    expl = xk.ExactShapley(model, features=mask)(x, target=0)
    for i, d in enumerate((3, 5)):
        groups = [[j for j in range(8) if mask[i, j] == g] for g in range(d)]
        phi = brute_force_shapley(lambda z: model(z)[:, 0], x[i], [torch.zeros(8)], groups)
        torch.testing.assert_close(expl.info["feature_attribution"][i, :d].double(), phi, atol=2e-5, rtol=1e-5)
    assert (expl.info["feature_attribution"][0, 3:] == 0).all()
    for method in (xk.KernelSHAP(model, features=mask, samples=30, seed=0),
                   xk.PermutationShapley(model, features=mask, permutations=4, seed=0)):
        sampled = method(x, target=0)
        assert (sampled.info["feature_attribution"][0, 3:] == 0).all()
        assert sampled.info["convergence_delta"].abs().max() < 1e-5


def test_lazy_inputs_work_with_batched_forward():
    model = nn.Linear(4, 2).eval()
    full = torch.randn(10, 4)
    lazy = LazyInputs(lambda start, stop: full[start:stop], 10, full)
    torch.testing.assert_close(batched_forward(model, lazy, 3), model(full).detach())


def test_efficientnet_grad_cam_and_occlusion(efficientnet, chelsea):
    before = snapshot(efficientnet)
    cam = xk.GradCAM(efficientnet, layer="_conv_head")(chelsea)
    assert cam.target.tolist() == [285] and cam.attribution.shape == chelsea.shape
    assert cam.attribution.max() > 0 and (cam.attribution >= 0).all()
    occlusion = xk.Occlusion(efficientnet, window=112, batch_size=4)(chelsea, target=285)
    assert occlusion.info["windows"] == 4
    hidden = chelsea.clone()
    hidden[:, :, 112:, :112] = 0  # the bottom-left window, by hand
    with torch.no_grad():
        drop = efficientnet(chelsea)[0, 285] - efficientnet(hidden)[0, 285]
    torch.testing.assert_close(occlusion.attribution[0, :, 200, 50], drop.expand(3), atol=1e-4, rtol=1e-4)
    assert_unchanged(efficientnet, before)


def test_progress_bar_and_input_that_requires_grad():
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 6, requires_grad=True)
    for method in (xk.IntegratedGradients(model, steps=4, progress=True), xk.KernelSHAP(model, samples=32, seed=0, progress=True),
                   xk.RISE(model, masks=8, seed=0, progress=True)):
        expl = method(x)
        assert not expl.attribution.requires_grad and x.grad is None
