"""Feature names in, a table and bar/beeswarm plots out."""
import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit import viz

NAMES = ["age", "income", "height", "weight"]


def linear_case():
    model = nn.Linear(4, 2).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 1.0, 2.0, 3.0], [2.0, -1.0, 0.0, 1.0], [0.5, 0.5, -2.0, 0.0]])
    return model, x


def test_table_lists_named_features_by_magnitude_with_values():
    model, x = linear_case()
    expl = xk.ExactShapley(model)(x, target=0)  # linear, zero baseline: φ = w ⊙ x
    table = xk.tabular.feature_table(expl, NAMES, x)
    assert table.rows(0) == [("income", 1.0, -2.0), ("age", 1.0, 1.0), ("height", 2.0, 1.0), ("weight", 3.0, 0.0)]
    assert [name for name, *_ in table.summary()] == ["income", "age", "height", "weight"]
    np.testing.assert_allclose([m for _, m, _ in table.summary()], [5 / 3, 7 / 6, 2 / 3, 0.0], rtol=1e-6, atol=1e-9)
    markdown = table.ranking(0, top=2)
    assert markdown.splitlines()[2] == "| income | 1 | -2 |" and len(markdown.splitlines()) == 4
    assert "mean \\|attribution\\|" in str(table)  # several rows: the summary


def test_table_of_grouped_features_and_csv(tmp_path):
    model, x = linear_case()
    groups = torch.tensor([0, 0, 1, 1])
    expl = xk.ExactShapley(model, features=groups)(x, target=0)
    table = xk.tabular.feature_table(expl, ["personal", "body"])
    np.testing.assert_allclose(table.attributions[0], [-1.0, 1.0], atol=1e-6)
    assert np.isnan(table.values).all()  # no x given: values unknown
    lines = table.to_csv(tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "sample,feature,value,attribution" and len(lines) == 1 + 3 * 2


def test_table_errors_name_the_fix():
    model, x = linear_case()
    expl = xk.Occlusion(model)(x, target=0)
    with pytest.raises(ValueError, match="feature_names has 3 names but the explanation has 4 columns"):
        xk.tabular.feature_table(expl, NAMES[:3])
    with pytest.raises(TypeError, match="sequence of str"):
        xk.tabular.feature_table(expl, "age")
    with pytest.raises(ValueError, match="x must be the explained rows"):
        xk.tabular.feature_table(expl, NAMES, x[:2])
    with pytest.raises(ValueError, match="sample must be a row index in 0..2"):
        xk.tabular.feature_table(expl, NAMES).rows(5)
    with pytest.raises(TypeError, match="FeatureTable"):
        viz.plot_bar(expl)


def test_bar_and_beeswarm_show_names_values_and_a_colour_bar(tmp_path):
    model, x = linear_case()
    table = xk.tabular.feature_table(xk.ExactShapley(model)(x, target=0), NAMES, x)
    bar = viz.plot_bar(table, sample=0)
    ax = bar.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "income = 1" and len(labels) == 4  # largest |attribution| on top, with its value
    assert "-2" in [t.get_text() for t in ax.texts]  # bars annotated with the attribution
    assert [p.get_facecolor()[0] > 0.5 for p in ax.patches][-1] is False  # negative: blue
    bee = viz.plot_beeswarm(table)
    assert [t.get_text() for t in bee.axes[0].get_yticklabels()][-1] == "income"
    assert len(bee.axes) == 2 and "feature value" in bee.axes[1].get_ylabel()  # the colour bar explains colours
    assert "attribution" in bee.axes[0].get_xlabel()
    viz.save_figure(bee, tmp_path / "bee.png")
    assert (tmp_path / "bee.png").stat().st_size > 1000
