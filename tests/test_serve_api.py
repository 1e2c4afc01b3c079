"""``xaikit serve``'s explain routes on text and table models (FastAPI's test client, no browser): token and
feature relevance equal the library's own call, contrast targets explain ``output[a] - output[b]``, inputs that
do not fit the model are refused with a message, an app without a model serves only the views that need none."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import xaikit as xk  # noqa: E402
from xaikit.serve import ServeConfig, create_app  # noqa: E402

WORDS = ["[pad]", "a", "good", "bad", "film", "plot", "dull", "great"]


class Tokenizer:
    """A word-level tokenizer with the two calls the app makes."""

    def __call__(self, texts, truncation=True, return_tensors="pt"):
        ids = [[WORDS.index(w) for w in text.split()] for text in texts]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids), len(ids[0]), dtype=torch.long)}

    def convert_ids_to_tokens(self, ids):
        return [WORDS[i] for i in ids]


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(len(WORDS), 6), nn.Linear(6, 2)

    def forward(self, ids, attention_mask=None):
        return self.head((self.embedding(ids) * attention_mask[..., None]).sum(1))


def served(model, kind, tokenizer=None):
    return SimpleNamespace(model=model.eval(), spec=f"toy {kind}", kind=kind, size=224, low=None, high=None,
                           label=lambda i: f"class {i}", tokenizer=tokenizer)


def test_text_model_token_heatmaps(tmp_path):
    torch.manual_seed(0)
    model = BagOfWords()
    (tmp_path / "reviews.txt").write_text("a good film\n\na dull plot\n")
    client = TestClient(create_app(ServeConfig(model=served(model, "text", Tokenizer()), data=tmp_path)))
    assert client.get("/api/explain/options").json()["composite"] == "attnlrp"
    items = client.get("/api/explain/inputs").json()["items"]
    assert [(i["ref"], i["kind"]) for i in items] == [("data:reviews.txt#0", "text"), ("data:reviews.txt#1", "text")]
    ids = torch.tensor([[1, 6, 5]])
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids))[0]
    predicted = client.post("/api/explain/predict", json={"input": "data:reviews.txt#1"}).json()
    assert predicted["tokens"] == ["a", "dull", "plot"] and predicted["top"][0]["index"] == int(logits.argmax())
    for body in ({"input": "data:reviews.txt#1"}, {"text": "a dull plot"}):
        shown = client.post("/api/explain/heatmap", json={**body, "method": "input_x_gradient"}).json()
        direct = xk.InputXGradient(model)(ids, forward_kwargs={"attention_mask": torch.ones_like(ids)}).attribution
        assert shown["values"] == pytest.approx(direct[0].tolist(), rel=1e-5)
        assert shown["tokens"] == ["a", "dull", "plot"] and "dull" in shown["html"]
    upload = client.post("/api/explain/upload", files={"file": ("mine.txt", b"a great film\n", "text/plain")}).json()
    assert client.post("/api/explain/predict", json={"input": upload["ref"]}).json()["tokens"] == ["a", "great", "film"]
    answer = client.post("/api/explain/predict", json={"row": [1.0, 2.0]})
    assert answer.status_code == 400 and "does not fit the model" in answer.json()["error"]


def test_table_model_bars_and_contrast(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3))
    (tmp_path / "table.csv").write_text("age,income,debt\n0.5,1.0,-0.2\n-1.0,0.3,0.8\n")
    client = TestClient(create_app(ServeConfig(model=served(model, "auto"), data=tmp_path)))
    x = torch.tensor([[-1.0, 0.3, 0.8]])
    with torch.no_grad():
        out = model(x)[0]
    scores = {"argmax": out.max(), "1 vs 2": out[1] - out[2], "0": out[0]}
    specs = {"argmax": None, "1 vs 2": xk.targets.Contrast(1, 2), "0": 0}
    for target, spec in specs.items():
        shown = client.post("/api/explain/heatmap", json={"input": "data:table.csv#1", "method": "lrp",
                                                          "settings": "composite=epsilon", "target": target}).json()
        direct = xk.LRP(model, composite="epsilon")(x, target=spec)
        assert shown["values"] == pytest.approx(direct.attribution[0].tolist(), rel=1e-5, abs=1e-7)
        assert shown["features"] == ["age", "income", "debt"]
        assert shown["png"].startswith("iVBORw0KGgo")  # a PNG: the bar plot
        assert shown["score"] == pytest.approx(float(scores[target]), rel=1e-5)
    typed = client.post("/api/explain/heatmap", json={"row": [-1.0, 0.3, 0.8], "method": "lrp",
                                                      "settings": {"composite": "epsilon"}}).json()
    assert typed["values"] == pytest.approx(xk.LRP(model, composite="epsilon")(x).attribution[0].tolist(), rel=1e-5)
    wrong = client.post("/api/explain/heatmap", json={"row": [1.0, 2.0], "method": "lrp"})
    assert wrong.status_code == 400 and "does not fit the model" in wrong.json()["error"]
    assert client.get("/api/info").status_code == 200


def test_an_app_without_a_model(tmp_path):
    client = TestClient(create_app(ServeConfig(data=tmp_path)))
    info = client.get("/api/info").json()
    assert info["model"] is None and "explain" not in info["views"]
    answer = client.post("/api/explain/predict", json={"input": "data:x.png"})
    assert answer.status_code == 409 and "xaikit serve --model" in answer.json()["error"]


class TinyCausal(nn.Module):
    """A causal language model in miniature: each position reads the running mean of the embeddings so far."""

    def __init__(self, vocabulary: int = 16):
        super().__init__()
        self.embedding, self.head = nn.Embedding(vocabulary, 8), nn.Linear(8, vocabulary)

    def forward(self, ids, attention_mask=None):
        h = self.embedding(ids).cumsum(1) / torch.arange(1, ids.shape[1] + 1)[:, None]
        return self.head(torch.tanh(h))


def test_causal_language_model_explains_the_next_token(tmp_path):
    torch.manual_seed(0)
    model = TinyCausal()
    words = [f"w{i}" for i in range(16)]

    class Words(Tokenizer):
        def __call__(self, texts, truncation=True, return_tensors="pt"):
            ids = [[words.index(w) for w in text.split()] for text in texts]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(1, len(ids[0]), dtype=torch.long)}

        def convert_ids_to_tokens(self, ids):
            return [words[i] for i in ids]

    loaded = served(model, "causal-lm", Words())
    client = TestClient(create_app(ServeConfig(model=loaded, data=tmp_path)))
    ids = torch.tensor([[3, 7, 1, 12]])
    with torch.no_grad():
        logits = model(ids)[0, -1]
    predicted = client.post("/api/explain/predict", json={"text": "w3 w7 w1 w12"}).json()
    assert predicted["next_token"] and predicted["top"][0]["index"] == int(logits.argmax())
    assert predicted["top"][0]["name"] == f"w{int(logits.argmax())}"
    for target, token in (("argmax", None), ("5", 5)):
        shown = client.post("/api/explain/heatmap", json={"text": "w3 w7 w1 w12", "method": "input_x_gradient",
                                                          "target": target}).json()
        direct = xk.InputXGradient(model)(ids, target=xk.NextToken(token=token),
                                          forward_kwargs={"attention_mask": torch.ones_like(ids)})
        assert shown["values"] == pytest.approx(direct.attribution[0].tolist(), rel=1e-4, abs=1e-6)
        assert shown["score"] == pytest.approx(float(logits[5] if token == 5 else logits.max()), rel=1e-5)
    refused = client.post("/api/explain/heatmap", json={"text": "w3 w7", "method": "lrp", "target": "1 vs 2"})
    assert refused.status_code == 400 and "one next token" in refused.json()["error"]


def test_the_engines_warnings_reach_the_page_with_the_heatmap(tmp_path):
    """Never silently wrong, also in the browser: an operation LRP does not understand is named in the answer
    (its warning and the coverage count), not only in the server's log; a model it understands gets none."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            return torch.logcumsumexp(self.linear(x), 1) * 2

    (tmp_path / "table.csv").write_text("a,b,c\n0.5,1.0,-0.2\n")
    for model, unknown in ((Odd(), {"logcumsumexp": 1}), (nn.Sequential(nn.Linear(3, 2)), {})):
        torch.manual_seed(0)
        client = TestClient(create_app(ServeConfig(model=served(model, "auto"), data=tmp_path)))
        shown = client.post("/api/explain/heatmap", json={"input": "data:table.csv#0", "method": "lrp",
                                                          "settings": "composite=epsilon"}).json()
        assert shown["unknown"] == unknown
        assert bool([w for w in shown["warnings"] if "logcumsumexp" in w]) == bool(unknown)
