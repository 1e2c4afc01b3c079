"""xaikit.improve: losses equal their formulas and leave nothing behind, ClArC/SpRAy/pruning closed forms,
the data sets with a known answer, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.improve import (ExplanationGuidedLoss, Projected, RightForRightReasonsLoss, a_clarc,
                            channel_importance, fit_cav, project, prune_plan, pruned, rrr_penalty, spray)
from xaikit.improve.clarc import layers_after
from xaikit.improve.layers import capture
from xaikit.zoo import add_watermark, make_decoy_digits, make_watermark_shapes, watermark_mask


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def _data(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 3, 4, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    masks = torch.rand(n, 1, 3, 4, generator=g) > 0.5
    return x, y, masks


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_rrr_penalty_is_ross_formula_and_grad_holds_the_training_gradient():
    model, (x, y, masks) = _mlp(), _data()
    loss_fn = RightForRightReasonsLoss(lam=10.0)
    loss = loss_fn(model, x, y, masks)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    twin = _mlp()
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(twin(leaf).log_softmax(1).sum(), leaf, create_graph=True)
    expected = F.cross_entropy(twin(x), y) + 10.0 * ((masks * g) ** 2).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected.detach())
    for p, e in zip(model.parameters(), torch.autograd.grad(expected, list(twin.parameters()))):
        torch.testing.assert_close(p.grad, e)
    assert _no_hooks(model)


def test_relevance_penalty_is_lrp_of_the_true_class_inside_the_masks():
    model, (x, y, masks) = _mlp(), _data()
    penalty = rrr_penalty(model, x, masks, y, method="lrp:composite=epsilon")
    relevance = xk.LRP(model, composite="epsilon")(x, target=y).attribution
    torch.testing.assert_close(penalty.detach(), ((masks * relevance) ** 2).flatten(1).sum(1).mean())
    assert penalty.requires_grad


def test_explanation_guided_loss_is_the_formula():
    model, (x, y, _) = _mlp(), _data()
    eps = 1e-6
    loss_fn = ExplanationGuidedLoss("2", lam=0.5, method="lrp:composite=epsilon")
    parts = loss_fn(model, x, y, return_parts=True)
    loss = parts.loss
    loss.backward()
    twin = _mlp()
    f = twin[2](twin[1](twin[0](x)))
    head = twin[3]
    z = head(f).gather(1, y[:, None])
    # ε rule on the last layer: R_j = f_j w_yj · z / (z + ε sign z) (the bias absorbs its share)
    relevance = (f * head.weight[y] * (z / (z + eps * torch.where(z >= 0, 1.0, -1.0)))).detach()
    weights = 1 + relevance / relevance.abs().amax(1, keepdim=True)
    expected = F.cross_entropy(head(f), y) + 0.5 * F.cross_entropy(head(weights * f), y)
    torch.testing.assert_close(loss.detach(), expected.detach())
    for p, e in zip(model.parameters(), torch.autograd.grad(expected, list(twin.parameters()))):
        torch.testing.assert_close(p.grad, e)
    assert _no_hooks(model)
    torch.testing.assert_close(parts.logits.detach(), model(x).detach())


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_cav_pattern_is_the_mean_difference_and_p_clarc_projects_onto_the_clean_mean():
    model = _cnn()
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(10, 3, 6, 6, generator=g)
    artifact = clean.clone()
    artifact[:, :, :2, :2] = 3.0
    cav = fit_cav(model, "1", artifact, clean, classifier="pattern")
    with torch.no_grad():
        a_art, a_clean = model[1](model[0](artifact)), model[1](model[0](clean))
    diff = (a_art.mean(0) - a_clean.mean(0)).flatten()
    torch.testing.assert_close(cav.direction.flatten(), diff / diff.norm(), rtol=1e-5, atol=1e-6)
    assert cav.accuracy == 1.0
    with torch.no_grad(), project(model, cav) as projected, capture(model, "1") as seen:
        projected(artifact)
    a = seen[0]
    v = cav.direction
    torch.testing.assert_close((a * v).flatten(1).sum(1), (cav.clean_mean * v).sum().expand(10), rtol=1e-5,
                               atol=1e-5)
    residual = a - (a * v).flatten(1).sum(1).view(-1, 1, 1, 1) * v
    expected = a_art - (a_art * v).flatten(1).sum(1).view(-1, 1, 1, 1) * v
    torch.testing.assert_close(residual, expected, rtol=1e-5, atol=1e-5)  # only the v component moved
    assert _no_hooks(model)
    wrapped = Projected(model, cav)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(clean), Projected(model, cav)(clean))
    assert _no_hooks(model)
    svm = fit_cav(model, "1", artifact, clean, classifier="svm")
    assert svm.accuracy == 1.0 and abs(float(svm.direction.norm()) - 1) < 1e-5


def test_a_clarc_trains_only_the_layers_after_and_leaves_the_original():
    model = _cnn()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, 6, 6, generator=g)
    y = torch.arange(16) % 2
    artifact = x[:4].clone()
    artifact[:, :, :2, :2] = 3.0
    cav = fit_cav(model, "1", artifact, x[4:], classifier="pattern")
    assert layers_after(model, "1", x) == ["2", "6"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = a_clarc(model, cav, x, y, epochs=2, batch_size=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and _no_hooks(model)
    state = tuned.state_dict()
    assert torch.equal(state["0.weight"], before["0.weight"]) and not torch.equal(state["2.weight"], before["2.weight"])
    assert _no_hooks(tuned) and not tuned.training


def test_spray_separates_two_strategies_and_the_eigengap_finds_two():
    g = torch.Generator().manual_seed(5)
    maps = 0.05 * torch.rand(40, 1, 16, 16, generator=g)
    maps[:20, :, :4, :4] += 1.0  # one group looks at a corner spot
    maps[20:, :, 6:12, 6:12] += 0.5  # the other at the centre
    result = spray(maps, seed=0)
    assert result.n_clusters == 2
    labels = result.labels
    assert (labels[:20] == labels[0]).all() and (labels[20:] == labels[20]).all() and labels[0] != labels[20]
    assert result.eigenvalues[0].abs() < 1e-8


def test_pruning_criteria_closed_forms_and_reversible_masks():
    model, (x, y, _) = _mlp(), _data()
    h = model[2](model[1](model[0](x))).detach()
    w = model[3].weight.detach()[y]
    lrp = channel_importance(model, "2", x, y, "lrp", method="lrp:composite=zero")["2"]
    torch.testing.assert_close(lrp, (h * w).mean(0))
    taylor = channel_importance(model, ["2"], x, y, "taylor")["2"]
    torch.testing.assert_close(taylor, (h * w).abs().mean(0))
    gradient = channel_importance(model, ["2"], x, y, "gradient")["2"]
    torch.testing.assert_close(gradient, w.abs().mean(0))  # at the ReLU output: the weights of the class
    weight = channel_importance(model, ["1"], x, y, "weight")["1"]
    torch.testing.assert_close(weight, model[1].weight.detach().norm(dim=1))
    plan = prune_plan({"2": lrp}, 0.25)
    assert int((~plan["2"]).sum()) == 2 and set(torch.nonzero(~plan["2"]).flatten().tolist()) == set(
        torch.sort(lrp).indices[:2].tolist())
    with pruned(model, plan), capture(model, "2") as seen, torch.no_grad():
        model(x)
    assert (seen[0][:, ~plan["2"]] == 0).all() and _no_hooks(model)


def test_decoy_digits_and_watermark_shapes_have_their_known_answer():
    train, test = make_decoy_digits(seed=0, n_train=600)
    assert train.x.shape == (600, 1, 12, 12) and len(test) == 1797 - 600
    assert (train.mask.flatten(1).sum(1) == 4).all()
    level = (train.x * train.mask).flatten(1).sum(1) / 4
    torch.testing.assert_close(level, 1 - 0.09 * train.y.float())
    test_level = (test.x * test.mask).flatten(1).sum(1) / 4
    assert ((test_level - (1 - 0.09 * test.y.float())).abs() > 0.05).all()  # the decoy misleads at test time
    clean, _ = make_decoy_digits(seed=0, n_train=600, decoy=False)
    assert (clean.x * clean.mask).abs().sum() == 0 and torch.equal(clean.y, train.y)
    data = make_watermark_shapes(200, seed=0, fraction=0.5)
    assert (data.y[data.artifact] == 0).all() and 0.3 < data.artifact[data.y == 0].float().mean() < 0.7
    marked = add_watermark(data.x)
    region = watermark_mask(32)
    assert torch.equal(marked[data.artifact], data.x[data.artifact])
    assert torch.equal(marked[..., ~region], data.x[..., ~region])


def test_bad_input_raises_clear_errors():
    model, (x, y, masks) = _mlp(), _data()
    with pytest.raises(ValueError, match="lam"):
        RightForRightReasonsLoss(lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        ExplanationGuidedLoss("2", lam=-0.1)
    with pytest.raises(ValueError, match="masks"):
        RightForRightReasonsLoss()(model, x, y, masks[:, :, :2])
    with pytest.raises(ValueError, match="masks"):
        rrr_penalty(model, x, masks[:3], y)
    with pytest.raises(ValueError, match="method 'occlusion' does not support create_graph=True"):
        RightForRightReasonsLoss(method="occlusion")
    with pytest.raises(ValueError, match="y"):
        rrr_penalty(model, x, masks, None, method="lrp:composite=epsilon_plus")
    with pytest.raises(ValueError, match="layer.*'nope'"):
        ExplanationGuidedLoss("nope")(model, x, y)
    with pytest.raises(ValueError, match="nope"):
        fit_cav(model, "nope", x, x)
    with pytest.raises(ValueError, match="nope"):
        channel_importance(model, ["nope"], x, y)
    with pytest.raises(ValueError, match="nope"):
        with pruned(model, {"nope": torch.ones(3, dtype=torch.bool)}):
            pass
    with pytest.raises(ValueError, match="criterion"):
        channel_importance(model, ["2"], x, y, "magic")
    with pytest.raises(ValueError, match="fraction"):
        prune_plan({"2": torch.ones(8)}, 1.5)
    with pytest.raises(ValueError, match="classifier"):
        fit_cav(model, "2", x, x, classifier="lda")
    assert _no_hooks(model)
