"""The HTML report opened in a real browser (headless Chromium): every picture loads, the score table is there,
and a screenshot shows the heatmaps.

Chromium comes from Debian's ``chromium`` package: ``scripts/setup-env.sh`` installs it (through
``scripts/install-chromium.sh``) and the ``chromium`` fixture runs that script when it is still missing.
"""
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from browser import FLAGS as CHROMIUM_FLAGS, chromium_path
from xaikit import viz
from xaikit.cli import main

FLAGS = ["--headless", *CHROMIUM_FLAGS]
HAVE_METRICS = importlib.util.find_spec("xaikit.metrics") is not None
HAVE_TEXT = all(importlib.util.find_spec(m) is not None for m in ("xaikit.zoo.text", "xaikit.viz.text"))

#: run in the page after it loaded: what loaded, and what the score table holds
CHECK = """<script>addEventListener('load', () => {
  const images = [...document.images];
  const report = {
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    scoreTables: document.querySelectorAll('table.scores').length,
    bestCells: document.querySelectorAll('table.scores td.best').length,
    arrows: [...document.querySelectorAll('table.scores th .arrow')].map(a => a.textContent),
  };
  const out = document.createElement('pre'); out.id = 'xaikit-check'; out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});</script>"""


@pytest.fixture(scope="session")
def chromium() -> str:
    return chromium_path()


def open_in_chromium(chromium: str, folder: Path, profile: Path) -> dict:
    """Load ``folder/index.html`` (with the check script added, in a copy beside it) and return the check."""
    page = folder / "_check.html"
    page.write_text((folder / "index.html").read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"),
                    encoding="utf-8")
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="xaikit-check">(.*?)</pre>', done.stdout)
    assert found, f"no check result in the page; chromium said: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def screenshot(chromium: str, folder: Path, profile: Path, path: Path, size=(1400, 1600)) -> np.ndarray:
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    f"--screenshot={path}", (folder / "index.html").as_uri()], capture_output=True, timeout=120)
    from skimage import io

    return io.imread(path)[..., :3]


def test_report_from_the_command_line_opens_in_chromium(chromium, tmp_path, capsys):
    """The report of ``xaikit report`` on the real EfficientNet-Lite0 and the cat photo; the metrics and text
    sections run too where their parts are installed."""
    out = tmp_path / "report"
    sections = ["images"] + ["metrics"] * HAVE_METRICS + ["text"] * HAVE_TEXT
    argv = ["report", "-i", "skimage:chelsea", "--methods", "gradient", "lrp", "--sections", *sections,
            "--eval-methods", "gradient", "lrp", "--num-samples", "8", "--text-methods", "gradient",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err

    check = open_in_chromium(chromium, out, tmp_path / "profile")
    assert check["broken"] == [] and check["loaded"] == check["images"]
    assert check["images"] >= 1 + 2 + 1 + (1 if HAVE_METRICS else 0)  # input, two heatmaps, overview, table
    if HAVE_METRICS:
        assert check["scoreTables"] == 1 and check["bestCells"] >= 1

    picture = screenshot(chromium, out, tmp_path / "profile", tmp_path / "report.png")
    assert picture.shape[:2] == (1600, 1400)
    # the LRP heatmap of the cat is on screen: red pixels (positive relevance) are visible. The same page
    # with the gradient column only has about 850 (its speckles and the legend), with LRP about 2500.
    p = picture.astype(int)
    red = (p[..., 0] > 200) & (p[..., 1] < 160) & (p[..., 2] < 160) & (p[..., 0] - p[..., 1] > 80)
    assert red.sum() > 1500
    # and the cat's own heatmap file is mostly positive evidence (red), little negative (blue)
    from skimage import io

    heat = io.imread(out / "images" / "chelsea__lrp-epsilon_plus_flat.png")
    red = ((heat[..., 0] > 200) & (heat[..., 2] < 100)).sum()
    blue = ((heat[..., 2] > 200) & (heat[..., 0] < 100)).sum()
    assert red > 10 * max(blue, 1)


def test_report_with_a_score_table_opens_in_chromium(chromium, tmp_path):
    """The score table (arrows, best marked), curves, a text fragment and image grids, built with the library."""
    out = tmp_path / "report"
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 32, 32, 3))
    maps = {"Gradient": rng.uniform(-1, 1, (2, 32, 32)), "LRP(epsilon)": rng.uniform(0, 1, (2, 32, 32))}
    table = SimpleNamespace(
        methods=["Gradient", "LRP(epsilon)"], metrics=["pixel_flipping", "pointing_game"],
        mean=np.array([[0.4, 0.5], [0.2, 0.75]]), sem=np.array([[0.02, 0.1], [0.01, 0.08]]),
        higher_is_better=[False, True],
        curves={"pixel flipping": {"Gradient": (np.linspace(0, 1, 11), np.linspace(1, 0.3, 11)),
                                   "LRP(epsilon)": (np.linspace(0, 1, 11), np.linspace(1, 0.1, 11))}},
    )
    sections = [viz.image_section(out, images, maps, ["one", "two"]),
                viz.scores_section(out, table, title="Metrics"),
                viz.html_section("Text", "<p><span style='background:#f88'>great</span> movie</p>")]
    viz.write_report(out, sections, {"seed": 0})

    check = open_in_chromium(chromium, out, tmp_path / "profile")
    assert check["broken"] == [] and check["loaded"] == check["images"] == 2 * 3 + 1 + 1 + 1
    assert check["scoreTables"] == 1 and check["bestCells"] == 2 and check["arrows"] == ["↓", "↑"]
    picture = screenshot(chromium, out, tmp_path / "profile", tmp_path / "table.png", size=(1200, 900))
    assert picture.std() > 10  # not a blank page


#: run in the page after it loaded: how far each heatmap grid reaches beyond its box (horizontal scroll)
LAYOUT = """<script>addEventListener('load', () => {
  const grids = [...document.querySelectorAll('table.grid')];
  const boxes = () => grids.flatMap(g => [...g.querySelectorAll('img')].map(i => i.getBoundingClientRect()));
  const report = {
    width: innerWidth,
    overflow: grids.map(g => g.parentElement.scrollWidth - g.parentElement.clientWidth),
    pageOverflow: document.documentElement.scrollWidth - innerWidth,
    rightmost: Math.max(...boxes().map(b => b.right)),
    smallest: Math.min(...boxes().map(b => b.width)),
  };
  const out = document.createElement('pre'); out.id = 'xaikit-layout'; out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});</script>"""


def test_nine_method_columns_fit_a_1400_px_window_without_scrolling(chromium, tmp_path):
    """The report's default nine heatmap methods (with the input column) are all visible at 1400 px."""
    out = tmp_path / "report"
    rng = np.random.default_rng(0)
    labels = ["Gradient", "InputXGradient", "IntegratedGradients", "SmoothGrad", "GradCAM", "GuidedBackprop",
              "Occlusion", "LRP(epsilon_plus_flat)", "LRP(epsilon_gamma_box)"]
    maps = {label: rng.uniform(-1, 1, (2, 224, 224)) for label in labels}
    viz.write_report(out, [viz.image_section(out, rng.uniform(size=(2, 224, 224, 3)), maps, ["chelsea", "coffee"])],
                     {"seed": 0})
    page = out / "_layout.html"
    page.write_text((out / "index.html").read_text(encoding="utf-8").replace("</body>", LAYOUT + "</body>"),
                    encoding="utf-8")
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    found = re.search(r'<pre id="xaikit-layout">(.*?)</pre>', done.stdout)
    assert found, f"no layout result in the page; chromium said: {done.stderr[-2000:]}"
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["width"] == 1400
    assert layout["overflow"] == [0] and layout["pageOverflow"] <= 0  # no horizontal scroll
    assert layout["rightmost"] <= 1400 and layout["smallest"] >= 80  # every column on screen, still readable
