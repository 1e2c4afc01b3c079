"""CRP inside a residual branch: a concept's conditional heatmap is the relevance that flows through its channels
only; the shortcut's relevance (which bypasses the layer) is in no concept's heatmap (Achtibat et al. 2023).

The reference for gradient × input is written out by hand with two autograd calls (the backward from the output
to the layer, then from the layer's output alone, masked, to the input); for LRP the properties are conservation
of each concept's relevance and the sum over all channels (which equals the relevance at the layer).
"""
from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import torch
from torch import nn

from models import ResNetLike
from xaikit import concepts
from xaikit.layers import capture
from xaikit.methods.cam import find_layer
from xaikit.propagation.record import Recorder, condition_masks, through_rows

EPS = {"composite": "epsilon", "epsilon": 1e-12}


def _resnet(seed: int = 0, bias_free: bool = False) -> nn.Module:
    """ResNetLike in float64 with BatchNorm statistics away from the identity (biases zeroed if ``bias_free``)."""
    torch.manual_seed(seed)
    model = ResNetLike(bias=not bias_free).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            if bias_free:
                m.running_mean.zero_()
                m.bias.data.zero_()
            else:
                m.running_mean.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) * 0.4 - 0.2)
    return model


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _through_by_hand(model: nn.Module, x: torch.Tensor, target: int, layers: list[str],
                     masks: list[torch.Tensor]) -> torch.Tensor:
    """x ⊙ the gradient that flows from the output through ``layers`` (top first) under ``masks`` (one (C,) row
    each) and through nothing else: each backward starts at the previous layer's output alone."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad(), ExitStack() as stack:
        seen = [stack.enter_context(capture(model, name)) for name in layers]
        out = model(leaf)
    outs = [s[0] for s in seen]
    (grad,) = torch.autograd.grad(out[:, target].sum(), outs[0], retain_graph=True)
    for i, (t, mask) in enumerate(zip(outs, masks)):
        below = outs[i + 1] if i + 1 < len(outs) else leaf
        (grad,) = torch.autograd.grad(t, below, grad * mask.view(1, -1, 1, 1), retain_graph=True)
    return x * grad


def test_two_channels_inside_a_branch_differ_and_match_the_masked_backward_by_hand():
    """Gradient × input at a conv inside a residual block (identity shortcut): each channel's heatmap is the
    backward from that channel of the layer alone (written out by hand); two channels differ clearly."""
    model, x = _resnet(), _x()
    layer = "layer1.conv2"
    maps = concepts.ConditionalHeatmaps(model, layer, method="input_x_gradient")(x, target=2, concepts=[0, 1, 5])
    heatmaps = maps.heatmaps.view(2, 3, *x.shape[1:])
    for j, c in enumerate([0, 1, 5]):
        mask = torch.zeros(8, dtype=torch.float64)
        mask[c] = 1
        ref = _through_by_hand(model, x, 2, [layer], [mask])
        assert torch.allclose(heatmaps[:, j], ref, rtol=1e-9, atol=1e-12), c
    a, b = heatmaps[:, 0].flatten(1), heatmaps[:, 1].flatten(1)
    differ = (a - b).norm(dim=1) / torch.maximum(a.norm(dim=1), b.norm(dim=1))
    assert differ.min() > 0.3, differ  # 8489776: 0.02-0.03 (the shortcut's relevance in both)


def test_lrp_concepts_conserve_their_relevance_and_all_channels_sum_to_the_relevance_at_the_layer():
    """LRP-ε on a bias-free ResNet: the total of each conditional heatmap is that channel's relevance at the layer
    (the concept is conserved), the heatmaps of all channels sum to the relevance passing through the layer, and
    that plus the shortcut's relevance is the logit."""
    model, x = _resnet(bias_free=True), _x()
    for layer in ("layer1.conv2", "layer2.conv2"):
        every = concepts.ConditionalHeatmaps(model, layer, method_settings=EPS)(x, target=1)
        channels = every.relevance.shape[0] // 2
        totals = every.heatmaps.flatten(1).sum(1)
        assert torch.allclose(totals, every.relevance, rtol=1e-8, atol=1e-10), layer  # 8489776: off by up to 13x
        through = every.heatmaps.view(2, channels, -1).sum(1)
        assert torch.allclose(through.sum(1), every.relevance.view(2, channels).sum(1), rtol=1e-8), layer
        with Recorder(model, [layer], keep=("relevance",)) as rec:
            full = concepts.ConditionalHeatmaps(model, layer, method_settings=EPS).method(x, target=1)
        at_layer = rec[layer].relevance.flatten(1).sum(1)
        logit = full.output[:, 1]
        assert torch.allclose(at_layer, through.sum(1), rtol=1e-8), layer
        assert (at_layer - logit).abs().min() > 1e-3 * logit.abs().max(), layer  # the shortcut carries relevance
        # the rest of the unconditional heatmap is the shortcut's (no mask): its total closes the balance
        bypass = full.attribution.flatten(1) - through
        assert torch.allclose(bypass.sum(1) + through.sum(1), logit, rtol=1e-8), layer
        assert torch.allclose(every.share.view(2, channels).abs().sum(1), torch.full((2,), 100.0, dtype=torch.float64))


def test_without_shortcut_all_channels_sum_to_the_unconditional_heatmap():
    """A model whose every path crosses the layer: the zeroed row carries nothing, the sum is the heatmap."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).double().eval()
    x = _x()
    every = concepts.ConditionalHeatmaps(model, "2", method="lrp:composite=epsilon_plus_flat")(x, target=0)
    full = concepts.ConditionalHeatmaps(model, "2", method="lrp:composite=epsilon_plus_flat").method(x, target=0)
    assert torch.allclose(every.heatmaps.view(2, 5, *x.shape[1:]).sum(1), full.attribution, rtol=1e-9, atol=1e-12)


def test_hierarchy_across_two_residual_blocks_is_the_relevance_through_both_layers():
    """Two conditioned layers in different residual blocks: the heatmap of (upper channel, lower channel) is the
    backward through both channels only (inclusion–exclusion over the shortcuts), as written out by hand."""
    model, x = _resnet(), _x(1, seed=5)
    upper, lower = "layer2.conv2", "layer1.conv2"
    split = concepts.Hierarchy(model, upper, lower=lower, top=3, method="input_x_gradient")(x, target=0,
                                                                                           concepts=[4])[0]
    masks_upper = condition_masks([4], 16, dtype=torch.float64)[0]
    for j, c in enumerate(split.channels.tolist()):
        ref = _through_by_hand(model, x, 0, [upper, lower], [masks_upper, condition_masks([c], 8,
                                                                                        dtype=torch.float64)[0]])
        assert ref.abs().max() > 1e-6 and torch.allclose(split.heatmaps[j], ref[0], rtol=1e-9, atol=1e-12), c


def test_through_rows_share_the_zeroed_rows():
    """One zeroed row per sample and layer subset, whatever the number of conditions."""
    rows = through_rows(torch.tensor([0, 0, 0, 1, 1]), {"a": condition_masks([0, 1, 2, 0, 1], 3)})
    assert rows.sample.tolist().count(0) == 4 and rows.sample.tolist().count(1) == 3
    assert [s for s, _ in rows.terms] == [1, -1]
    value = torch.arange(rows.sample.shape[0], dtype=torch.float64)[:, None]
    expect = value[rows.full] - value[rows.terms[1][1]]
    assert torch.equal(rows(value), expect)


def test_default_concept_layer_of_a_resnet_gives_conserving_distinct_concepts():
    """The CLI's default concept layer (the last convolution: the shortcut's 1×1 conv in ResNetLike, the main
    branch is its bypass) gives concepts that conserve their relevance and heatmaps that differ."""
    model, x = _resnet(bias_free=True), _x()
    layer = find_layer(model, None)[0]
    top = concepts.Composition(model, layer, top=3, method_settings=EPS)(x, target=1)
    assert torch.allclose(top.heatmaps.flatten(1).sum(1), top.relevance, rtol=1e-8, atol=1e-10)
    h = top.heatmaps.flatten(1)
    assert ((h[0] - h[1]).norm() / h[0].norm()) > 0.3 and ((h[3] - h[4]).norm() / h[3].norm()) > 0.3


def test_report_command_concepts_section_on_a_resnet(capsys, tmp_path):
    """``xaikit report --sections concepts`` with the default concept layer on a ResNet-like model."""
    from skimage import io as skio

    from xaikit.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        skio.imsave(folder / f"{name}.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), check_contrast=False)
    out = tmp_path / "report"
    code = main(["report", "-m", "models:ResNetLike", "-i", str(folder), "--image-size", "16", "--sections",
                 "concepts", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    page = (out / "index.html").read_text()
    assert f"layer {find_layer(ResNetLike(), None)[0]}" in page and page.count(" %</small>") == 2 * 3
