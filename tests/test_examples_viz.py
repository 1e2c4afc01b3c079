"""The report section of explanation by example: neighbours, similarity maps and PP/PN written as pictures."""
from __future__ import annotations

import pytest
import torch

from xaikit import viz


def test_examples_section_writes_every_picture(tmp_path):
    g = torch.Generator().manual_seed(0)
    query, neighbours = torch.rand(3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    maps = torch.randn(4, 3, 8, 8, generator=g)
    pertinent = {"pp": query * 0.5, "pp_map": query * 0.5, "pn": query, "pn_map": maps[0], "pp_caption": "kept 5 %",
                 "pn_caption": "classified disk"}
    section = viz.examples_section(tmp_path, query, "square", neighbours, [f"n{j}" for j in range(4)], maps, -maps,
                                   pertinent, low=0.0, high=1.0)
    for j in range(4):
        for name in (f"examples_neighbour{j}", f"examples_qmap{j}", f"examples_nmap{j}"):
            assert (tmp_path / "images" / f"{name}.png").exists() and f"images/{name}.png" in section.html
    for name in ("examples_query", "examples_pp", "examples_pp_map", "examples_pn", "examples_pn_map"):
        assert (tmp_path / "images" / f"{name}.png").exists()
    assert "classified disk" in section.html and "pertinent negative" in section.html and "n3" in section.html
    attribution = {"proponents": neighbours[:3], "proponent_captions": ["p0", "p1", "p2"], "opponents": neighbours[1:],
                   "opponent_captions": ["o0", "o1", "o2"], "method": "TRAK"}
    with_training = viz.examples_section(tmp_path, query, "square", neighbours, [f"n{j}" for j in range(4)],
                                         attribution=attribution, prefix="t_")
    for j in range(3):
        for kind in ("proponents", "opponents"):
            name = f"t_{kind}{j}"
            assert (tmp_path / "images" / f"{name}.png").exists() and f"images/{name}.png" in with_training.html
    assert "Training samples behind the prediction (TRAK)" in with_training.html and "o2" in with_training.html
    with pytest.raises(ValueError, match="proponent_captions"):
        viz.examples_section(tmp_path, query, "square", neighbours, [f"n{j}" for j in range(4)],
                             attribution={**attribution, "proponent_captions": ["a"]})
    index = viz.write_report(tmp_path, [section])
    assert "Explanation by example" in index.read_text()
    with pytest.raises(ValueError, match="neighbour_captions has 2 entries for 4"):
        viz.examples_section(tmp_path, query, "square", neighbours, ["a", "b"])
