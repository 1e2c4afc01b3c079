"""``xaikit serve`` in a real browser: headless Chromium (the system's, see tests/test_report_browser.py) driven
by Playwright, against the app served by uvicorn in a thread on a free port, on the ground-truth shapes CNN.

The numbers the page shows are checked against the library called directly on the same input (the heatmap's
relevance sum, the value under the cursor), not pixels; every refused request must leave the server serving.
"""
import copy
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
playwright = pytest.importorskip("playwright.sync_api")

import xaikit as xk  # noqa: E402
from browser import launched_chromium  # noqa: E402
from xaikit.cli.models import load_model  # noqa: E402
from xaikit.cli.serve_command import GROUND_TRUTH_SIZE, ground_truth_folder  # noqa: E402
from xaikit.data import read_image  # noqa: E402
from xaikit.serve import ServeConfig, start  # noqa: E402

LIMIT = 100_000  #: the upload limit of the served app, bytes


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    loaded = load_model("ground-truth-cnn")
    loaded.size = GROUND_TRUTH_SIZE
    data = ground_truth_folder(4, 0)
    secret = tmp_path_factory.mktemp("secret")
    (secret / "key.txt").write_text("do not serve")
    (data / "door.txt").symlink_to(secret / "key.txt")
    running = start(ServeConfig(model=loaded, data=data, port=0, upload_limit=LIMIT))
    # the test computes with its own copy: the server's threads hook into the served model while they explain
    mine = copy.copy(loaded)
    mine.model = copy.deepcopy(loaded.model)
    yield running, mine, data, secret
    running.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium()


def lrp_of(loaded, path: Path, composite: str) -> torch.Tensor:
    """The library's own LRP attribution of an input file, as the app reads it."""
    x = read_image(path, loaded.size, loaded.low, loaded.high)[None]
    return xk.LRP(loaded.model, composite=composite)(x).attribution


def card(page, method: str):
    return page.locator(f'#cards .card[data-method="{method}"]')


def test_explain_view_heatmaps_follow_the_composite(served, browser):
    running, loaded, data, _ = served
    page = browser.new_page()
    page.goto(f"{running.url}/explain")
    page.locator("#inputs img").first.click()
    page.wait_for_selector("#prediction[data-top]")
    picked = data / page.locator("#inputs img.selected").get_attribute("title")
    with torch.no_grad():
        predicted = loaded.model(read_image(picked, 32, -1, 1)[None]).argmax(1).item()
    assert int(page.get_attribute("#prediction", "data-top")) == predicted
    page.select_option("#composite", "epsilon_plus_flat")
    page.click("#explain")
    page.wait_for_selector('#cards .card[data-method="lrp"][data-status="done"]')
    first = card(page, "lrp")
    flat_sum, flat_checksum = float(first.get_attribute("data-sum")), first.get_attribute("data-checksum")
    assert first.get_attribute("data-warnings") == "0" and first.locator(".warning").count() == 0  # all understood
    # the value under the cursor is the library's map at that pixel (channels summed), the sum its sum
    expected = lrp_of(loaded, picked, "epsilon_plus_flat")
    assert flat_sum == pytest.approx(expected.sum().item(), rel=1e-4)
    box = first.locator("canvas").bounding_box()
    first.locator("canvas").hover(position={"x": box["width"] * 10.5 / 32, "y": box["height"] * 20.5 / 32})
    shown = float(first.locator("canvas").get_attribute("data-hover-value"))
    assert shown == pytest.approx(expected[0, :, 20, 10].sum().item(), rel=1e-4, abs=1e-7)
    assert "(20, 10)" in first.locator(".readout").inner_text()
    # every other ticked method has its own card, side by side
    page.wait_for_function("[...document.querySelectorAll('#cards .card')].every(c => c.dataset.status === 'done')")
    assert sorted(c.get_attribute("data-method") for c in page.locator("#cards .card").all()) == \
        ["gradient", "integrated_gradients", "lrp"]
    # a new composite redraws the LRP heatmap: another map, the library's sum under that composite
    page.select_option("#composite", "epsilon")
    page.wait_for_selector('#cards .card[data-method="lrp"][data-status="done"][data-composite="epsilon"]')
    second = card(page, "lrp")
    assert second.get_attribute("data-checksum") != flat_checksum
    assert float(second.get_attribute("data-sum")) == pytest.approx(lrp_of(loaded, picked, "epsilon").sum().item(),
                                                                    rel=1e-4)
    # metrics on demand: the sparseness the page shows is the metric's on the library's map
    second.locator("button.metrics").click()
    page.wait_for_selector('#cards .card[data-method="lrp"][data-metrics="done"]')
    value = float(second.locator('tr[data-metric="sparseness"]').get_attribute("data-value"))
    x = read_image(picked, 32, -1, 1)[None]
    assert value == pytest.approx(xk.metrics.Sparseness()(loaded.model, x, torch.tensor([predicted]),
                                                          lrp_of(loaded, picked, "epsilon")).item(), rel=1e-4)
    page.close()


def test_refused_requests_and_the_server_keeps_serving(served, browser, tmp_path):
    running, loaded, data, secret = served
    client = httpx.Client(base_url=running.url, timeout=60)
    name = sorted(p.name for p in data.glob("*.png"))[0]
    assert client.get(f"/files/{name}").status_code == 200
    outside = {"/files/%2e%2e/%2e%2e/etc/passwd": (403, "climbs out with '..'"),
               "/files/door.txt": (403, "leads out of the served folders"),
               f"/files/{'%2F' + str(secret / 'key.txt').lstrip('/').replace('/', '%2F')}": (403, "is absolute"),
               "/files/nothing.png": (404, "no file 'nothing.png'")}
    for url, (status, message) in outside.items():
        answer = client.get(url)
        assert (answer.status_code, message in answer.json()["error"]) == (status, True), (url, answer.text)
    big = np.random.default_rng(0).integers(0, 255, LIMIT + 1, dtype=np.uint8).tobytes()
    answer = client.post("/api/explain/upload", files={"file": ("big.png", big, "image/png")})
    assert answer.status_code == 413 and "upload too large" in answer.json()["error"]
    # a body sent in chunks, with no length announced, is cut off once it crosses the limit
    head = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    chunks = (head if i < 0 else big[:16384] for i in range(-1, 2 * LIMIT // 16384))
    answer = client.post("/api/explain/upload", content=chunks,
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert answer.status_code == 413 and "bytes or more; the limit is 100,000 bytes" in answer.json()["error"]
    answer = client.post("/api/explain/heatmap", content=(b" " * 8192 for _ in range(100)),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "upload too large" in answer.json()["error"]
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    answer = client.post("/api/explain/upload", files={"file": ("notes.png", b"just text, not pixels", "image/png")})
    assert answer.status_code == 415 and "not an image" in answer.json()["error"]
    answer = client.post("/api/explain/upload", files={"file": ("tool.exe", b"MZ\x90\x00", "application/x-msdownload")})
    assert answer.status_code == 415 and "uploads must be images" in answer.json()["error"]
    request = {"input": f"data:{name}", "method": "lrpx"}
    answer = client.post("/api/explain/heatmap", json=request)
    assert answer.status_code == 400 and "unknown method 'lrpx'; did you mean 'lrp'?" in answer.json()["error"]
    answer = client.post("/api/explain/heatmap", json={**request, "method": "lrp", "settings": "composit=epsilon"})
    assert answer.status_code == 400 and "did you mean 'composite'?" in answer.json()["error"]
    answer = client.post("/api/explain/heatmap", json={**request, "method": "lrp", "settings": {"composite": "nope"}})
    assert answer.status_code == 400 and "unknown composite 'nope'" in answer.json()["error"]
    # still serving: a good request after the refused ones
    answer = client.post("/api/explain/heatmap", json={**request, "method": "gradient"})
    assert answer.status_code == 200 and answer.json()["checksum"]
    # a real image uploads fine and is explained; the browser shows a refused upload's message
    with open(data / name, "rb") as handle:
        good = client.post("/api/explain/upload", files={"file": ("mine.png", handle.read(), "image/png")}).json()
    heat = client.post("/api/explain/heatmap", json={"input": good["ref"], "method": "lrp"}).json()
    direct = client.post("/api/explain/heatmap", json={"input": f"data:{name}", "method": "lrp"}).json()
    assert heat["checksum"] == direct["checksum"]  # the same pixels whichever way they came
    page = browser.new_page()
    page.goto(f"{running.url}/explain")
    (tmp_path / "notes.png").write_bytes(b"just text")
    page.set_input_files("#file", str(tmp_path / "notes.png"))
    page.click("#upload button")
    page.wait_for_selector("#message:not([hidden])")
    assert "not an image" in page.inner_text("#message")
    page.close()


def test_concepts_view_opens_a_concept_and_its_reference_samples(served, browser):
    running, loaded, data, _ = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{running.url}/concepts")
    page.locator("#inputs img").nth(1).click()
    page.wait_for_selector('#concepts[data-status="done"]')
    picked = data / page.locator("#inputs img.selected").get_attribute("title")
    layer = page.get_attribute("#concepts", "data-layer")
    assert layer == "features.9"  # the last convolution
    x = read_image(picked, 32, -1, 1)[None]
    direct = xk.concepts.Composition(loaded.model, layer, top=5)(x)
    rows = page.locator("#concepts .concept").all()
    assert [int(r.get_attribute("data-channel")) for r in rows] == direct.concepts
    assert [float(r.get_attribute("data-share")) for r in rows] == pytest.approx(direct.share.tolist(), rel=1e-4)
    channel = direct.concepts[0]
    rows[0].locator("button").click()
    page.wait_for_selector('#conditional[data-status="done"]')
    conditional = xk.concepts.ConditionalHeatmaps(loaded.model, layer)(x, concepts=[channel])
    shown = float(page.locator("#conditional canvas").get_attribute("data-sum"))
    assert shown == pytest.approx(conditional.heatmaps[0].sum().item(), rel=1e-4)
    assert float(page.get_attribute("#conditional", "data-share")) == pytest.approx(direct.share[0].item(), rel=1e-4)
    # the reference samples: the data folder's samples where the concept is most relevant, as the library finds them
    page.wait_for_selector('#references[data-status="done"]')
    names = sorted(p.name for p in data.glob("*.png"))
    everything = torch.stack([read_image(data / n, 32, -1, 1) for n in names])
    refs = xk.concepts.ReferenceSamples(loaded.model, layer, n=4, target="prediction", progress=False)(everything)
    shown = [f.get_attribute("data-name") for f in page.locator("#references figure.reference").all()]
    assert shown == [names[i] for i in refs.of(channel).tolist()] and shown
    page.close()


def test_examples_nearest_and_pertinent(served):
    running, loaded, data, _ = served
    client = httpx.Client(base_url=running.url, timeout=60)
    name = sorted(p.name for p in data.glob("*.png"))[2]

    def job(url, body):
        started = client.post(url, json=body)
        assert started.status_code == 200, started.text
        for _ in range(600):
            state = client.get(f"/api/jobs/{started.json()['job']}").json()
            if state["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert state["status"] == "done", state
        assert state["progress"] == 1.0
        return state["result"]

    found = job("/api/examples/neighbours", {"input": f"data:{name}", "k": 3})
    # the input is a sample of the data folder: its nearest example is itself, cosine similarity 1
    assert found["neighbours"][0]["name"] == name
    assert found["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert [n["similarity"] for n in found["neighbours"]] == sorted((n["similarity"] for n in found["neighbours"]),
                                                                    reverse=True)
    pertinent = job("/api/examples/cem", {"input": f"data:{name}", "iterations": 30, "c_steps": 1})
    with torch.no_grad():
        predicted = loaded.model(read_image(data / name, 32, -1, 1)[None]).argmax(1).item()
    assert pertinent["target"] == predicted
    assert not pertinent["pp"]["found"] or pertinent["pp"]["class"] == predicted  # a PP keeps the class
    assert not pertinent["pn"]["found"] or pertinent["pn"]["class"] != predicted  # a PN changes it
    bad = client.post("/api/examples/cem", json={"input": f"data:{name}", "iterations": 10 ** 6})
    assert bad.status_code == 400 and "iterations must be an int from 1 to 1000" in bad.json()["error"]


def test_concurrent_requests_each_get_their_own_explanation(served):
    """Requests run in several threads; the model lock keeps their hooks apart (conditional heatmaps mask a layer
    through hooks on the served model): each answer is the library's."""
    from concurrent.futures import ThreadPoolExecutor

    running, loaded, data, _ = served
    names = sorted(p.name for p in data.glob("*.png"))
    asked = [(names[i % len(names)], i % 2, 3 + i) for i in range(8)]  # (input, LRP or a concept, channel)

    def ask(client, item):
        name, concept, channel = item
        if concept:
            return client.post("/api/concepts/heatmap", json={"input": f"data:{name}", "channel": channel}).json()
        return client.post("/api/explain/heatmap", json={"input": f"data:{name}", "method": "lrp"}).json()

    with httpx.Client(base_url=running.url, timeout=120) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda item: ask(client, item), asked))
    for (name, concept, channel), answer in zip(asked, answers):
        x = read_image(data / name, 32, -1, 1)[None]
        if concept:
            expected = xk.concepts.ConditionalHeatmaps(loaded.model, "features.9")(x, concepts=[channel]).heatmaps
            assert answer["map_sum"] == pytest.approx(expected.sum().item(), rel=1e-4, abs=1e-6)
        else:
            assert answer["sum"] == pytest.approx(xk.LRP(loaded.model)(x).attribution.sum().item(), rel=1e-4)
