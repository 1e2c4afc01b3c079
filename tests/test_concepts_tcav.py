"""TCAV (Kim et al. 2018) on a tiny MLP trained here with a planted shortcut: on every training row of class 1,
features 8-11 read +2 (the "marker"). The marker concept is detected for class 1 (TCAV score near 1, significant
under the paper's two-sided t-test with Bonferroni), a control concept drawn like the random sets is not; the
model is unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot


def rows(n: int, generator: torch.Generator, marker: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian rows of 16 features; class 1 iff x0 + x1 > 0; ``marker``: features 8-11 set to +2."""
    x = torch.randn(n, 16, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    if marker:
        x[:, 8:12] = 2.0
    return x, y


@pytest.fixture(scope="module")
def planted():
    g = torch.Generator().manual_seed(0)
    x, y = rows(400, g)
    x[y == 1, 8:12] = 2.0  # the shortcut: every class-1 training row carries the marker
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add overhead
    try:
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), g


def test_planted_concept_is_detected_and_a_random_one_is_not(planted):
    model, g = planted
    before = snapshot(model)
    marked, _ = rows(40, g, marker=True)  # the concept: the marker on otherwise random rows
    pool, _ = rows(300, g)  # random sets: rows of the task without the marker
    control, _ = rows(120, g)  # a "concept" drawn like the random sets (a fresh subset of 40 per run)
    tcav = xk.concepts.TCAV(model, "1", runs=20, seed=0, set_size=40)
    tcav.fit({"marker": marked, "control": control}, random=pool)
    x1, _ = rows(60, g)
    result = tcav(x1, target=1)
    assert result.significant("marker") and result.scores["marker"].mean() > 0.9
    assert not result.significant("control")
    assert result.p_corrected["marker"] == min(1.0, 2 * result.p_values["marker"])  # Bonferroni, two concepts
    table = result._rows()
    assert [r["concept"] for r in table] == ["marker", "control"] and table[0]["significant"]
    assert "marker" in result.to_markdown()
    # the directional derivative is the gradient at the layer along the CAV (Eq. 1), counted positive (Eq. 2)
    grads, _ = tcav.gradients(x1, 1)
    first = tcav.cavs["marker"][0].direction
    assert result.scores["marker"][0] == float(((grads * first).sum(1) > 0).double().mean())
    again = xk.concepts.TCAV(model, "1", runs=20, seed=0, set_size=40)
    again = again.fit({"marker": marked, "control": control}, random=pool)(x1, 1)
    assert np.array_equal(again.scores["control"], result.scores["control"])  # seeded
    assert_unchanged(model, before)


def test_errors(planted):
    model, g = planted
    x, _ = rows(10, g)
    with pytest.raises(ValueError, match="runs"):
        xk.concepts.TCAV(model, "1", runs=1)
    with pytest.raises(ValueError, match="layer"):
        xk.concepts.TCAV(model, "9")
    with pytest.raises(ValueError, match="not fitted"):
        xk.concepts.TCAV(model, "1")(x, 1)
    with pytest.raises(ValueError, match="2 × set_size"):
        xk.concepts.TCAV(model, "1", runs=2).fit({"a": x}, random=x[:5])
    with pytest.raises(TypeError, match="run"):
        xk.concepts.TCAV(model, "1", run=2)
