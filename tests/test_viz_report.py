"""The HTML report: score table (arrows, best per metric), image grids, settings and versions."""
import importlib.util
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xaikit import viz
from xaikit.viz.report import Scores


def table_like(**changes):
    """A small stand-in for a benchmark table: what the report reads of one."""
    fields = dict(
        methods=["Gradient", "LRP(epsilon)", "Occlusion"],
        metrics=["pixel_flipping", "pointing_game", "sparseness"],
        mean=torch.tensor([[0.30, 0.50, 0.40], [0.10, 0.90, 0.60], [0.20, 0.90, float("nan")]]),
        sem=np.full((3, 3), 0.01),
        higher_is_better={"pixel_flipping": False, "pointing_game": True, "sparseness": True},
        curves={"pixel flipping": {"Gradient": (np.linspace(0, 1, 5), np.linspace(1, 0, 5))}},
    )
    fields.update(changes)
    return SimpleNamespace(**fields)


def test_best_per_metric_follows_each_metrics_direction_and_marks_ties():
    best = Scores.of(table_like()).best()
    # pixel flipping: lower is better -> LRP; pointing game: tie LRP/Occlusion; sparseness: NaN never best
    np.testing.assert_array_equal(best, [[False, False, False], [True, True, True], [False, True, False]])


def test_scores_section_renders_arrows_best_marks_and_files(tmp_path):
    section = viz.scores_section(tmp_path, table_like(), files={"CSV": "scores.csv"})
    html = section.html
    assert 'title="lower is better">pixel_flipping&nbsp;<span class="arrow">↓</span>' in html
    assert 'title="higher is better">pointing_game&nbsp;<span class="arrow">↑</span>' in html
    rows = re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", html)
    marked = {name: re.findall(r'<td( class="best")?>', cells) for name, cells in rows}
    assert [bool(m) for m in marked["LRP(epsilon)"]] == [True, True, True]
    assert [bool(m) for m in marked["Occlusion"]] == [False, True, False]
    assert "0.1 ± 0.01 ★" in html and "n/a" in html
    assert '<a href="scores.csv">CSV</a>' in html
    assert (tmp_path / "images" / "scores.png").stat().st_size > 0
    assert (tmp_path / "images" / "curve_pixel-flipping.png").stat().st_size > 0


def test_scores_reject_a_table_of_the_wrong_shape_or_without_fields():
    with pytest.raises(ValueError, match=r"table.mean must be \(methods, metrics\) = \(3, 3\)"):
        Scores.of(table_like(mean=np.zeros((3, 2))))
    with pytest.raises(TypeError, match="lacks higher_is_better"):
        Scores.of(SimpleNamespace(methods=[], metrics=[], mean=np.zeros((0, 0))))


def test_image_section_and_report_write_every_picture_and_the_settings(tmp_path):
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3))
    maps = {"Gradient": np.zeros((2, 8, 8)), "LRP(ε<1>)": np.ones((2, 8, 8))}
    section = viz.image_section(tmp_path, images, maps, ["cat", "cup"], ["cat p=0.9", "cup"], {"Gradient": 0.5})
    index = viz.write_report(tmp_path, [section, viz.note_section("Text", "needs xaikit.zoo.text")],
                             {"seed": 3, "methods": ["gradient", "lrp"]}, title="test <report>")
    page = index.read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 2 * 3 + 1  # inputs and heatmaps of two samples, and the overview grid
    assert all((tmp_path / s).is_file() for s in sources)
    assert "LRP(ε&lt;1&gt;)" in page and "<title>test &lt;report&gt;</title>" in page  # labels are escaped
    assert "0.50 s" in page and "cat p=0.9" in page
    assert "Not included: needs xaikit.zoo.text" in page
    assert "<th>seed</th><td>3</td>" in page and "<th>torch</th>" in page
    assert "http" not in page  # self-contained: nothing fetched from elsewhere


class CellTable:
    """Stand-in with the per-cell interface of ``xk.metrics.BenchmarkResult``: scores per (method, metric),
    ``mean``/``sem`` as functions, curves ``(N, S)`` per cell with their positions in ``info``."""

    def __init__(self):
        self.methods, self.metrics = ["A", "B"], ["flip", "mprt", "gini"]
        self.higher_is_better = {"flip": False, "mprt": False, "gini": True}
        self.scores = {("A", "flip"): torch.tensor([1.0, 3.0]), ("B", "flip"): torch.tensor([0.0, 1.0]),
                       ("A", "mprt"): torch.tensor([0.5, 0.5]), ("B", "mprt"): torch.tensor([0.2, float("nan")]),
                       ("A", "gini"): torch.tensor([0.1, 0.3]), ("B", "gini"): torch.full((2,), float("nan"))}
        self.curves = {("A", "flip"): torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.7, 0.2]]),
                       ("B", "mprt"): torch.tensor([[1.0, 0.4], [1.0, float("nan")]])}
        self.info = {("A", "flip"): {"fraction": torch.tensor([0.0, 0.5, 1.0])},
                     ("B", "mprt"): {"layers": ["original", "fc"]}, ("B", "gini"): {"error": "ValueError: boom\nmore"}}

    def mean(self, method, metric):
        s = self.scores[(method, metric)]
        s = s[~torch.isnan(s)]
        return float(s.mean()) if len(s) else float("nan")

    def sem(self, method, metric):
        s = self.scores[(method, metric)]
        s = s[~torch.isnan(s)]
        return float(s.std() / len(s) ** 0.5) if len(s) > 1 else float("nan")


def test_scores_read_a_per_cell_benchmark_table_with_curves_and_failed_cells(tmp_path):
    scores = Scores.of(CellTable())
    np.testing.assert_allclose(scores.mean, [[2.0, 0.5, 0.2], [0.5, 0.2, np.nan]])
    np.testing.assert_allclose(scores.sem[0, 0], 1.0)
    assert np.isnan(scores.sem[1, 1])  # one defined score: no standard error
    np.testing.assert_array_equal(scores.best(), [[False, False, True], [True, True, False]])
    x, y, err = scores.curves["flip"]["A"]
    np.testing.assert_allclose(x, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(y, [1.0, 0.6, 0.1])
    np.testing.assert_allclose(err, [0.0, 0.1, 0.1])  # std (ddof 1) / sqrt(2)
    x, y, err = scores.curves["mprt"]["B"]
    assert list(x) == ["original", "fc"] and y[1] == pytest.approx(0.4) and np.isnan(err[1])  # NaN left out
    assert scores.errors == {("B", "gini"): "ValueError: boom\nmore"}
    html = viz.scores_section(tmp_path, CellTable()).html
    assert '<td class="failed" title="ValueError: boom\nmore">failed</td>' in html
    assert (tmp_path / "images" / "curve_mprt.png").is_file()


@pytest.mark.skipif(importlib.util.find_spec("xaikit.metrics") is None, reason="needs xaikit.metrics")
def test_scores_read_the_real_benchmark_table():
    from xaikit.metrics import BenchmarkResult

    stand_in = CellTable()
    table = BenchmarkResult(stand_in.methods, stand_in.metrics, stand_in.scores, stand_in.higher_is_better,
                           curves=stand_in.curves, info=stand_in.info)
    scores = Scores.of(table)
    np.testing.assert_allclose(scores.mean, Scores.of(stand_in).mean)
    assert set(scores.curves) == {"flip", "mprt"} and scores.errors == {("B", "gini"): "ValueError: boom\nmore"}


def test_curves_have_axis_labels_from_what_their_metric_reports():
    from xaikit.viz.report import curve_axes

    class Table:
        info = {("g", "PixelFlipping"): {"fraction": [0, 1]}, ("g", "MPRT"): {"layers": ["original", "fc"]}}

    assert curve_axes(Table(), "PixelFlipping")[0].startswith("fraction of the input perturbed")
    assert curve_axes(Table(), "MPRT")[1] == "similarity to the original explanation"
    assert curve_axes(Table(), "Other") == ("step", "value")
