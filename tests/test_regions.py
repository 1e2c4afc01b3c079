"""Region targets of dense outputs (segmentation): a mask, a box or a pixel of one class's output map."""
import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.settings import settings_of
from xaikit.targets import Region

#: settings that keep every registered method small on an 8 × 8 input (ints for batch sizes: no timing)
FAST = {"exact_shapley": {"features": "grid:2"},
        "kernel_shap": {"features": "grid:2", "samples": 16, "seed": 0, "estimator": "plain"},
        "lime": {"features": "grid:2", "samples": 16, "seed": 0},
        "permutation_shapley": {"features": "grid:2", "permutations": 2, "seed": 0, "estimator": "plain"},
        "rise": {"masks": 8, "grid": 2, "seed": 0},
        "meaningful_perturbation": {"iterations": 3, "seed": 0, "mask_size": 4, "jitter": 0},
        "integrated_gradients": {"steps": 4}, "smooth_grad": {"samples": 3, "seed": 0}, "occlusion": {"window": 4},
        "smooth_grad_squared": {"samples": 3, "seed": 0}, "var_grad": {"samples": 3, "seed": 0},
        "deep_lift_shap": {"background": torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3),
                                                    dtype=torch.float64)},
        "gradient_shap": {"background": torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3),
                                                   dtype=torch.float64), "samples": 3, "seed": 0},
        "layer_gradient_x_activation": {"layer": "down.0"}, "layer_conductance": {"layer": "down.0", "steps": 4}}


class UNet(nn.Module):
    """A two-level U-Net: encoder, max-pool, transposed-convolution up-sampling, a skip concatenation."""

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.merge = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        return self.head(self.merge(torch.cat([self.up(self.bottom(skip)), skip], 1)))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)


MASK = torch.zeros(8, 8, dtype=torch.bool)
MASK[2:5, 3:7] = True


def _settings(name: str) -> dict:
    settings = dict(FAST.get(name, {}))
    if "batch_size" in settings_of(xk.METHODS[name])[0]:
        settings["batch_size"] = 64
    return settings


#: every method that explains the model's output (NeuronAttribution's target is a unit of a layer, not an output)
OUTPUT_METHODS = sorted(set(xk.METHODS) - {"neuron_attribution"})


@pytest.mark.parametrize("name", OUTPUT_METHODS)
def test_a_mask_region_equals_the_masked_sum_callable_for_every_method(unet, name):
    model, x = unet
    before = snapshot(model)
    region = xk.explain(model, x, Region(1, mask=MASK), method=name, **_settings(name))
    explicit = xk.explain(model, x, lambda out: (out[:, 1] * MASK).flatten(1).sum(1), method=name, **_settings(name))
    torch.testing.assert_close(region.attribution, explicit.attribution, atol=1e-12, rtol=1e-10)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", ["lrp", "occlusion", "integrated_gradients"])
def test_box_pixel_and_predicted_regions(unet, name):
    model, x = unet
    with torch.no_grad():
        predicted = model(x).argmax(1) == 2  # (N, H, W): each sample its own mask
    cases = [(Region(2, box=(1, 2, 4, 6)), lambda out: out[:, 2, 1:4, 2:6].flatten(1).sum(1)),
             (Region(0, pixel=(3, 5)), lambda out: out[:, 0, 3, 5])]
    for region, explicit in cases:
        a = xk.explain(model, x, region, method=name, **_settings(name))
        b = xk.explain(model, x, explicit, method=name, **_settings(name))
        torch.testing.assert_close(a.attribution, b.attribution, atol=1e-12, rtol=1e-10)
        if name == "lrp":  # the relevance starts from the region's total
            with torch.no_grad():
                torch.testing.assert_close(a.info["conservation"]["start"], explicit(model(x)))
    # per-sample masks: each sample explained alone with its own masked sum is the brute-force comparator
    alone = torch.cat([xk.explain(model, x[i:i + 1], lambda out, m=predicted[i]: (out[:, 2] * m).flatten(1).sum(1),
                                  method=name, **_settings(name)).attribution for i in range(2)])
    for region in (Region(2, mask="predicted"), Region(2, mask=predicted)):
        a = xk.explain(model, x, region, method=name, **_settings(name))
        torch.testing.assert_close(a.attribution, alone, atol=1e-12, rtol=1e-10)
    # a per-sample mask follows its samples when the batch is chunked
    one = xk.explain(model, x, Region(2, mask=predicted), method=name, **{**_settings(name), "batch_size": 1})
    torch.testing.assert_close(one.attribution, a.attribution, atol=1e-12, rtol=1e-10)


def test_bad_regions_are_named(unet):
    model, x = unet
    with pytest.raises(ValueError, match=r"Region mask has shape \(6, 6\) but the output map is \(8, 8\)"):
        xk.explain(model, x, Region(1, mask=torch.ones(6, 6, dtype=torch.bool)), method="gradient")
    with pytest.raises(ValueError, match="Region box"):
        xk.explain(model, x, Region(1, box=(0, 0, 9, 4)), method="gradient")
    with pytest.raises(ValueError, match="Region cls 5 is out of range"):
        xk.explain(model, x, Region(5, pixel=(0, 0)), method="gradient")
    with pytest.raises(ValueError, match="exactly one of mask=, box= or pixel="):
        Region(1)
    with pytest.raises(ValueError, match="binary"):
        Region(1, mask=torch.full((8, 8), 0.5))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).double()
    with pytest.raises(ValueError, match="dense output"):
        xk.explain(flat, x, Region(1, pixel=(0, 0)), method="gradient")


def test_the_command_line_form(tmp_path):
    assert repr(Region.parse("3@box=1,2,4,6")) == "Region(3, box=(1, 2, 4, 6))"
    assert repr(Region.parse("0@pixel=3,5")) == "Region(0, pixel=(3, 5))"
    assert repr(Region.parse("2@predicted")) == "Region(2, mask='predicted')"
    np.save(tmp_path / "m.npy", MASK.numpy())
    assert torch.equal(Region.parse(f"1@mask={tmp_path / 'm.npy'}").mask, MASK)
    with pytest.raises(ValueError, match="--target '1@circle=3'"):
        Region.parse("1@circle=3")
