"""Bad input gets a clear error naming the argument; nothing of the user's is changed."""
import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.methods.base import get_method
from models import assert_unchanged, snapshot


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


class NoGrad(nn.Module):
    """A model whose output is computed without autograd: not differentiable."""

    def __init__(self) -> None:
        super().__init__()
        self.net = cnn()

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("make", [
    lambda m: xk.LIME(m, features=torch.zeros(5, 5, dtype=torch.long)),
    lambda m: xk.KernelSHAP(m, features=torch.zeros(3, 3, 8, 8, dtype=torch.long)),
    lambda m: xk.ExactShapley(m, features=torch.zeros(2, 8, dtype=torch.long)),
])
def test_feature_mask_of_wrong_shape(make):
    model = cnn()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"features mask of shape .* does not fit x of shape \(2, 3, 8, 8\)"):
        make(model)(X)
    assert_unchanged(model, before)


def test_feature_mask_of_wrong_dtype_and_bad_grouping():
    with pytest.raises(TypeError, match="features must be an integer tensor"):
        xk.LIME(cnn(), features=torch.zeros(8, 8))(X)
    with pytest.raises(ValueError, match="unknown features 'grid:x'"):
        xk.KernelSHAP(cnn(), features="grid:x")(X)
    with pytest.raises(ValueError, match="features 'slic:N' needs images"):
        xk.LIME(nn.Linear(5, 2).eval(), features="slic:4")(torch.randn(2, 5))


def test_exact_shapley_refuses_more_than_20_features():
    with pytest.raises(ValueError, match=r"features: ExactShapley .* d = 64 .* limit is d <= 20"):
        xk.ExactShapley(cnn(), features="grid:8")(X)
    model = nn.Linear(21, 2).eval()
    with pytest.raises(ValueError, match=r"d = 21"):
        xk.ExactShapley(model)(torch.randn(1, 21))


@pytest.mark.parametrize("make", [
    lambda m, b: xk.IntegratedGradients(m, baseline=b),
    lambda m, b: xk.Occlusion(m, baseline=b),
    lambda m, b: xk.RISE(m, masks=4, baseline=b),
    lambda m, b: xk.LIME(m, samples=4, baseline=b),
    lambda m, b: xk.KernelSHAP(m, samples=4, baseline=b),
    lambda m, b: xk.MeaningfulPerturbation(m, iterations=1, baseline=b),
])
def test_baseline_of_wrong_shape(make):
    model = cnn()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"baseline of shape \(3, 7, 7\) does not fit x of shape \(2, 3, 8, 8\)"):
        make(model, torch.zeros(3, 7, 7))(X)
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        make(model, "grey")(X)
    assert_unchanged(model, before)


def test_background_errors():
    with pytest.raises(ValueError, match="either baseline= .* or background="):
        xk.KernelSHAP(cnn(), baseline=0.0, background=torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"background must hold B ≥ 1 reference samples .* got \(4, 3, 8\)"):
        xk.KernelSHAP(cnn(), background=torch.zeros(4, 3, 8))(X)


def test_blur_baseline_needs_spatial_dimensions():
    with pytest.raises(ValueError, match="baseline 'blur' needs inputs with spatial dimensions"):
        xk.IntegratedGradients(nn.Linear(5, 2).eval(), baseline="blur")(torch.randn(2, 5))


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match=r"layer 'conv9' is not a module of the model; valid names: 0, 1, 2, 3, 4"):
        xk.GradCAM(cnn(), layer="conv9")
    with pytest.raises(ValueError, match="layer 'features' is not a module"):
        xk.GradCAMPlusPlus(cnn(), layer="features")


def test_unknown_layer_on_efficientnet_lists_its_modules(efficientnet):
    with pytest.raises(ValueError, match=r"valid names: .*_conv_stem.*_blocks\.15.*_conv_head"):
        xk.GradCAM(efficientnet, layer="conv_head")


def test_layer_without_spatial_output_and_upsample_mismatch():
    with pytest.raises(ValueError, match="layer '4' outputs shape"):
        xk.GradCAM(cnn(), layer="4")(X)


@pytest.mark.parametrize("make", [
    lambda m: xk.IntegratedGradients(m, steps=2),
    lambda m: xk.SmoothGrad(m, samples=2),
    lambda m: xk.GradCAM(m, layer="net.0"),
])
def test_non_differentiable_model_for_gradient_methods(make):
    model = NoGrad().eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match="model.*differentiabl|differentiabl.*model"):
        make(model)(X)
    assert_unchanged(model, before)


def test_bad_settings_name_the_argument():
    with pytest.raises(TypeError, match="unknown setting 'step'"):
        xk.IntegratedGradients(cnn(), step=3)
    with pytest.raises(ValueError, match="unknown rule 'simpson'"):
        xk.IntegratedGradients(cnn(), rule="simpson")
    with pytest.raises(ValueError, match="steps must be a.* integer > 0"):
        xk.IntegratedGradients(cnn(), steps=0)
    with pytest.raises(ValueError, match="window must be a.* integer > 0"):
        xk.Occlusion(cnn(), window=0)
    with pytest.raises(ValueError, match=r"window \(2, 2, 2, 2\) has 4 entries"):
        xk.Occlusion(cnn(), window=(2, 2, 2, 2))(X)
    with pytest.raises(ValueError, match="p must be a probability"):
        xk.RISE(cnn(), p=1.5)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        xk.LIME(cnn(), kernel="rbf")
    with pytest.raises(TypeError, match="seed must be an int"):
        xk.KernelSHAP(cnn(), seed=1.5)
    with pytest.raises(ValueError, match="area must be None or a fraction"):
        xk.MeaningfulPerturbation(cnn(), area=2)
    with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive int"):
        xk.PermutationShapley(cnn(), batch_size=0)
    with pytest.raises(ValueError, match="unknown method 'grad'"):
        xk.SmoothGrad(cnn(), method="grad")
    with pytest.raises(ValueError, match="target 7 is out of range"):
        xk.Occlusion(cnn())(X, target=7)
    with pytest.raises(TypeError, match="targets must be a non-empty list"):
        xk.Occlusion(cnn()).explain_targets(X, 1)


def test_smoothgrad_wrapped_method_checks():
    model = cnn()
    with pytest.raises(ValueError, match="same model"):
        xk.SmoothGrad(model, method=xk.Gradient(cnn()))
    with pytest.raises(ValueError, match="method_settings apply to a method given by name"):
        xk.SmoothGrad(model, method=xk.Gradient(model), method_settings={"steps": 3})
    with pytest.raises(TypeError, match="unknown setting 'stepz'"):
        xk.SmoothGrad(model, method="integrated_gradients", method_settings={"stepz": 3})
    with pytest.raises(TypeError, match="unknown setting 'stepz'"):
        xk.SmoothGrad(model, method="integrated_gradients:stepz=3")


def test_smoothgrad_settings_as_keywords_are_deprecated():
    """The old form, the wrapped method's settings as keywords, still works for one release and warns; its
    errors are still named (before any warning)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    x = torch.randn(3, 8)
    new = xk.SmoothGrad(model, method="integrated_gradients", method_settings={"steps": 4}, sigma=0.0, samples=2,
                        seed=0)
    with pytest.warns(DeprecationWarning, match="method_settings="):
        old = xk.SmoothGrad(model, method="integrated_gradients", steps=4, sigma=0.0, samples=2, seed=0)
    assert old.name == new.name == "SmoothGrad(IntegratedGradients(gauss_legendre, 4))"
    torch.testing.assert_close(old(x, target=1).attribution, new(x, target=1).attribution)
    with pytest.raises(TypeError, match="apply to a method given by name"):
        xk.SmoothGrad(model, method=xk.Gradient(model), steps=3)
    with pytest.raises(TypeError, match="unknown setting 'stepz'"):
        xk.SmoothGrad(model, method="integrated_gradients", stepz=3)


@pytest.mark.parametrize("name", ["lrp", "gradient", "input_x_gradient", "grad_cam", "guided_backprop",
                                  "integrated_gradients", "occlusion", "smooth_grad"])
def test_every_method_takes_progress(name):
    """docs/methods.md promises ``progress=True`` on every method (issue 18)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 3)).eval()
    settings = {"samples": 2} if name == "smooth_grad" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # progress is every method's own setting
        method = get_method(name)(model, progress=True, **settings)
    assert method(torch.randn(2, 3, 6, 6), target=0).attribution.shape[0] == 2
    if name == "smooth_grad":  # it shows the wrapped method's progress over the noisy copies
        assert method.inner.progress is True


@pytest.mark.parametrize("dtype, fix", [(torch.float64, r"x.float\(\)"), (torch.float16, r"x.float\(\)")])
def test_an_input_of_another_precision_than_the_model_is_named(dtype, fix):
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with pytest.raises(TypeError, match=f"x has dtype {dtype} but the model's weights are torch.float32.*{fix}"):
        xk.Gradient(model)(torch.randn(2, 4, dtype=dtype))


def test_an_image_without_its_batch_dimension_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).eval()
    for method in (xk.LRP(model), xk.Occlusion(model, window=2)):
        with pytest.raises(ValueError, match=r"add the batch dimension with x\[None\]"):
            method(torch.randn(3, 6, 6))
    with pytest.raises(ValueError, match="add the batch dimension"):
        xk.metrics.Sparseness()(model, torch.randn(3, 6, 6), 0, torch.randn(3, 6, 6))
