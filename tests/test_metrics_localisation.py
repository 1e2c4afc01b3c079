"""Localisation and complexity metrics on hand-made attributions and masks."""
import math

import pytest
import torch
from torch import nn

import xaikit as xk


class Constant(nn.Module):
    """Any model will do for localisation: the scores only read the attribution and the mask."""

    def forward(self, x):
        return x.flatten(1)[:, :3]


MODEL = Constant().eval()


def maps(*rows):
    """Attributions (N, 1, H, W) from nested lists."""
    return torch.tensor(rows, dtype=torch.float32)[:, None]


def test_pointing_game_hits_misses_ties_and_tolerance():
    x = torch.zeros(3, 1, 4, 4)
    attribution = torch.zeros(3, 1, 4, 4)
    attribution[0, 0, 1, 1] = 5  # inside
    attribution[1, 0, 3, 3] = 5  # outside
    attribution[2] = 1  # all tied: the first pixel (0, 0) counts, which is outside
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    metric = xk.metrics.PointingGame()
    assert metric(MODEL, x, 0, attribution, mask=mask).tolist() == [1.0, 0.0, 0.0]
    # (3, 3) is √2 away from the mask's corner (2, 2): a hit only with that tolerance
    assert xk.metrics.PointingGame(tolerance=1.5)(MODEL, x, 0, attribution, mask=mask).tolist() == [1.0, 1.0, 1.0]
    assert xk.metrics.PointingGame(tolerance=1.0)(MODEL, x, 0, attribution, mask=mask).tolist() == [1.0, 0.0, 0.0]


def test_pointing_game_never_counts_an_empty_mask_as_a_hit():
    x = torch.zeros(2, 1, 4, 4)
    attribution = torch.rand(2, 1, 4, 4)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0] = True
    with pytest.warns(UserWarning, match=r"mask of sample\(s\) \[1\] is empty"):
        scores = xk.metrics.PointingGame()(MODEL, x, 0, attribution, mask=mask)
    assert scores[0] == 1.0 and math.isnan(scores[1])


def test_masks_must_be_given_binary_and_well_shaped():
    x = torch.zeros(2, 3, 4, 4)
    attribution = torch.rand(2, 3, 4, 4)
    metric = xk.metrics.RelevanceMassAccuracy()
    with pytest.raises(ValueError, match="pass mask="):
        metric(MODEL, x, 0, attribution)
    with pytest.raises(ValueError, match="binary"):  # ⚠ weights would otherwise be dropped silently
        metric(MODEL, x, 0, attribution, mask=torch.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="mask has shape"):
        metric(MODEL, x, 0, attribution, mask=torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="differs between channels"):
        bad = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
        bad[:, 0] = True
        metric(MODEL, x, 0, attribution, mask=bad)
    same = torch.ones(2, 3, 4, 4)  # a mask shaped like x with equal channels is fine
    assert torch.allclose(metric(MODEL, x, 0, attribution, mask=same), torch.ones(2))


def test_mass_and_rank_accuracy_and_attribution_localisation():
    attribution = maps([[4.0, 1.0], [-2.0, 0.0]])
    mask = torch.tensor([[[True, False], [True, False]]])
    x = torch.zeros(1, 1, 2, 2)
    # positive relevance: 4 inside, 1 outside
    assert xk.metrics.RelevanceMassAccuracy()(MODEL, x, 0, attribution, mask=mask).item() == pytest.approx(0.8)
    assert xk.metrics.AttributionLocalisation()(MODEL, x, 0, attribution, mask=mask).item() == pytest.approx(0.8)
    weighted = xk.metrics.AttributionLocalisation(weighted=True)(MODEL, x, 0, attribution, mask=mask)
    assert weighted.item() == pytest.approx(0.8 * 4 / 2)
    # K = 2 mask pixels; the two most relevant are (0,0) inside and (0,1) outside
    assert xk.metrics.RelevanceRankAccuracy()(MODEL, x, 0, attribution, mask=mask).item() == pytest.approx(0.5)
    assert xk.metrics.TopKIntersection(k=1)(MODEL, x, 0, attribution, mask=mask).item() == 1.0
    assert xk.metrics.TopKIntersection(k=3)(MODEL, x, 0, attribution, mask=mask).item() == pytest.approx(1 / 3)
    assert xk.metrics.TopKIntersection(k=1, absolute=True)(MODEL, x, 0, -attribution, mask=mask).item() == 1.0


def test_no_positive_relevance_is_undefined():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.warns(UserWarning, match="no positive"):
        score = xk.metrics.RelevanceMassAccuracy()(MODEL, x, 0, -torch.ones(1, 1, 2, 2),
                                                   mask=torch.ones(1, 2, 2, dtype=torch.bool))
    assert math.isnan(score)


def test_auc_is_one_zero_and_a_half():
    x = torch.zeros(3, 1, 3, 3)
    mask = torch.zeros(3, 3, 3, dtype=torch.bool)
    mask[:, 0] = True
    perfect = mask.float()[:, None] + 0.1 * torch.rand(3, 1, 3, 3)
    reversed_ = -perfect
    constant = torch.ones(3, 1, 3, 3)
    metric = xk.metrics.AUC()
    assert torch.allclose(metric(MODEL, x, 0, perfect, mask=mask), torch.ones(3))
    assert torch.allclose(metric(MODEL, x, 0, reversed_, mask=mask), torch.zeros(3))
    assert torch.allclose(metric(MODEL, x, 0, constant, mask=mask), torch.full((3,), 0.5))
    with pytest.warns(UserWarning, match="covers every pixel"):
        full = metric(MODEL, x[:1], 0, perfect[:1], mask=torch.ones(1, 3, 3, dtype=torch.bool))
    assert math.isnan(full)


def test_focus_on_mosaics():
    images = torch.randn(8, 3, 4, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    mosaics, targets, masks = xk.metrics.make_mosaic(images, labels, count=5, seed=0)
    assert mosaics.shape == (5, 3, 8, 8) and masks.shape == (5, 8, 8)
    assert (masks.flatten(1).sum(1) == 32).all()  # two of the four tiles belong to the target class
    for i in range(5):  # every target tile is an image of the target class
        for r in range(2):
            for c in range(2):
                tile = mosaics[i, :, 4 * r: 4 * r + 4, 4 * c: 4 * c + 4]
                source = [j for j in range(8) if torch.equal(images[j], tile)]
                assert len(source) == 1 and (labels[source[0]] == targets[i]) == bool(masks[i, 4 * r, 4 * c])
    focus = xk.metrics.Focus()
    perfect = masks[:, None].float()
    assert torch.allclose(focus(MODEL, mosaics, targets, perfect, mask=masks), torch.ones(5))
    assert torch.allclose(focus(MODEL, mosaics, targets, torch.ones(5, 1, 8, 8), mask=masks), torch.full((5,), 0.5))


def test_complexity_metrics_closed_forms():
    x = torch.zeros(2, 3, 4, 4)
    one_hot = torch.zeros(1, 3, 4, 4)
    one_hot[0, 1, 2, 2] = 3.0
    uniform = torch.ones(1, 3, 4, 4)
    attribution = torch.cat([one_hot, uniform])
    sparseness = xk.metrics.Sparseness()(MODEL, x, 0, attribution)
    assert sparseness.tolist() == pytest.approx([15 / 16, 0.0], abs=1e-6)
    complexity = xk.metrics.Complexity()(MODEL, x, 0, attribution)
    assert complexity.tolist() == pytest.approx([0.0, math.log(16)], abs=1e-6)
    effective = xk.metrics.EffectiveComplexity()(MODEL, x, 0, attribution)
    assert effective.tolist() == [1.0, 16.0]
    # channels of a pixel are summed first: +1 and −1 on one pixel cancel
    cancel = torch.zeros(1, 3, 4, 4)
    cancel[0, 0, 0, 0], cancel[0, 1, 0, 0], cancel[0, 0, 1, 1] = 1.0, -1.0, 2.0
    assert xk.metrics.EffectiveComplexity()(MODEL, x[:1], 0, cancel).item() == 1.0


def test_scores_never_depend_on_a_batch_maximum():
    # ⚠ normalising by a maximum over the whole batch makes a score depend on its batch mates
    x = torch.zeros(2, 1, 4, 4)
    attribution = torch.rand(2, 1, 4, 4)
    mask = torch.rand(2, 4, 4) > 0.5
    big = attribution.clone()
    big[1] *= 1000
    for metric in [xk.metrics.EffectiveComplexity(eps=0.3), xk.metrics.Sparseness(), xk.metrics.Complexity(),
                   xk.metrics.RelevanceMassAccuracy(), xk.metrics.AUC()]:
        kwargs = {"mask": mask} if metric.needs_mask else {}
        assert torch.allclose(metric(MODEL, x, 0, attribution, **kwargs)[0], metric(MODEL, x, 0, big, **kwargs)[0])
