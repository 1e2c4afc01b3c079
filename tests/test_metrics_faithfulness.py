"""Faithfulness metrics on cases with a known answer: a linear model, whose exact attribution is w ⊙ x."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
import torch

import xaikit as xk
from test_metrics_base import CountingModel, LinearScore, linear_case
from xaikit.metrics import faithfulness, imputation


def shuffled(attribution: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same values in random pixel positions (a random attribution with the same histogram)."""
    g = torch.Generator().manual_seed(seed)
    n = attribution.shape[0]
    flat = attribution.reshape(n, attribution.shape[1], -1)
    perm = torch.randperm(flat.shape[2], generator=g)
    return flat[:, :, perm].reshape(attribution.shape)


def test_pixel_flipping_curve_is_the_exact_greedy_answer_for_a_linear_model():
    model, x, attribution = linear_case(n=3, h=5, w=5)
    metric = xk.metrics.PixelFlipping(pixels_per_step=1)
    result = metric.evaluate(model, x, 0, attribution)
    relevance = attribution.sum(1).reshape(3, -1)
    expected = relevance.sum(1, keepdim=True) - torch.cat(
        [torch.zeros(3, 1), relevance.sort(1, descending=True).values.cumsum(1)], 1)
    assert torch.allclose(result.curve, expected, atol=1e-4)
    assert torch.allclose(result.scores, torch.trapezoid(expected, dx=1 / 25, dim=1), atol=1e-4)
    # removing the most relevant pixel first is optimal: a random or reversed order scores worse (higher)
    assert (result.scores <= metric(model, x, 0, shuffled(attribution)) + 1e-6).all()
    assert (result.scores < metric(model, x, 0, -attribution)).all()
    lerf = xk.metrics.PixelFlipping(order="lerf", pixels_per_step=1)
    assert (lerf(model, x, 0, attribution) > lerf(model, x, 0, -attribution)).all()


def test_pixel_flipping_last_partial_step_and_fractions():
    model, x, attribution = linear_case(n=1, h=5, w=5)
    result = xk.metrics.PixelFlipping(pixels_per_step=10).evaluate(model, x, 0, attribution)
    assert result.info["fraction"].tolist() == pytest.approx([0, 0.4, 0.8, 1.0])
    assert result.curve.shape == (1, 4)


def test_deletion_and_insertion_prefer_the_exact_attribution():
    model, x, attribution = linear_case(n=4, h=6, w=6)
    deletion = xk.metrics.Deletion(pixels_per_step=3)
    insertion = xk.metrics.Insertion(pixels_per_step=3, baseline="zero")
    assert (deletion(model, x, 0, attribution) <= deletion(model, x, 0, shuffled(attribution)) + 1e-6).all()
    assert (insertion(model, x, 0, attribution) >= insertion(model, x, 0, shuffled(attribution)) - 1e-6).all()
    curve = insertion.curve(model, x, 0, attribution)
    probabilities = model(x).softmax(1)[:, 0]
    assert torch.allclose(curve[:, 0], torch.full((4,), 0.5), atol=1e-5)  # nothing inserted: f(0) = 0
    assert torch.allclose(curve[:, -1], probabilities, atol=1e-5)  # everything inserted: the input


def test_region_perturbation_aopc_and_selectivity():
    model, x, attribution = linear_case(n=3, h=8, w=8)
    aopc = xk.metrics.RegionPerturbation(patch_size=2, steps=10, baseline="zero")
    best = aopc(model, x, 0, attribution)
    assert (best >= aopc(model, x, 0, shuffled(attribution)) - 1e-6).all()
    curve = aopc.curve(model, x, 0, attribution)
    assert curve.shape == (3, 11)
    assert torch.allclose(best, (curve[:, :1] - curve).mean(1))
    selectivity = xk.metrics.Selectivity(patch_size=2, baseline="zero")
    assert selectivity.curve(model, x, 0, attribution).shape == (3, 16 + 1)
    assert (selectivity(model, x, 0, attribution) <= selectivity(model, x, 0, shuffled(attribution)) + 1e-6).all()


def test_faithfulness_correlation_is_one_for_the_exact_attribution_and_near_zero_for_noise():
    model, x, attribution = linear_case(n=4, h=8, w=8)
    metric = xk.metrics.FaithfulnessCorrelation(samples=60, subset_size=8)
    assert torch.allclose(metric(model, x, 0, attribution), torch.ones(4), atol=1e-4)
    noise = torch.randn(16, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    random_scores = metric(model, x.repeat(4, 1, 1, 1), 0, noise)
    assert abs(float(random_scores.mean())) < 0.15


def test_sensitivity_n_correlates_across_subsets_per_sample():
    model, x, attribution = linear_case(n=3, h=6, w=6)
    result = xk.metrics.SensitivityN(samples=20).evaluate(model, x, 0, attribution)
    sizes = result.info["sizes"].tolist()
    assert sizes[0] == 1 and sizes[-1] == round(0.8 * 36) and result.curve.shape == (3, len(sizes))
    assert torch.allclose(result.curve, torch.ones_like(result.curve), atol=1e-4)
    # ⚠ a correlation across samples would give one value for the batch; here each sample has its own
    noisy = attribution + torch.randn_like(attribution) * torch.tensor([0.0, 0.5, 3.0]).view(3, 1, 1, 1)
    scores = xk.metrics.SensitivityN(samples=20, sizes=[6])(model, x, 0, noisy)
    assert scores[0] > scores[1] > scores[2]
    single = xk.metrics.SensitivityN(samples=20, sizes=[6])(model, x[2:], 0, noisy[2:])
    assert torch.allclose(single, scores[2:])


def test_faithfulness_estimate_is_one_for_the_exact_attribution():
    model, x, attribution = linear_case(n=2, h=6, w=6)
    metric = xk.metrics.FaithfulnessEstimate(pixels_per_step=3)
    assert torch.allclose(metric(model, x, 0, attribution), torch.ones(2), atol=1e-5)
    assert (metric(model, x, 0, shuffled(attribution)) < 0.9).all()


def test_monotonicity_inserts_features_and_can_fail():
    # positive weights and inputs: every insertion adds evidence, so the curve rises
    weight = torch.rand(3, 4, 4) + 0.1
    model = LinearScore(weight).eval()
    x = torch.rand(2, 3, 4, 4) + 0.1
    metric = xk.metrics.Monotonicity(pixels_per_step=2, softmax=False)
    result = metric.evaluate(model, x, 0, weight * x)
    assert result.scores.tolist() == [1.0, 1.0]
    assert torch.allclose(result.curve[:, 0], torch.zeros(2), atol=1e-5)  # starts at the baseline
    assert torch.allclose(result.curve[:, -1], model(x)[:, 0], atol=1e-5)  # ends at the input
    # ⚠ a Monotonicity that never inserts features is always True; with negative evidence it must fail
    mixed = LinearScore(weight * torch.where(torch.arange(16).reshape(4, 4) % 3 == 0, -1.0, 1.0)).eval()
    assert metric(mixed, x, 0, mixed.w.detach() * x).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("softmax", [False, True])
def test_monotonicity_compares_outputs_after_each_insertion_like_the_reference(softmax):
    """Arya et al. 2019 / AIX360: only the outputs after each insertion are compared, not the baseline's.

    A linear model with one negative contribution: the true attribution inserts it first (the output drops
    below the baseline, then only rises) and scores 1; the negated attribution inserts it last and scores 0.
    """
    weight = torch.tensor([[[1.0, 2.0, -1.5], [0.5, 3.0, 1.0]]])
    model = LinearScore(weight).eval()
    x = torch.tensor([[[[1.0, 0.5, 1.0], [2.0, 0.3, 1.5]]]])
    truth = weight * x
    metric = xk.metrics.Monotonicity(pixels_per_step=1, softmax=softmax)
    result = metric.evaluate(model, x, 0, truth)
    assert result.curve[0, 1] < result.curve[0, 0]  # the first insertion falls below the baseline ...
    assert result.scores.tolist() == [1.0]  # ... which the reference does not count against it
    assert metric(model, x, 0, -truth).tolist() == [0.0]


def test_monotonicity_correlation_prefers_the_exact_attribution():
    model, x, attribution = linear_case(n=6, h=6, w=6)
    metric = xk.metrics.MonotonicityCorrelation(pixels_per_step=2, samples=8)
    exact = metric(model, x, 0, attribution)
    assert exact.mean() > metric(model, x, 0, shuffled(attribution)).mean() + 0.3
    assert exact.mean() > 0.5


def test_irof_prefers_the_exact_attribution():
    model, x, attribution = linear_case(n=3, h=16, w=16)
    metric = xk.metrics.IROF(segments=16)
    result = metric.evaluate(model, x, 0, attribution)
    assert (result.info["segments"] > 4).all()
    assert torch.allclose(result.curve[:, 0], torch.ones(3))
    assert (result.scores > metric(model, x, 0, -attribution)).all()
    with pytest.raises(ValueError, match="images"):
        metric(LinearScore(torch.ones(6)).eval(), torch.randn(2, 6), 0, torch.randn(2, 6))


def _scipy_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Reference: Rong et al.'s system assembled with scipy.sparse and solved directly."""
    c, h, w = image.shape
    index = -np.ones(h * w, dtype=int)
    unknown = np.flatnonzero(removed.ravel())
    index[unknown] = np.arange(len(unknown))
    ys, xs = np.divmod(unknown, w)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(len(unknown))
    rhs = np.zeros((len(unknown), c))
    flat = image.reshape(c, -1)
    for dy, dx, weight in [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
                           (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diagonal[inside] += weight
        neighbour = (ny * w + nx)[inside]
        j = index[neighbour]
        row = np.flatnonzero(inside)
        rows.append(row[j >= 0]), cols.append(j[j >= 0]), vals.append(-weight * np.ones((j >= 0).sum()))
        rhs[row[j < 0]] += weight * flat[:, neighbour[j < 0]].T
    n = len(unknown)
    matrix = sp.csr_matrix((np.concatenate(vals + [diagonal]),
                            (np.concatenate(rows + [np.arange(n)]), np.concatenate(cols + [np.arange(n)]))), shape=(n, n))
    out = flat.copy()
    out[:, unknown] = spl.spsolve(matrix.tocsc(), rhs).reshape(n, c).T
    return out.reshape(c, h, w)


def test_noisy_linear_imputation_solves_rongs_system_per_pixel_over_all_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 20, 24, generator=g, dtype=torch.float64)
    removed = torch.rand(4, 20, 24, generator=g) < torch.tensor([0.1, 0.5, 0.9, 0.7]).view(4, 1, 1)
    removed[3] = False
    removed[3, 3:15, 5:20] = True  # a large hole
    out = imputation.noisy_linear_imputation(x, removed, tol=1e-10)
    for i in range(4):
        reference = _scipy_imputation(x[i].numpy(), removed[i].numpy())
        assert np.abs(out[i].numpy() - reference).max() < 1e-6
    keep = ~removed[:, None].expand_as(x)
    assert torch.equal(out[keep], x[keep])  # known pixels untouched, in every channel
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    noisy = imputation.noisy_linear_imputation(x, removed, noise, tol=1e-10)
    assert torch.allclose(noisy - out, noise * removed[:, None], atol=1e-6)  # noise only on imputed pixels


def test_imputation_reproduces_a_linear_ramp_inside_the_image():
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (0.3 * ys - 0.2 * xs)[None, None].repeat(1, 3, 1, 1)
    removed = torch.zeros(1, 16, 16, dtype=torch.bool)
    removed[0, 4:12, 3:13] = True
    assert torch.allclose(imputation.noisy_linear_imputation(ramp, removed), ramp, atol=1e-4)


def _accuracy_cases() -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] with texture, and masks of every kind ROAD makes: scattered pixels at 10/50/90 %,
    one large hole, and the most relevant 50/70/90 % of a smooth random relevance map (blobs)."""
    g = torch.Generator().manual_seed(1)
    h, w = 72, 80
    smooth = torch.nn.functional.interpolate(torch.rand(7, 3, 9, 10, generator=g), size=(h, w), mode="bicubic")
    x = (smooth + 0.3 * torch.rand(7, 3, h, w, generator=g)).clamp(0, 1) * 2 - 1
    x = x.double()
    removed = torch.zeros(7, h, w, dtype=torch.bool)
    for i, p in enumerate((0.1, 0.5, 0.9)):
        removed[i] = torch.rand(h, w, generator=g) < p
    removed[3, 10:60, 8:70] = True
    relevance = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 6, generator=g), size=(h, w), mode="bicubic")
    relevance = relevance.flatten() + 0.05 * torch.rand(h * w, generator=g)
    order = relevance.argsort(descending=True)
    for i, p in zip((4, 5, 6), (0.5, 0.7, 0.9)):
        removed[i].view(-1)[order[: round(p * h * w)]] = True
    return x, removed


def test_imputation_error_stays_below_a_tenth_of_the_noise():
    x, removed = _accuracy_cases()
    std = 0.01 * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))  # ROAD's default noise=0.01 × value range
    out = imputation.noisy_linear_imputation(x, removed, atol=imputation.ACCURACY * std)
    errors = torch.stack([(out[i] - torch.from_numpy(_scipy_imputation(x[i].numpy(), removed[i].numpy()))).abs().max()
                          for i in range(len(x))])
    assert (errors <= imputation.ACCURACY * std).all(), (errors / std).tolist()
    # the accuracy target, not the residual tolerance, ended the solve: a tolerance-only solve is far closer
    tight = imputation.noisy_linear_imputation(x, removed, tol=1e-10)
    assert (out - tight).abs().max() > 1e-3 * std.min()
    # a coarser target is honoured too (and gives a coarser answer)
    loose = imputation.noisy_linear_imputation(x, removed, atol=imputation.ACCURACY * 10 * std)
    assert ((loose - tight).abs().flatten(1).amax(1) <= imputation.ACCURACY * 10 * std).all()
    assert (loose - tight).abs().max() > (out - tight).abs().max()


def test_road_asks_for_a_tenth_of_its_noise(monkeypatch):
    model, x, attribution = linear_case(n=2, h=10, w=10)
    seen = []
    original = faithfulness.noisy_linear_imputation

    def record(images, removed, noise, **settings):
        seen.append(settings["atol"])
        return original(images, removed, noise, **settings)

    monkeypatch.setattr(faithfulness, "noisy_linear_imputation", record)
    xk.metrics.ROAD(percentages=(0.2, 0.5), noise=0.02)(model, x, 0, attribution)
    spread = x.amax((1, 2, 3)) - x.amin((1, 2, 3))
    assert torch.allclose(torch.cat(seen), (imputation.ACCURACY * 0.02 * spread).repeat_interleave(2))


def test_road_removes_whole_pixels_and_counts_every_sample(monkeypatch):
    model, x, attribution = linear_case(n=3, h=10, w=10)
    seen = []
    original = faithfulness.noisy_linear_imputation

    def record(images, removed, noise, **settings):
        seen.append(removed.clone())
        return original(images, removed, noise, **settings)

    monkeypatch.setattr(faithfulness, "noisy_linear_imputation", record)
    metric = xk.metrics.ROAD(percentages=(0.2, 0.5), batch_size=1)
    result = metric.evaluate(model, x, 0, attribution)
    removed = torch.cat(seen)
    assert removed.shape == (3 * 2, 10, 10)  # one pixel mask per perturbed image, not per channel value
    assert removed.flatten(1).sum(1).tolist() == [20, 50] * 3
    assert not torch.isnan(result.curve).any() and result.curve.shape == (3, 3)
    # ⚠ counting only the first batch: every sample has its own score, the same with any chunk size
    monkeypatch.setattr(faithfulness, "noisy_linear_imputation", original)
    assert torch.allclose(xk.metrics.ROAD(percentages=(0.2, 0.5))(model, x, 0, attribution), result.scores, atol=1e-5)


def test_road_morf_prefers_the_exact_attribution():
    model, x, attribution = linear_case(n=4, h=12, w=12)
    metric = xk.metrics.ROAD(percentages=(0.1, 0.3, 0.5), softmax=False, noise=0.0)
    assert metric(model, x, 0, attribution).mean() < metric(model, x, 0, -attribution).mean()


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model():
    model, x, _ = linear_case(n=3, h=6, w=6)
    gradient = xk.Gradient(model)(x, target=0).attribution
    for perturbation in ("gaussian", "square"):
        metric = xk.metrics.Infidelity(perturbation=perturbation, samples=20, patch_size=2)
        assert torch.allclose(metric(model, x, 0, gradient), torch.zeros(3), atol=1e-6)
        assert (metric(model, x, 0, shuffled(gradient)) > 1e-3).all()
    normalised = xk.metrics.Infidelity(samples=20, normalise=True)
    assert torch.allclose(normalised(model, x, 0, 7 * gradient), torch.zeros(3), atol=1e-5)  # scale-free
    with pytest.raises(ValueError, match="shape"):
        xk.metrics.Infidelity(perturbation="square")(model, x, 0, gradient.sum(1))


def test_sufficiency_on_hand_made_explanations():
    a, b = torch.zeros(4, 4), torch.zeros(4, 4)
    a[0, 0], b[3, 3] = 1.0, 1.0
    attribution = torch.stack([a, a, b, b])[:, None].repeat(1, 3, 1, 1)
    # a model that predicts class 1 where the first value is positive: samples 0,1 agree, samples 2,3 do not
    x = -torch.rand(4, 3, 4, 4)
    x[3, 0, 0, 0] = 1.0

    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            return torch.nn.functional.one_hot((inputs[:, 0, 0, 0] > 0).long(), 2).float()

    scores = xk.metrics.Sufficiency(threshold=0.1)(Fixed().eval(), x, 0, attribution)
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.warns(UserWarning, match="no other sample"):
        alone = xk.metrics.Sufficiency(threshold=0.1)(Fixed().eval(), x[:1], 0, attribution[:1])
    assert math.isnan(alone[0])


def test_pixel_flipping_on_efficientnet(efficientnet, chelsea):
    counting = CountingModel(efficientnet).eval()
    attribution = xk.InputXGradient(efficientnet)(chelsea, target=285).attribution
    morf = xk.metrics.PixelFlipping(pixels_per_step=224 * 224 // 4, softmax=True)
    curve = morf.curve(counting, chelsea, 285, attribution)
    assert curve.shape == (1, 5) and counting.samples == 5
    assert curve[0, 0] > 0.5 and curve[0, -1] < 0.05
