"""The examples view's training-data panel of ``xaikit serve``: a prediction's top proponents and opponents among
the served training data (``--train-data``), TRAK with the report's settings (``xk.examples.shown_trak``).

The route's answer is the library's own: the same training indices and scores as ``shown_trak(...).top`` called
directly on a copy of the model; the featurisation runs once per session (a job with progress; a second request
reuses it); bad requests are refused with the option or value to give. In headless Chromium (tests/browser.py)
the panel shows k proponents and k opponents, those the library finds.
"""
import copy
import shutil
import time

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright.sync_api")
from fastapi.testclient import TestClient  # noqa: E402

import xaikit as xk  # noqa: E402
from browser import launched_chromium  # noqa: E402
from models import assert_unchanged, snapshot  # noqa: E402
from xaikit.cli.improve_command import revision_data  # noqa: E402
from xaikit.cli.models import load_model  # noqa: E402
from xaikit.cli.serve_command import GROUND_TRUTH_SIZE, ground_truth_folder  # noqa: E402
from xaikit.data import read_image  # noqa: E402
from xaikit.serve import ServeConfig, create_app, start  # noqa: E402

#: training samples served (more than the projection dimension 128, so that the kernel is regular)
TRAIN = 144


def wait(client, job_id, timeout=120.0):
    """Poll a job as the page does; returns its last state and every message it showed."""
    messages, end = [], time.time() + timeout
    while time.time() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        messages.append(job["message"])
        if job["status"] not in ("queued", "running"):
            return job, messages
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def served():
    loaded = load_model("ground-truth-cnn")
    loaded.size = GROUND_TRUTH_SIZE
    folder = ground_truth_folder(3, 0)
    train = revision_data({"kind": "ground-truth", "seed": 0, "n_train": TRAIN})
    before = snapshot(loaded.model)
    running = start(ServeConfig(model=loaded, data=folder, port=0, extra={"revise": train}))
    # the session's first request (the tests run in random order): it featurises the training set, with progress
    client = TestClient(running.app)  # the served app itself: one session, one featurisation
    assert client.get("/api/examples/training").json()["ready"] is False
    ref = client.get("/api/explain/inputs").json()["items"][-1]["ref"]
    job, messages = wait(client, client.post("/api/examples/training", json={"input": ref}).json()["job"])
    assert job["status"] == "done", job["error"]
    assert sum("featurising the training data" in m for m in set(messages)) >= 2, messages  # batch by batch
    # the library's answer, computed directly on a copy of the model (the app computes on its own copy)
    trak = xk.examples.shown_trak(copy.deepcopy(loaded.model), (train["x"], train["y"]))
    yield running, loaded, folder, train, trak
    running.stop()
    assert_unchanged(loaded.model, before)
    shutil.rmtree(folder, ignore_errors=True)


def test_proponents_are_the_library_s(served):
    running, loaded, folder, train, trak = served
    client = TestClient(running.app)
    info = client.get("/api/examples/training").json()
    assert info["available"] and info["ready"] and info["samples"] == TRAIN and info["option"] == "--train-data"
    item = client.get("/api/explain/inputs").json()["items"][0]
    x = read_image(folder / item["name"], GROUND_TRUTH_SIZE, loaded.low, loaded.high)[None]
    for target, k in ((None, 4), (2, 3)):  # the prediction, then a chosen class
        started = client.post("/api/examples/training", json={"input": item["ref"], "k": k, "target": target})
        job, messages = wait(client, started.json()["job"])
        assert job["status"] == "done", job["error"]
        assert not any("featurising" in m for m in messages), messages  # once per session: done in the fixture
        shown = job["result"]
        expected = trak.top(x, None if target is None else torch.tensor([target]), k=k)
        assert shown["target"] == int(expected.label[0])
        if target is None:
            with torch.no_grad():
                assert shown["target"] == int(loaded.model(x).argmax(1))
        for kind, index, score in (("proponents", expected.supporting, expected.supporting_score),
                                   ("opponents", expected.opposing, expected.opposing_score)):
            assert [t["index"] for t in shown[kind]] == index[0].tolist()
            assert [t["score"] for t in shown[kind]] == pytest.approx(score[0].tolist(), rel=1e-5, abs=1e-9)
            assert [t["label"] for t in shown[kind]] == train["y"][index[0]].tolist()
            assert all(t["kind"] == "image" and t["image"] for t in shown[kind])
        assert all(t["score"] > 0 for t in shown["proponents"]) and all(t["score"] < 0 for t in shown["opponents"])
    assert "TRAK without Newton weights" in shown["method"] and f"{TRAIN} training samples" in shown["method"]
    info = client.get("/api/examples/training").json()
    assert info["ready"] and info["method"] == shown["method"]


def test_bad_requests_are_refused(served):
    running, _, folder, _, _ = served
    client = TestClient(running.app)
    ref = client.get("/api/explain/inputs").json()["items"][0]["ref"]
    for body, status, message in (({"target": "1 vs 2"}, 400, "explains one class"), ({"k": 0}, 400, "k must be"),
                                  ({"k": True}, 400, "k must be")):
        answer = client.post("/api/examples/training", json={"input": ref, **body})
        assert (answer.status_code, message in answer.json()["error"]) == (status, True), answer.text
    answer = client.post("/api/examples/training", json={"row": [0.0] * 5})
    assert answer.status_code == 400 and "the training data's samples (3, 32, 32)" in answer.json()["error"]
    job, _ = wait(client, client.post("/api/examples/training", json={"input": ref, "target": 7}).json()["job"])
    assert job["status"] == "failed" and "the model has 4 outputs" in job["error"]
    bare = TestClient(create_app(ServeConfig(model=running.app.state.xaikit.config.model, data=folder)))
    assert bare.get("/api/examples/training").json()["available"] is False
    answer = bare.post("/api/examples/training", json={"input": ref})
    assert answer.status_code == 409 and "--train-data" in answer.json()["error"]


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium()


def test_browser_panel_shows_k_proponents_and_opponents(served, browser):
    running, loaded, folder, _, trak = served
    page = browser.new_page()
    page.goto(f"{running.url}/examples")
    page.wait_for_selector("#training[data-available='true']")
    assert "TRAK" in page.inner_text("#training-about")
    first = page.locator("#inputs img").first
    first.click()
    page.fill("#training-k", "3")
    page.click("#training-start")
    page.wait_for_selector("#training[data-status='done']", timeout=120_000)
    x = read_image(folder / first.get_attribute("title"), GROUND_TRUTH_SIZE, loaded.low, loaded.high)[None]
    expected = trak.top(x, k=3)
    for kind, index in (("proponent", expected.supporting), ("opponent", expected.opposing)):
        cards = page.locator(f"#training .card.{kind}")
        assert cards.count() == 3 and cards.locator("img").count() == 3
        assert [int(c.get_attribute("data-index")) for c in cards.all()] == index[0].tolist()
    assert int(page.get_attribute("#training", "data-target")) == int(expected.label[0])
    page.close()


def test_table_rows_as_text_one_featurisation_for_concurrent_requests_none_kept_when_cancelled(monkeypatch):
    from types import SimpleNamespace

    from xaikit.serve import training

    fits = []
    monkeypatch.setattr(training, "shown_trak", lambda *a, **kw: fits.append(1) or xk.examples.shown_trak(*a, **kw))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(150, 4)
    y = torch.randint(0, 3, (150,))
    served = SimpleNamespace(model=model, spec="mlp", kind="auto", size=0, low=None, high=None,
                             label=lambda i: f"class {i}", tokenizer=None)
    app = create_app(ServeConfig(model=served, extra={"revise": {"x": x, "y": y}}))
    with TestClient(app) as client:  # its jobs' threads end with it
        check_rows(client, app.state.xaikit, training.trak_lock, fits, model, x, y)


def check_rows(client, state, trak_lock, fits, model, x, y):
    row = [0.5, -1.0, 0.25, 2.0]
    start = lambda: client.post("/api/examples/training", json={"row": row, "k": 2}).json()["job"]  # noqa: E731
    with trak_lock(state):  # the job waits for the lock: cancelled before its first batch, deterministically
        cancelled = start()
        client.post(f"/api/jobs/{cancelled}/cancel")
    job, _ = wait(client, cancelled)
    assert job["status"] == "cancelled" and "trak" not in state.cache
    before = len(fits)  # 1 if the cancelled job had started (its featurisation stopped at the first batch), else 0
    with trak_lock(state):  # two requests at once: one featurises, the other waits for it
        jobs = [start(), start()]
    answers = [wait(client, j)[0] for j in jobs]
    assert [a["status"] for a in answers] == ["done", "done"] and len(fits) - before == 1
    assert answers[0]["result"] == answers[1]["result"]
    expected = xk.examples.shown_trak(copy.deepcopy(model), (x, y)).top(torch.tensor([row]), k=2)
    shown = answers[0]["result"]
    assert "projection 67" in shown["method"]  # the gradient size (4·8 + 8 + 8·3 + 3) is below 128
    for kind, index in (("proponents", expected.supporting), ("opponents", expected.opposing)):
        assert [t["index"] for t in shown[kind]] == index[0].tolist()
        for t in shown[kind]:
            assert t["kind"] == "row" and t["label_name"] == f"class {int(y[t['index']])}"
            assert [float(v) for v in t["text"].split(", ")] == pytest.approx(x[t["index"]].tolist(), rel=1e-3)
