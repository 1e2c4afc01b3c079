"""The methods × metrics table, and the ground-truth shapes data set and model it is demonstrated on."""
import csv
import json
import math

import pytest
import torch

import xaikit as xk
from test_metrics_base import LinearScore, linear_case, shapes_model
from xaikit.zoo import accuracy, make_shapes


def test_shapes_data_is_seeded_balanced_and_masks_mark_the_objects():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.mask, b.mask) and not torch.equal(a.x, c.x)
    assert a.x.shape == (64, 3, 32, 32) and a.mask.shape == (64, 32, 32) and a.x.min() >= -1 and a.x.max() <= 1
    assert torch.bincount(a.y).tolist() == [16] * 4
    sizes = a.mask.flatten(1).sum(1)
    assert (sizes > 20).all() and (sizes < 400).all()
    inside = a.x.permute(0, 2, 3, 1)[a.mask].mean(0)
    outside = a.x.permute(0, 2, 3, 1)[~a.mask].mean(0)
    assert (inside > outside + 0.3).all()  # the object is where the mask says
    with pytest.raises(ValueError, match="classes"):
        make_shapes(8, classes=7)


def test_shapes_model_learns_the_task():
    model, test = shapes_model()
    assert accuracy(model, test) > 0.95
    assert not model.training


def test_benchmark_table_statistics_and_exports(tmp_path):
    model, x, attribution = linear_case(n=4)
    methods = {"gradient": xk.Gradient(model), "ixg": xk.InputXGradient(model)}
    metrics = [xk.metrics.FaithfulnessCorrelation(samples=10), xk.metrics.PixelFlipping(pixels_per_step=4),
               xk.metrics.MaxSensitivity(samples=3), xk.metrics.Sparseness()]
    table = xk.metrics.benchmark(model, (x, 0), methods, metrics)
    assert table.methods == ["gradient", "ixg"]
    assert table.metrics == ["FaithfulnessCorrelation", "PixelFlipping", "MaxSensitivity", "Sparseness"]
    direct = xk.metrics.FaithfulnessCorrelation(samples=10)(model, x, 0, attribution)
    assert torch.allclose(table.scores[("ixg", "FaithfulnessCorrelation")], direct)
    values = table.scores[("ixg", "PixelFlipping")].double()
    assert table.mean("ixg", "PixelFlipping") == pytest.approx(float(values.mean()))
    assert table.sem("ixg", "PixelFlipping") == pytest.approx(float(values.std() / 2))
    assert table.best("FaithfulnessCorrelation") == "ixg"  # the exact attribution of a linear model
    assert table.best("PixelFlipping") == "ixg"  # lower is better
    assert table.best("MaxSensitivity") == "gradient"  # constant gradient: zero
    assert table.curves[("ixg", "PixelFlipping")].shape == (4, 5)
    assert ("ixg", "Sparseness") not in table.curves
    markdown = table.to_markdown()
    assert "FaithfulnessCorrelation ↑" in markdown and "PixelFlipping ↓" in markdown
    assert markdown.count("**") == 2 * 4  # one best per metric
    table.to_csv(tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 8 and {r["best"] for r in rows if r["metric"] == "PixelFlipping" and r["method"] == "ixg"} == {"True"}
    table.to_json(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["metrics"][1] == {"name": "PixelFlipping", "higher_is_better": False, "family": "faithfulness",
                                  "best": "ixg", "best_all": ["ixg"]}
    assert data["cells"]["ixg"]["PixelFlipping"]["mean"] == pytest.approx(table.mean("ixg", "PixelFlipping"))
    assert len(data["curves"]["ixg"]["PixelFlipping"]) == 4
    assert table.to_dict(samples=False, curves=False)["cells"]["gradient"]["Sparseness"].keys() == {"mean", "sem", "n", "time_s"}


def test_benchmark_names_lists_and_checks_its_input():
    model, x, _ = linear_case(n=2)
    table = xk.metrics.benchmark(model, (x, None), [xk.Gradient(model), xk.Gradient(model)],
                                 [xk.metrics.Sparseness(), xk.metrics.Sparseness()])
    assert table.methods == ["Gradient", "Gradient #2"] and table.metrics == ["Sparseness", "Sparseness #2"]
    with pytest.raises(ValueError, match=r"pass data=\(x, y, mask\)"):
        xk.metrics.benchmark(model, (x, 0), [xk.Gradient(model)], [xk.metrics.PointingGame()])
    with pytest.raises(TypeError, match="tuple"):
        xk.metrics.benchmark(model, x, [xk.Gradient(model)], [xk.metrics.Sparseness()])
    with pytest.raises(TypeError, match="must be an xk.Metric or its name, got int"):
        xk.metrics.benchmark(model, (x, 0), [xk.Gradient(model)], [3])
    tabular = LinearScore(torch.randn(6)).eval()  # IROF segments images: it fails on tabular data
    z = torch.randn(3, 6)
    recorded = xk.metrics.benchmark(tabular, (z, 0), [xk.Gradient(tabular)], [xk.metrics.IROF(), xk.metrics.Sparseness()],
                                    on_error="record")
    assert math.isnan(recorded.mean("Gradient", "IROF")) and "images" in recorded.info[("Gradient", "IROF")]["error"]
    assert "n/a" in recorded.to_markdown() and recorded.count("Gradient", "Sparseness") == 3
    with pytest.raises(ValueError, match="images"):
        xk.metrics.benchmark(tabular, (z, 0), [xk.Gradient(tabular)], [xk.metrics.IROF()])


def test_benchmark_on_the_ground_truth_data_set():
    model, test = shapes_model()
    x, y, mask = test[:8].astuple()
    methods = {"Gradient": xk.Gradient(model), "LRP": xk.LRP(model)}
    metrics = {"PG": xk.metrics.PointingGame(), "RMA": xk.metrics.RelevanceMassAccuracy(),
               "MoRF": xk.metrics.PixelFlipping(pixels_per_step=32, softmax=True), "MPRT": xk.metrics.MPRT()}
    table = xk.metrics.benchmark(model, (x, y, mask), methods, metrics)
    for method in methods:
        assert table.count(method, "PG") == 8
        assert table.mean(method, "RMA") > mask.float().mean()  # better than relevance spread uniformly
    assert table.curves[("LRP", "MPRT")].shape[0] == 8


def test_metrics_and_methods_by_name_and_a_misspelt_name_gets_a_suggestion():
    """Issue 18: ``benchmark(..., ["pixel_flippin"])`` said "metrics['str'] must be an xk.Metric"."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    table = xk.metrics.benchmark(model, (x, None), ["gradient"], ["sparseness"])
    assert table.methods == ["Gradient"] and table.metrics == ["Sparseness"]
    with pytest.raises(ValueError, match="unknown metric 'pixel_flippin'; did you mean 'pixel_flipping'"):
        xk.metrics.benchmark(model, (x, None), ["gradient"], ["pixel_flippin"])
    with pytest.raises(ValueError, match="unknown method 'integrated_gradient'; did you mean 'integrated_gradients'"):
        xk.metrics.benchmark(model, (x, None), ["integrated_gradient"], ["sparseness"])


def test_tied_methods_are_all_best_in_every_export(tmp_path):
    """Issue 18: the HTML starred all tied methods, the CSV, Markdown and PNG only the first."""
    model, x, _ = linear_case(n=2)
    table = xk.metrics.benchmark(model, (x, 0), {"a": xk.Gradient(model), "b": xk.Gradient(model)},
                                 [xk.metrics.Sparseness()])
    assert table.best_methods("Sparseness") == ["a", "b"]
    table.to_csv(tmp_path / "t.csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["best"] for r in rows] == ["True", "True"]
    assert table.to_markdown().count("**") == 4
    assert json.loads(table.to_json())["metrics"][0]["best_all"] == ["a", "b"]
