"""Counterfactuals (xaikit.counterfactuals) and their metrics: validity where one exists within the constraints,
"none found" where none does (closed form on a linear model), constraints asserted on every returned candidate,
seeded determinism, the model unchanged, bad input; the metrics on hand-made examples with known values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.counterfactuals import Counterfactuals

from models import assert_unchanged, snapshot


def linear_model(w=(2.0, -1.0, 0.0), b=0.0) -> nn.Module:
    """Two classes, score of class 1 minus class 0 = w·x + b (float64)."""
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0] * 3, list(w)], dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.0, b], dtype=torch.float64))
    return model.eval()


@pytest.fixture(scope="module")
def table():
    g = torch.Generator().manual_seed(0)
    data = torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1  # every column in [-1, 1]
    data[:, 2] = torch.randint(3, (200,), generator=g).double()  # a categorical column with codes 0, 1, 2
    return data


def check_constraints(result, x, low, high, immutable=()):
    """Every returned candidate: inside [low, high], immutable columns equal to x, categories allowed."""
    for i in range(x.shape[0]):
        for j in range(result.counterfactuals.shape[1]):
            c = result.counterfactuals[i, j]
            assert bool(((c >= low - 1e-12) & (c <= high + 1e-12)).all())
            for q in immutable:
                assert c[q] == x[i, q]
            assert float(c[2]) in (0.0, 1.0, 2.0)


@pytest.mark.parametrize("search", ["gradient", "genetic"])
def test_valid_counterfactuals_within_constraints(table, search):
    model = linear_model()
    before = snapshot(model)
    x = torch.tensor([[-0.5, 0.5, 1.0], [-0.2, 0.1, 0.0], [-0.9, 0.9, 2.0]], dtype=torch.float64)  # class 0
    cf = Counterfactuals(model, k=2, search=search, data=table, feature_names=["a", "b", "c"], categorical=["c"],
                         immutable=["b"], ranges={"a": (-1.0, 0.6)}, seed=0)
    result = cf(x, target=1)
    assert_unchanged(model, before)
    # a counterfactual exists: a > b / 2 within a ≤ 0.6 for every row, so every sample gets one
    assert result.found.any(1).all()
    with torch.no_grad():
        assert (model(result.counterfactuals[result.found]).argmax(1) == 1).all()
    low = torch.tensor([-1.0, -1.0, 0.0], dtype=torch.float64)
    high = torch.tensor([0.6, 1.0, 2.0], dtype=torch.float64)
    check_constraints(result, x, low, high, immutable=[1])
    assert torch.equal(result.counterfactuals[:, :, 1], x[:, 1:2].expand(-1, 2))
    again = cf(x, target=1)
    assert torch.equal(again.counterfactuals, result.counterfactuals)  # seeded
    assert "→" in result.changes(0, 0) and "**" in result.to_markdown()


def test_none_found_within_the_constraints_is_reported(table):
    model = linear_model()
    # b is immutable and a may only reach 0.2: 2a − b ≤ 0.4 − 0.9 < 0, so no counterfactual exists for x
    x = torch.tensor([[-0.5, 0.9, 1.0]], dtype=torch.float64)
    cf = Counterfactuals(model, data=table, feature_names=["a", "b", "c"], categorical=["c"], immutable=["b"],
                         ranges={"a": (-1.0, 0.2)}, seed=0, steps=100, generations=10)
    with pytest.warns(UserWarning, match="none found within the constraints"):
        result = cf(x, target=1)
    assert not result.found.any()
    assert torch.equal(result.counterfactuals[0, 0], x[0])
    assert result.changes(0) == "none found within the constraints"
    assert xk.metrics.Validity()(model, x, 1, result).item() == 0.0


def test_directions_are_respected_and_the_closest_change_is_found(table):
    model = linear_model(w=(1.0, 0.0, 0.0), b=-0.5)  # class 1 iff a > 0.5
    x = torch.tensor([[0.0, 0.3, 1.0]], dtype=torch.float64)
    cf = Counterfactuals(model, data=table, feature_names=["a", "b", "c"], categorical=["c"],
                         directions={"a": "increase"}, seed=0, steps=400, kappa=0.01)
    result = cf(x, target=1)
    c = result.counterfactuals[0, 0]
    assert result.found.all() and c[0] > 0.5 and c[0] < 0.6  # Wachter: the smallest change, a just past 0.5
    assert c[1] == x[0, 1] and c[2] == x[0, 2]  # sparse: nothing else changes
    with pytest.raises(ValueError, match="direction"):
        Counterfactuals(model, data=table, directions={"a": "sideways"}, feature_names=["a", "b", "c"])


def test_any_callable_model_gets_the_gradient_free_search(table):
    weights = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)

    def predict(v):  # a plain function (no gradients)
        s = (v.double() @ weights)
        return torch.stack([-s, s], 1)

    x = torch.tensor([[-0.5, 0.5, 1.0]], dtype=torch.float64)
    result = Counterfactuals(predict, k=3, data=table, feature_names=["a", "b", "c"], categorical=["c"],
                             seed=0)(x, target=1)
    assert result.info["search"] == ["genetic"] and result.found.all()
    assert (predict(result.counterfactuals[0]).argmax(1) == 1).all()
    assert xk.metrics.Diversity()(predict, x, 1, result).item() > 0


def test_bad_input_names_the_argument(table):
    model = linear_model()
    x = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="target class 5 is impossible"):
        Counterfactuals(model, data=table)(x, target=5)
    with pytest.raises(ValueError, match="column in immutable.*'b'"):
        Counterfactuals(model, data=table, feature_names=["a", "b", "c"], immutable=["bb"])
    with pytest.raises(ValueError, match="column in ranges"):
        Counterfactuals(model, data=table, feature_names=["a", "b", "c"], ranges={"z": (0, 1)})
    with pytest.raises(ValueError, match="data="):
        Counterfactuals(model, immutable=["a"])
    with pytest.raises(TypeError, match="did you mean 'immutable'"):
        Counterfactuals(model, immutible=["a"])
    with pytest.raises(TypeError, match="token substitution are not implemented"):
        Counterfactuals(model)(torch.tensor([[1, 2, 3]]), target=1)


def test_image_counterfactuals_flip_a_small_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.rand(4, 1, 6, 6)
    target = (model(x).argmax(1) + 1) % 3
    result = Counterfactuals(model, feature_range=(0.0, 1.0), steps=200, learning_rate=0.05)(x, target=target)
    assert result.found.all()
    assert (model(result.counterfactuals[:, 0]).argmax(1) == target).all()
    assert result.counterfactuals.min() >= 0 and result.counterfactuals.max() <= 1


# -- the metrics, on hand-made counterfactuals with known values ----------------------------------------------
def test_metrics_on_hand_made_counterfactuals():
    model = linear_model()
    x = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    cfs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [-1.0, 0.0, 3.0]]], dtype=torch.float64)  # (1, 3, 3)
    # classes: 2a − b = 2 (1), 2 (1), −2 (0)
    assert xk.metrics.Validity()(model, x, 1, cfs).item() == pytest.approx(2 / 3)
    # proximity: mean over features of |c − x| = 1/3, 2/3, 4/3 -> mean 7/9
    assert xk.metrics.Proximity()(model, x, 1, cfs).item() == pytest.approx(7 / 9)
    # with MAD units: data whose MAD is (1, 2, 1) halves the second column's change
    data = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 1.0], [-1.0, -2.0, -1.0], [2.0, 4.0, 2.0], [-2, -4, -2]],
                        dtype=torch.float64)
    assert xk.metrics.mad(data).tolist() == [1.0, 2.0, 1.0]
    assert xk.metrics.Proximity(scale="mad", data=data)(model, x, 1, cfs).item() == pytest.approx((1 + 1 + 4) / 9)
    # sparsity: unchanged features 2/3, 2/3, 1/3 -> 5/9
    assert xk.metrics.CounterfactualSparsity()(model, x, 1, cfs).item() == pytest.approx(5 / 9)
    # diversity: pairwise mean |c_a − c_b| = 1, 5/3, 2 (each pair counted twice) -> 14/9
    assert xk.metrics.Diversity()(model, x, 1, cfs).item() == pytest.approx(14 / 9)
    # plausibility: distance to the nearest data row (mean over features of |.|)
    near = torch.tensor([[[1.0, 2.0, 1.0]]], dtype=torch.float64)
    assert xk.metrics.Plausibility(data=data)(model, x, 1, near).item() == 0.0
    assert xk.metrics.Plausibility(data=data, neighbours=2)(model, x, 1, near).item() == pytest.approx(
        (0 + 4 / 3) / 2)  # second nearest: [0, 0, 0] at (1 + 2 + 1) / 3

    class Halve(nn.Module):
        def forward(self, v):
            return v / 2

    assert xk.metrics.Plausibility(autoencoder=Halve())(model, x, 1, near).item() == pytest.approx(
        0.25 + 1 + 0.25)  # ‖c − c/2‖² = (0.5² + 1² + 0.5²)
    with pytest.raises(ValueError, match="data="):
        xk.metrics.Proximity(scale="mad")(model, x, 1, cfs)


def test_cli_writes_rules_and_counterfactual_tables(tmp_path, capsys):
    import numpy as np

    from xaikit.cli import main

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    csv = tmp_path / "table.csv"
    csv.write_text("\n".join([",".join(f"f{i}" for i in range(8))] + [",".join(map(str, row)) for row in x]))
    code = main(["explain", "-m", "models:mlp", "-i", str(csv), "--methods",
                 "anchors:samples=64,max_samples=512", "counterfactual:target=1,immutable=f0+f1,steps=60",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    rules = (tmp_path / "out" / "rules.txt").read_text().splitlines()
    assert rules and all(line.startswith("IF ") and " THEN class " in line for line in rules)
    table = (tmp_path / "out" / "counterfactuals.md").read_text()
    assert "| sample | counterfactual | found |" in table and "**" in table
    import csv as csv_module

    rows = list(csv_module.DictReader((tmp_path / "out" / "counterfactuals.csv").open()))
    originals = {r["sample"]: r for r in rows if r["counterfactual"] == "x"}
    found = [r for r in rows if r["counterfactual"] != "x" and r["found"] == "True"]
    assert found and all(r[f] == originals[r["sample"]][f] for r in found for f in ("f0", "f1"))  # immutable


def test_an_autoencoder_plausibility_term_pulls_towards_what_it_reconstructs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()

    class Half(nn.Module):  # reconstructs only the first half of the pixels: the other half is "implausible"
        def forward(self, v):
            keep = torch.zeros_like(v)
            keep[..., :2, :] = 1
            return v * keep

    x = torch.full((3, 1, 4, 4), 0.5)
    target = 1 - model(x).argmax(1)
    plain = Counterfactuals(model, feature_range=(0.0, 1.0), steps=150)(x, target=target)
    near = Counterfactuals(model, feature_range=(0.0, 1.0), steps=150, plausibility=Half(),
                           plausibility_weight=1.0)(x, target=target)
    assert plain.found.all() and near.found.all()
    score = xk.metrics.Plausibility(autoencoder=Half())
    assert (score(model, x, target, near) < score(model, x, target, plain)).all()


# -- latent space (an encoder/decoder pair) ---------------------------------------------------------------------
class _Tied(nn.Module):
    """A linear decoder whose image is a 2-d subspace of 4×4 images: every column of the image repeats one of two
    patterns (so a candidate off the decoder's image is easy to detect)."""

    def __init__(self):
        super().__init__()
        self.basis = nn.Parameter(torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) + 0.5)

    def forward(self, z):
        return torch.sigmoid(z @ self.basis).view(-1, 1, 4, 4)


def test_latent_counterfactuals_stay_on_the_decoders_image_and_flip_the_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()  # class 1 iff the pixels sum to more than 8
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(16), torch.ones(16)]))
        model[1].bias.copy_(torch.tensor([0.0, -8.0]))
    decoder = _Tied()
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(2)
    x = decoder(-torch.rand(5, 2, generator=g) - 0.5).detach()  # dark images: class 0
    target = torch.ones(5, dtype=torch.long)
    assert (model(x).argmax(1) == 0).all()
    before = [snapshot(m) for m in (model, decoder, encoder)]
    cf = Counterfactuals(model, k=2, encoder=encoder, decoder=decoder, feature_range=(0.0, 1.0), steps=100,
                         learning_rate=0.1, seed=0)
    result = cf(x, target=target)
    for m, snap in zip((model, decoder, encoder), before):
        assert_unchanged(m, snap)
    assert result.info["search"] == ["latent"] * 5 and result.info["space"] == "latent"
    found = result.found
    assert found.all()  # brighter images of the decoder's are class 1
    got = result.counterfactuals[found]
    with torch.no_grad():
        assert (model(got).argmax(1) == target[:, None].expand(-1, 2)[found]).all()
        # on the decoder's image: logit(c) lies in the span of the two basis rows (least squares residual ~ 0)
        logits = torch.logit(got.reshape(-1, 16).double(), eps=1e-12)
        basis = decoder.basis.detach().double()
        coef = torch.linalg.lstsq(basis.T, logits.T).solution
        assert (basis.T @ coef - logits.T).abs().max() < 1e-4
    assert got.min() >= 0 and got.max() <= 1
    assert torch.equal(cf(x, target=target).counterfactuals, result.counterfactuals)  # seeded


def test_latent_search_bad_input_names_the_argument():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    decoder, encoder = _Tied(), nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="both encoder= and decoder="):
        Counterfactuals(model, encoder=encoder)
    with pytest.raises(ValueError, match="search='gradient'"):
        Counterfactuals(model, encoder=encoder, decoder=decoder, search="genetic")
    wrong = nn.Sequential(nn.Linear(2, 9))
    before = snapshot(model)
    with pytest.raises(ValueError, match="decoder must map"):
        Counterfactuals(model, encoder=encoder, decoder=wrong)(x, target=1)
    assert_unchanged(model, before)


def test_cli_explains_images_with_anchors_and_counterfactuals(tmp_path, capsys):
    import numpy as np
    from skimage import io as skio

    from xaikit.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in "ab":
        skio.imsave(folder / f"{name}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), check_contrast=False)
    out = tmp_path / "out"
    code = main(["explain", "-m", "models:vgg_like", "-i", str(folder), "--image-size", "16", "--methods",
                 "anchors:features=grid:2,samples=32,max_samples=256", "counterfactual:target=3,steps=60",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    rules = (out / "rules.txt").read_text().splitlines()
    assert len(rules) == 2 and all(line.startswith("IF ") and " THEN class " in line for line in rules)
    saved = np.load(out / "counterfactuals.npz")
    assert saved["counterfactuals"].shape == (2, 1, 3, 16, 16)
    from models import vgg_like

    torch.manual_seed(0)  # the CLI's model: models:vgg_like built after seeding with --seed 0
    model = vgg_like().eval()
    found = torch.as_tensor(saved["found"])
    assert found.any()
    with torch.no_grad():
        classes = model(torch.as_tensor(saved["counterfactuals"][:, 0])).argmax(1)
        assert (classes[found[:, 0]] == 3).all() and (model(torch.as_tensor(saved["x"])).argmax(1) != 3).all()
    # the counterfactuals stay in the images' range (the model's input range, here [0, 1])
    assert saved["counterfactuals"].min() >= 0 and saved["counterfactuals"].max() <= 1
    page = (out / "index.html").read_text()
    assert "anchor" in page and "counterfactual 0" in page and "pixels changed" in page
    assert (out / "images" / "anchors_a__anchor.png").is_file()
    assert (out / "images" / "counterfactuals_a__0_change.png").is_file()


def test_report_sections_mark_exactly_the_changed_cells(tmp_path):
    x = torch.tensor([[0.0, 1.0, 2.0]])
    cfs = torch.tensor([[[0.0, 1.5, 2.0], [3.0, 1.0, -2.0]]])  # one change, then two
    found = torch.tensor([[True, True]])
    section = xk.viz.counterfactuals_section(x, cfs, found, torch.tensor([0]), torch.tensor([[1, 1]]),
                                             feature_names=["a", "b", "c"])
    assert section.html.count('class="changed"') == 3 and "<th>b</th>" in section.html
    images = torch.zeros(1, 1, 4, 4)
    moved = images.clone()[None]
    moved[0, 0, 0, 1, 2] = 1.0
    section = xk.viz.counterfactuals_section(images, moved, torch.tensor([[True]]), torch.tensor([0]),
                                             torch.tensor([[1]]), folder=tmp_path, low=0.0, high=1.0)
    assert "1 pixels changed" in section.html and (tmp_path / "images" / "counterfactuals_sample-0__0.png").is_file()
    rules = xk.viz.rules_section(["IF a > 1 THEN class 0 — precision 0.97, coverage 0.21"])
    assert "IF a &gt; 1 THEN class 0" in rules.html


def test_report_contrastive_section(tmp_path, capsys):
    import numpy as np
    from skimage import io as skio

    from xaikit.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    skio.imsave(folder / "a.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), check_contrast=False)
    out = tmp_path / "report"
    code = main(["report", "-m", "models:vgg_like", "-i", str(folder), "--image-size", "16", "--sections",
                 "contrastive", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    page = (out / "index.html").read_text()
    assert "Rules and counterfactuals: models:vgg_like" in page and " THEN class " in page
    assert "counterfactual 0" in page and (out / "images" / "report_anchors_a__anchor.png").is_file()


def test_diverse_sets_spread_and_the_setwise_sparsity_step_never_worsens_the_set():
    from xaikit.counterfactuals.search import dpp, margin, sparsify

    g = torch.Generator().manual_seed(3)
    data = torch.rand(100, 6, generator=g, dtype=torch.float64)
    model = nn.Linear(6, 2).double().eval()  # class 1 iff the six features sum to more than 4
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(6), torch.ones(6)]).double())
        model.bias.copy_(torch.tensor([0.0, -4.0], dtype=torch.float64))
    x = torch.full((3, 6), 0.5, dtype=torch.float64)
    diverse = Counterfactuals(model, k=4, data=data, seed=0)(x, target=1)
    closest = Counterfactuals(model, k=4, data=data, seed=0, diversity_weight=0.0)(x, target=1)
    assert diverse.found.all() and closest.found.all()
    spread = xk.metrics.Diversity()(model, x, 1, diverse)
    assert (spread > 2 * xk.metrics.Diversity()(model, x, 1, closest)).all()
    # the set-wise sparsity step: every candidate stays valid and the set's objective never rises
    scale = torch.ones(6, dtype=torch.float64)
    cands = (x[:, None] + torch.rand(3, 4, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    cands[..., 0] = 1.0
    found = model(cands).argmax(-1) == 1  # most are valid (sum > 4); the others are left as they are
    assert found.float().mean() > 0.5

    def objective(c):
        moved = (c - x[:, None]) / scale
        return 0.5 * moved.abs().mean(-1).mean(1) - dpp(moved)

    out = sparsify(lambda p: model(p), cands, found, x, torch.ones(3, dtype=torch.long), 0.0, scale, 0.5, 1.0)
    assert (margin(model(out), torch.ones(3, 4, dtype=torch.long))[found] <= 0).all()
    assert (objective(out) <= objective(cands) + 1e-12).all() and (out != cands).any()
