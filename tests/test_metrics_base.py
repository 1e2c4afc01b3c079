"""The metric calling convention, shared perturbation helpers, bad input, directions, unknown settings."""
import functools
import math
import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot
from xaikit.methods.machinery.seeding import make_generator
from xaikit.metrics import perturb, pixels
from xaikit.metrics.base import METRICS


class LinearScore(nn.Module):
    """f(x) = [w·x, −w·x]: the relevance of every element is exactly w ⊙ x (zero baseline)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


class CountingModel(nn.Module):
    """Wraps a model and counts the samples it is run on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.samples = 0

    def forward(self, x):
        self.samples += x.shape[0]
        return self.inner(x)


def linear_case(n=3, c=3, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, h, w, generator=g)
    model = LinearScore(weight).eval()
    x = torch.randn(n, c, h, w, generator=g)
    return model, x, (weight * x).detach()


# -- directions, settings --------------------------------------------------------------------------------------
#: the direction each metric's paper gives (⚠ a peer library flips some of them)
DIRECTIONS = {
    "pixel_flipping": False, "deletion": False, "insertion": True, "region_perturbation": True,
    "selectivity": False, "faithfulness_correlation": True, "faithfulness_estimate": True, "monotonicity": True,
    "monotonicity_correlation": True, "sensitivity_n": True, "irof": True, "road": False, "infidelity": False,
    "sufficiency": True, "local_lipschitz_estimate": False, "max_sensitivity": False, "avg_sensitivity": False,
    "continuity": False, "consistency": True, "relative_input_stability": False,
    "relative_output_stability": False, "relative_representation_stability": False, "pointing_game": True,
    "attribution_localisation": True, "top_k_intersection": True, "relevance_rank_accuracy": True,
    "relevance_mass_accuracy": True, "auc": True, "focus": True, "sparseness": True, "complexity": False,
    "effective_complexity": False, "mprt": False, "smooth_mprt": False, "efficient_mprt": True,
    "random_logit": False, "completeness": True, "non_sensitivity": False, "input_invariance": True,
    # counterfactual quality (issue 25; Mothilal et al. 2020)
    "validity": True, "proximity": False, "counterfactual_sparsity": True, "diversity": True, "plausibility": False,
}


def test_every_metric_declares_the_direction_of_its_paper():
    assert set(METRICS) == set(DIRECTIONS)
    for name, cls in METRICS.items():
        assert cls().higher_is_better is DIRECTIONS[name], name


def test_order_flips_the_direction_of_curve_metrics():
    assert xk.metrics.PixelFlipping(order="lerf").higher_is_better is True
    assert xk.metrics.RegionPerturbation(order="lerf").higher_is_better is False
    assert xk.metrics.ROAD(order="lerf").higher_is_better is True


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_unknown_settings_are_rejected_with_the_valid_ones(name):
    cls = METRICS[name]
    with pytest.raises(TypeError, match="unknown setting 'bogus'; valid settings"):
        cls(bogus=1)


def test_invalid_setting_values_name_the_setting():
    with pytest.raises(ValueError, match="order"):
        xk.metrics.PixelFlipping(order="most")
    with pytest.raises(ValueError, match="baseline"):
        xk.metrics.PixelFlipping(baseline="black")
    with pytest.raises(ValueError, match="pixels_per_step"):
        xk.metrics.PixelFlipping(pixels_per_step=0)
    with pytest.raises(ValueError, match="batch_size"):
        xk.metrics.FaithfulnessCorrelation(batch_size=-1)
    with pytest.raises(ValueError, match="similarity"):
        xk.metrics.MPRT(similarity="hog")


def test_get_metric_and_repr():
    assert xk.metrics.get_metric("PixelFlipping") is xk.metrics.PixelFlipping
    assert xk.metrics.get_metric("road") is xk.metrics.ROAD
    with pytest.raises(ValueError, match="valid"):
        xk.metrics.get_metric("nope")
    assert "pixels_per_step=5" in repr(xk.metrics.PixelFlipping(pixels_per_step=5))
    with pytest.raises(TypeError, match="has no curve"):
        xk.metrics.Sparseness().curve(*linear_case()[:2], None, linear_case()[2])


# -- perturbation helpers -------------------------------------------------------------------------------------
def test_stable_order_breaks_ties_by_index_in_both_directions():
    scores = torch.tensor([[1.0, 3.0, 1.0, 3.0, 2.0]])
    assert pixels.stable_order(scores, True).tolist() == [[1, 3, 4, 0, 2]]
    assert pixels.stable_order(scores, False).tolist() == [[0, 2, 4, 1, 3]]


def test_average_ranks_give_ties_their_mean_rank():
    ranks = pixels.average_ranks(torch.tensor([[5.0, 1.0, 5.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    assert ranks.tolist() == [[2.5, 1.0, 2.5, 0.0], [1.5, 1.5, 1.5, 1.5]]


def test_pixels_take_all_channels_together():
    layout = pixels.Layout((3, 4, 5))
    assert layout.pixels == 20
    attribution = torch.arange(60.0).reshape(1, 3, 4, 5)
    assert torch.equal(pixels.to_pixels(attribution, layout), attribution.sum(1).reshape(1, 20))
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, 7] = True
    x, base = torch.zeros(1, 3, 4, 5), torch.ones(1, 3, 4, 5)
    out = perturb.apply_masks(x, base, mask, layout)
    assert out.sum() == 3 and out[0, :, 1, 2].tolist() == [1, 1, 1]  # pixel 7 = row 1, col 2, every channel


def test_removal_masks_are_cumulative_in_order():
    order = torch.tensor([[2, 0, 1, 3]])
    masks = perturb.removal_masks(order, None, torch.tensor([1, 2, 4]))
    assert masks[0].int().tolist() == [[0, 0, 1, 0], [1, 0, 1, 0], [1, 1, 1, 1]]


def test_baselines():
    x = torch.randn(2, 3, 8, 8)
    g = make_generator(0)
    assert torch.equal(perturb.make_baseline(x, "zero", g), torch.zeros_like(x))
    assert torch.allclose(perturb.make_baseline(x, "mean", g)[:, :, 0, 0], x.mean((2, 3)))
    blurred = perturb.make_baseline(x, "blur", g)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    uniform = perturb.make_baseline(x, "uniform", g)
    assert (uniform >= x.amin((1, 2, 3), keepdim=True) - 1e-6).all() and (uniform <= x.amax((1, 2, 3), keepdim=True) + 1e-6).all()
    assert perturb.make_baseline(x, 0.5, g).eq(0.5).all()
    assert torch.equal(perturb.make_baseline(x, torch.ones(3, 8, 8), g), torch.ones_like(x))
    with pytest.raises(ValueError, match="does not broadcast"):
        perturb.make_baseline(x, torch.ones(5), g)


# -- counting per pixel -----------------------------------------------------------------------------------------
def test_pixel_flipping_counts_steps_per_pixel_not_per_channel_value():
    model, x, attribution = linear_case(n=2)
    counting = CountingModel(model).eval()
    curve = xk.metrics.PixelFlipping(pixels_per_step=1).curve(counting, x, 0, attribution)
    assert curve.shape == (2, 16 + 1)  # 16 pixels of an RGB 4×4 image, not 48 channel values
    assert counting.samples == 2 * 16 + 2  # the perturbed inputs plus one unperturbed forward per sample
    assert torch.allclose(curve[:, -1], torch.zeros(2), atol=1e-5)  # everything removed: f(0) = 0


def test_pixel_flipping_breaks_ties_by_pixel_index():
    model, x, _ = linear_case(n=1)
    tied = torch.zeros(1, 3, 4, 4)
    tied[0, :, 2, 3] = 1.0  # one clear winner, then 15 tied pixels
    curve = xk.metrics.PixelFlipping(pixels_per_step=1).curve(model, x, 0, tied)
    contribution = (model.w * x)[0].sum(0).reshape(-1)
    order = [11] + [i for i in range(16) if i != 11]  # the winner, then row-major index order
    expected = contribution.sum() - torch.cat([torch.zeros(1), contribution[order].cumsum(0)])
    assert torch.allclose(curve[0], expected, atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------------------
def test_attribution_shape_must_match_the_input():
    model, x, attribution = linear_case()
    with pytest.raises(ValueError, match="attribution has shape"):
        xk.metrics.PixelFlipping()(model, x, 0, attribution[:, :, :3])
    with pytest.raises(ValueError, match="samples"):
        xk.metrics.PixelFlipping()(model, x, 0, attribution[:2])
    # channel-free maps (Grad-CAM style) are accepted
    xk.metrics.PixelFlipping(pixels_per_step=4)(model, x, 0, attribution.sum(1))
    xk.metrics.PixelFlipping(pixels_per_step=4)(model, x, 0, attribution.sum(1, keepdim=True))


def test_nan_attribution_and_bad_types_are_rejected():
    model, x, attribution = linear_case()
    with pytest.raises(ValueError, match="NaN"):
        xk.metrics.Sparseness()(model, x, 0, attribution * float("nan"))
    with pytest.raises(TypeError, match="explanation must be"):
        xk.metrics.Sparseness()(model, x, 0, attribution.numpy())
    with pytest.raises(TypeError, match="needs the method object"):
        xk.metrics.MaxSensitivity()(model, x, 0, attribution)
    with pytest.raises(ValueError, match="out of range"):
        xk.metrics.PixelFlipping()(model, x, 5, attribution)
    with pytest.raises(TypeError, match="floating-point"):  # integers: token ids, which it cannot perturb
        xk.metrics.PixelFlipping()(model, x.long(), 0, attribution)
    with pytest.raises(ValueError, match="does not use a mask"):
        xk.metrics.Sparseness()(model, x, 0, attribution, mask=torch.ones(3, 4, 4))


def test_all_zero_attribution_gives_nan_with_a_warning_never_a_score():
    model, x, attribution = linear_case()
    attribution[1] = 0
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, 0, 0] = True
    for metric in [xk.metrics.PixelFlipping(pixels_per_step=4), xk.metrics.PointingGame(),
                   xk.metrics.Sparseness(), xk.metrics.FaithfulnessCorrelation(samples=5)]:
        with pytest.warns(UserWarning, match=r"sample\(s\) \[1\] is all zero"):
            scores = metric(model, x, 0, attribution, mask=mask if metric.needs_mask else None)
        assert math.isnan(scores[1]) and not torch.isnan(scores[[0, 2]]).any()


def test_explanation_objects_and_methods_are_accepted():
    model, x, attribution = linear_case()
    method = xk.InputXGradient(model)
    expl = method(x, target=0)
    metric = xk.metrics.FaithfulnessCorrelation(samples=8)
    from_tensor = metric(model, x, 0, attribution)
    assert torch.allclose(metric(model, x, None, expl), from_tensor)  # the explanation's target is used
    assert torch.allclose(metric(model, x, 0, method), from_tensor)


def test_model_is_unchanged_also_after_a_call_that_raised():
    model, x, attribution = linear_case()
    before = snapshot(model)
    for metric in [xk.metrics.PixelFlipping(pixels_per_step=4), xk.metrics.ROAD(percentages=(0.5,)),
                   xk.metrics.MaxSensitivity(samples=3), xk.metrics.MPRT(), xk.metrics.InputInvariance(),
                   xk.metrics.RelativeRepresentationStability(samples=3)]:
        metric(model, x, 0, xk.Gradient(model) if metric.needs_method else attribution)
    with pytest.raises(ValueError):
        xk.metrics.RelativeRepresentationStability(layer="nope")(model, x, 0, xk.Gradient(model))
    assert_unchanged(model, before)


def test_training_mode_is_warned_about():
    model, x, attribution = linear_case()
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        xk.metrics.Sparseness()(model, x, 0, attribution)


# -- batch independence, batch size, seeds ----------------------------------------------------------------------
RANDOM_METRICS = [
    lambda **k: xk.metrics.FaithfulnessCorrelation(samples=6, **k),
    lambda **k: xk.metrics.SensitivityN(samples=4, sizes=[2, 5], **k),
    lambda **k: xk.metrics.RegionPerturbation(patch_size=2, **k),
    lambda **k: xk.metrics.Infidelity(samples=5, **k),
    lambda **k: xk.metrics.ROAD(percentages=(0.25, 0.5), noise=0.1, **k),
    lambda **k: xk.metrics.MonotonicityCorrelation(pixels_per_step=4, samples=3, **k),
]


@pytest.mark.parametrize("make", RANDOM_METRICS)
def test_scores_do_not_depend_on_batch_mates_chunking_or_position(make):
    model, x, attribution = linear_case(n=3)
    full = make()(model, x, 0, attribution)
    assert not torch.isnan(full).any()
    for batch_size in (1, 3):
        assert torch.allclose(make(batch_size=batch_size)(model, x, 0, attribution), full, atol=1e-5)
    alone = make()(model, x[2:], 0, attribution[2:])
    assert torch.allclose(alone, full[2:], atol=1e-5)
    flipped = make()(model, x.flip(0), 0, attribution.flip(0))
    assert torch.allclose(flipped, full.flip(0), atol=1e-5)


@pytest.mark.parametrize("make", RANDOM_METRICS)
def test_seeded_determinism(make):
    model, x, attribution = linear_case(n=2)
    attribution = attribution + 0.5 * torch.randn_like(attribution)  # imperfect, so the draws matter
    a = make(seed=1)(model, x, 0, attribution)
    b = make(seed=1)(model, x, 0, attribution)
    c = make(seed=2)(model, x, 0, attribution)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_size_one_works_for_correlation_metrics():
    model, x, attribution = linear_case(n=1)
    assert xk.metrics.SensitivityN(samples=5, sizes=[3])(model, x, 0, attribution).shape == (1,)
    assert xk.metrics.FaithfulnessCorrelation(samples=5)(model, x, 0, attribution).shape == (1,)


def test_tabular_inputs_treat_each_feature_as_a_pixel():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, generator=g)
    model = LinearScore(weight).eval()
    x = torch.randn(4, 6, generator=g)
    curve = xk.metrics.PixelFlipping(pixels_per_step=1).curve(model, x, 0, weight * x)
    assert curve.shape == (4, 7)
    corr = xk.metrics.FaithfulnessCorrelation(samples=20, subset_size=2)(model, x, 0, weight * x)
    assert torch.allclose(corr, torch.ones(4), atol=1e-5)


def test_device_mismatch_is_reported():
    model, x, attribution = linear_case()
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    with pytest.raises(ValueError, match="device"):
        xk.metrics.Sparseness()(model.cuda(), x, 0, attribution)


def test_no_warning_on_a_clean_call():
    model, x, attribution = linear_case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xk.metrics.PixelFlipping(pixels_per_step=4)(model, x, 0, attribution)


@functools.lru_cache(maxsize=1)
def shapes_model():
    """The ground-truth shapes CNN (shipped weights), and held-out data ``(x, y, mask)``."""
    from xaikit.zoo import load_shapes_model, make_shapes

    model = load_shapes_model()
    return model, make_shapes(256, seed=1)
