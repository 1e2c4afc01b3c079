"""The run explorer and the revise view of ``xaikit serve``: their routes (against RunBrowser and Revise called
directly) and end to end in headless Chromium driven by Playwright (the system's Chromium, as in
tests/test_serve_browser.py): open a run folder, filter and sort; paint a mask on a decoy-digits heatmap, run the
revision and see the decoy accuracy rise — the model's numbers the app returns are asserted, not pixels."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("pyarrow")
pytest.importorskip("zarr")
httpx = pytest.importorskip("httpx")

from browser import launched_chromium  # noqa: E402
from xaikit.improve.revise import load_revision  # noqa: E402
from xaikit.run import RunBrowser, open_run  # noqa: E402
from xaikit.run.synthetic import write_synthetic_run  # noqa: E402
from xaikit.serve import ServeConfig, start  # noqa: E402
from xaikit.zoo import make_decoy_digits, train_decoy_mlp  # noqa: E402



@pytest.fixture(scope="module")
def decoy():
    train, test = make_decoy_digits(0, n_train=400)
    return train_decoy_mlp(0, epochs=10, data=train), train, test


@pytest.fixture(scope="module")
def served(tmp_path_factory, decoy):
    model, train, test = decoy
    run_folder = write_synthetic_run(tmp_path_factory.mktemp("run"), 200, shard_size=50, sample_shape=(1, 12, 12),
                                     failure_rate=0.05, seed=3)
    loaded = SimpleNamespace(model=model, spec="decoy-mlp", kind="auto", size=12, low=0.0, high=1.0,
                             label=lambda i: str(i), tokenizer=None)
    out = tmp_path_factory.mktemp("revisions")
    extra = {"revise": {"x": train.x, "y": train.y, "evaluate": {"decoy test": (test.x, test.y)},
                        "about": {"kind": "decoy-digits", "seed": 0, "n_train": 400}}, "revise_out": str(out)}
    running = start(ServeConfig(model=loaded, run=run_folder, port=0, extra=extra))
    yield SimpleNamespace(url=running.url, run=run_folder, out=out, model=model, train=train, test=test)
    running.stop()


def corners() -> list[list[int]]:
    mask = np.zeros((12, 12), int)
    mask[:2, :2] = mask[:2, -2:] = mask[-2:, :2] = mask[-2:, -2:] = 1
    return mask.tolist()


def test_run_routes_answer_as_the_browser_does(served):
    browser = RunBrowser(served.run)
    with httpx.Client(base_url=served.url, timeout=60) as client:
        info = client.get("/api/runs/info").json()
        assert info["rows"] == 200 and info["map_methods"] == ["gradient", "lrp"]
        query = {"filters": {"label": 2, "correct": False}, "sort": "pixel_flipping/lrp", "descending": True,
                 "offset": 0, "limit": 5, "method": "lrp"}
        page = client.post("/api/runs/page", json=query).json()
        expected = browser.page(query["filters"], query["sort"], True, 0, 5)
        assert page["total"] == expected.total and [r["index"] for r in page["rows"]] == expected.indices
        maps = browser.maps("lrp", expected.indices).sum(1)
        for shown, full in zip(page["maps"], maps):
            assert shown["h"] == 12 and np.allclose(shown["values"], full.ravel(), atol=1e-5)
        table = client.post("/api/runs/table", json={"filters": {"failed": False}}).json()
        cell = next(c for c in table["cells"] if c["method"] == "gradient" and c["metric"] == "sparseness")
        rows = open_run(served.run).table()
        assert cell["mean"] == pytest.approx(np.nanmean(rows.loc[rows["ok"], "sparseness/gradient"]))
        found = client.post("/api/runs/clusters", json={"method": "gradient", "filters": {"label": 1},
                                                        "n_clusters": 2}).json()
        members = sorted(i for c in found["clusters"] for i in c["members"])
        assert members == browser.select({"label": 1, "failed": False})["index"].to_pylist()
        # refused with a message, and the server keeps serving
        for bad in ({"sort": "nope"}, {"filters": {"lable": 1}}, {"limit": 10_000}):
            answer = client.post("/api/runs/page", json=bad)
            assert answer.status_code == 400 and answer.json()["error"]
        assert client.get("/api/runs/map", params={"method": "nope", "index": 0}).status_code == 400
        assert client.get("/api/runs/info").status_code == 200


def test_revise_routes_and_cancel(served):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        info = client.get("/api/revise/info").json()
        assert info["num_samples"] == 400 and info["evaluate"] == ["decoy test"] and "1" in info["layers"]
        for body, text in (({"strategy": "rrr"}, "paint a mask"),
                           ({"strategy": "rrr", "mask": [[1] * 11] * 12}, "masks has shape (12, 11)"),
                           ({"strategy": "nope", "mask": corners()}, "unknown strategy 'nope'"),
                           ({"strategy": "rrr", "mask": corners(), "settings": {"method": "nope"}}, "unknown method"),
                           ({"strategy": "rrr", "mask": corners(), "settings": {"epoch": 1}}, "unknown revision"),
                           ({"strategy": "p_clarc", "settings": {"layer": "1"}}, "flag a SpRAy cluster")):
            answer = client.post("/api/revise/start", json=body)
            assert answer.status_code == 400 and text in answer.json()["error"], (body, answer.text)
        before = {k: v.clone() for k, v in served.model.state_dict().items()}
        job = client.post("/api/revise/start", json={"strategy": "rrr", "mask": corners(),
                                                     "settings": {"epochs": 400}}).json()["job"]
        client.post(f"/api/jobs/{job}/cancel")
        for _ in range(600):
            state = client.get(f"/api/jobs/{job}").json()
            if state["status"] not in ("queued", "running"):
                break
            import time
            time.sleep(0.05)
        assert state["status"] == "cancelled"
        assert all(torch.equal(before[k], v) for k, v in served.model.state_dict().items())
        clusters = client.post("/api/revise/clusters", json={"label": 3, "n_clusters": 2}).json()
        assert sum(c["size"] for c in clusters["clusters"]) == int((served.train.y == 3).sum())


@pytest.fixture(scope="module")
def chromium_page():
    yield from launched_chromium()


def test_browser_run_explorer_filter_and_sort(served, chromium_page):
    page = chromium_page.new_page()
    page.goto(f"{served.url}/runs")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#count").get_attribute("data-total") == "200"
    assert page.locator("#gallery .run-card").count() == 24
    page.select_option("#f-label", "4")
    page.select_option("#f-failed", "false")
    page.select_option("#sort", "sparseness/lrp")
    page.check("#descending")
    page.click("#apply")
    page.wait_for_function("document.querySelector('#count').dataset.total !== '200'")
    expected = RunBrowser(served.run).page({"label": 4, "failed": False}, "sparseness/lrp", True, 0, 24)
    assert page.locator("#count").get_attribute("data-total") == str(expected.total)
    shown = [int(i) for i in page.locator("#gallery .run-card").evaluate_all("cs => cs.map(c => c.dataset.index)")]
    assert shown == expected.indices
    values = page.locator("#gallery .run-card").evaluate_all("cs => cs.map(c => Number(c.dataset.sortValue))")
    assert values == sorted(values, reverse=True)
    best = page.locator("#mm-table td.best").count()
    assert best >= 2  # one best method per metric
    page.click("#cluster")
    page.wait_for_selector("#clusters .cluster")
    sizes = page.locator("#clusters .cluster").evaluate_all("cs => cs.map(c => Number(c.dataset.size))")
    assert sum(sizes) == expected.total
    page.close()


def test_browser_paint_mask_revise_and_decoy_accuracy_rises(served, chromium_page):
    page = chromium_page.new_page()
    page.goto(f"{served.url}/revise")
    page.wait_for_selector("body[data-ready='1']")
    box = page.locator("#mask").bounding_box()
    cell = box["width"] / 12
    for row, col in ((0, 0), (0, 10), (10, 0), (10, 10)):  # drag over each 2×2 corner
        x0, y0 = box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell
        page.mouse.move(x0, y0)
        page.mouse.down()
        for dx, dy in ((cell, 0), (cell, cell), (0, cell)):
            page.mouse.move(x0 + dx, y0 + dy)
        page.mouse.up()
    assert page.locator("#mask-count").get_attribute("data-count") == "16"
    page.fill("#epochs", "10")
    page.click("#start")
    page.wait_for_selector("#status[data-status]", timeout=60_000)
    assert page.locator("#status").get_attribute("data-status") == "done"
    row = page.locator("#accuracy tr[data-set='decoy test']")
    before, after = float(row.get_attribute("data-before")), float(row.get_attribute("data-after"))
    assert after > before + 0.05  # the decoy accuracy rises
    folder = Path(page.locator("#saved-folder").text_content())
    files = load_revision(folder)
    assert files.masks[0, 0].tolist() == corners()  # the painted mask, saved
    with torch.no_grad():
        revised = files.revised(served.model)
        measured = float((revised(served.test.x).argmax(1) == served.test.y).float().mean())
    assert measured == pytest.approx(after)  # the app's number is the saved model's accuracy
    assert files.record["accuracy"]["decoy test"]["before"] == pytest.approx(before)
    page.close()


def test_views_without_their_data_say_how_to_start(served):
    from fastapi.testclient import TestClient
    from xaikit.serve import create_app

    with TestClient(create_app(ServeConfig(run=served.run))) as client:
        answer = client.get("/api/revise/info")
        assert answer.status_code == 409 and "--revise-data" in answer.json()["error"]
        assert client.get("/api/runs/info").status_code == 200
        assert client.get("/revise").status_code == 200  # the page itself loads and shows the message
    loaded = SimpleNamespace(model=served.model, spec="decoy-mlp", kind="auto", size=12, low=0.0, high=1.0,
                             label=str, tokenizer=None)
    with TestClient(create_app(ServeConfig(model=loaded))) as client:
        answer = client.post("/api/runs/page", json={})
        assert answer.status_code == 409 and "--run FOLDER" in answer.json()["error"]
