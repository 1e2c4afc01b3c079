"""Token heatmaps (HTML, terminal) and BiLRP renderings."""
import re

import matplotlib
import pytest
import torch

from xaikit.viz.text import bilrp_figure, bilrp_html, merge_subwords, token_html, token_terminal

matplotlib.use("Agg")


def test_word_pieces_merge_into_words():
    words, values = merge_subwords(["[CLS]", "play", "##ing", "ball", "[SEP]"], [0.5, 1.0, 2.0, -1.0, 0.25])
    assert words == ["[CLS]", "playing", "ball", "[SEP]"] and values == [0.5, 3.0, -1.0, 0.25]
    words, values = merge_subwords(["The", "Ġquick", "est", "Ġfox", "."], [1, 2, 3, 4, 5])
    assert words == ["The", "quickest", "fox."] and values == [1, 5, 9]
    with pytest.raises(ValueError, match="one value per token"):
        merge_subwords(["a", "b"], [1.0])


def test_html_is_self_contained_and_coloured_by_sign_and_magnitude():
    page = token_html(["good", "<bad>", "meh"], torch.tensor([2.0, -1.0, 0.0]), title="t")
    assert page.startswith("<!DOCTYPE html>") and "http" not in page and "<script" not in page
    assert "&lt;bad&gt;" in page  # escaped
    alphas = re.findall(r"rgba\((\d+),(\d+),(\d+),([0-9.]+)\)", page)
    assert alphas[0] == ("220", "38", "38", "1.000")  # largest positive: full red
    assert alphas[1][:3] == ("37", "99", "235") and float(alphas[1][3]) == pytest.approx(0.5)
    assert float(alphas[2][3]) == 0.0
    assert 'title="+2"' in page
    batch = token_html([["a", "b"], ["c"]], torch.tensor([[1.0, 2.0], [3.0, 9.0]]), merge=True, fragment=True)
    assert batch.count('class="seq"') == 2 and "<html" not in batch


def test_terminal_rendering():
    plain = token_terminal(["play", "##ing", "well"], [1.0, 0.5, -0.25], merge=True, color=False)
    assert plain == "playing(+1.5) well(-0.25)"
    coloured = token_terminal(["a", "b"], [1.0, -1.0])
    assert "\x1b[48;2;220;38;38m" in coloured and "\x1b[48;2;37;99;235m" in coloured


def test_bilrp_renderings():
    matrix = torch.tensor([[1.0, -0.5], [0.0, 0.25], [0.1, 0.2]])
    page = bilrp_html(["a", "b", "c"], ["x", "y"], matrix)
    assert page.count("<td") == 6 and page.startswith("<!DOCTYPE html>")
    figure = bilrp_figure(["a", "b", "c"], ["x", "y"], matrix)
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["a", "b", "c"]
    assert axis.images[0].get_array().shape == (3, 2)
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        bilrp_html(["a", "b"], ["x", "y"], matrix)
