"""Issue 22: one data adapter (``xaikit.data.Data``) for every room that reads a data set."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import xaikit as xk
from xaikit.data import Batch, Data

G = torch.Generator().manual_seed(0)
X = torch.rand(7, 3, 4, 4, generator=G)
Y = torch.arange(7) % 3
MASK = X > 0.5


class Items(Dataset):
    """Map-style items as dicts (the keys of Hugging Face style data sets)."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"image": X[i], "label": int(Y[i]), "mask": MASK[i]}


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(X[i], Y[i]) for i in range(7)])


def gathered(data, **kw):
    adapter = Data(data, batch_size=3, **kw)
    batches = list(adapter.batches())
    assert all(isinstance(b, Batch) for b in batches)
    return batches, adapter.tensors()


@pytest.mark.parametrize("form", ["tuple2", "tuple3", "list", "object", "dataset", "dict_items", "loader",
                                  "iterable_dataset", "generator"])
def test_every_form_gives_the_same_samples_in_order(form):
    data = {
        "tuple2": (X, Y), "tuple3": (X, Y, MASK), "list": [X, Y.tolist(), MASK],
        "object": SimpleNamespace(x=X, y=Y, mask=MASK), "dataset": TensorDataset(X, Y, MASK), "dict_items": Items(),
        "loader": DataLoader(TensorDataset(X, Y, MASK), batch_size=2), "iterable_dataset": Stream(),
        "generator": ((X[i:i + 4], Y[i:i + 4]) for i in (0, 4)),
    }[form]
    batches, (x, y, mask) = gathered(data) if form != "generator" else (None, Data(data).tensors())
    assert torch.equal(x, X) and torch.equal(y, Y)
    if form in ("tuple3", "list", "object", "dataset", "dict_items", "loader"):
        assert torch.equal(mask, MASK)
    else:
        assert mask is None
    if form == "loader":
        assert [len(b.x) for b in batches] == [2, 2, 2, 1]  # a DataLoader keeps its own batches
    elif batches is not None:
        assert [len(b.x) for b in batches] == [3, 3, 1]  # the others come batch_size at a time


def test_tensor_array_and_int_labels():
    (x, y, mask) = Data(X).tensors()
    assert x is X and y is None and mask is None
    assert Data(X, batch_size=None).tensors().x is X and len(list(Data(X, batch_size=None).batches())) == 1
    table = np.random.default_rng(0).random((5, 2))
    x, _, _ = Data(table).tensors()
    assert x.dtype == torch.float32 and torch.allclose(x.double(), torch.from_numpy(table))
    assert torch.equal(Data((X, 2)).tensors().y, torch.full((7,), 2))
    assert Data((X, None)).tensors().y is None
    assert len(Data(X)) == 7 and torch.equal(Data(TensorDataset(X, Y)).samples(torch.tensor([[6, 0]])), X[[6, 0]][None])


def test_image_folder_with_labels_from_subfolders(tmp_path):
    from skimage import io

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            io.imsave(tmp_path / cls / f"{i}.png", (rng.random((10, 12, 3)) * 255).astype(np.uint8), check_contrast=False)
    x, y, mask = Data(tmp_path, batch_size=3, size=8, low=-1.0, high=1.0, labels_from_folders=True).tensors()
    assert x.shape == (4, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == [0, 0, 1, 1] and mask is None
    with pytest.raises(ValueError, match=r"train is empty: folder .* holds no images"):
        Data(tmp_path, name="train")  # the images are in subfolders
    samples = Data(str(tmp_path), size=8, labels_from_folders=True).samples(torch.tensor([3]))
    assert torch.allclose(samples, (x[3:] + 1) / 2, atol=1e-6)


def test_csv_table_with_a_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2.5,0\n3,,1\n", encoding="utf-8")
    x, y, _ = Data(path, label_column="label").tensors()
    assert x.shape == (2, 2) and x[0].tolist() == [1.0, 2.5] and torch.isnan(x[1, 1]) and y.tolist() == [0, 1]
    x, y, _ = Data(str(path), feature_columns=["b"]).tensors()
    assert x.shape == (2, 1) and y is None
    with pytest.raises(ValueError, match="label_column 'nope' is not a column"):
        Data(path, label_column="nope")
    path.write_text("a,name\n1,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"columns \['name'\] .* are not numeric"):
        Data(path)
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="data is empty: table .* has no rows"):
        Data(path)


def test_errors_name_the_argument_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="train is empty: it holds no samples"):
        Data(torch.zeros(0, 3), name="train")
    with pytest.raises(ValueError, match="data is empty: it gave no batch"):
        list(Data([]).batches())
    with pytest.raises(ValueError, match="the Dataset holds no samples"):
        Data(TensorDataset(torch.zeros(0, 2)))
    with pytest.raises(TypeError, match="reference must be a tensor x, a tuple .* got int"):
        Data(3, name="reference")
    with pytest.raises(ValueError, match="labels \\(y\\) has 4 entries for 7 samples"):
        Data((X, Y[:4]))
    with pytest.raises(ValueError, match="mask has 2 entries for 7 samples"):
        Data((X, Y, MASK[:2]))
    with pytest.raises(TypeError, match="got a tuple of 4 items"):
        Data((X, Y, MASK, MASK))
    with pytest.raises(FileNotFoundError, match="holdout .* not found"):
        Data(tmp_path / "missing", name="holdout")
    with pytest.raises(TypeError, match="option\\(s\\) size do not apply"):
        Data(X, size=32)
    with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive int"):
        Data(X, batch_size=0)
    with pytest.raises(ValueError, match="must not shuffle"):
        Data(DataLoader(TensorDataset(X), shuffle=True), ordered=True)
    with pytest.raises(TypeError, match="without random access"):
        Data(iter([X])).samples(torch.tensor([0]))
    with pytest.raises(TypeError, match="a batch of train inputs must be a tensor or an array, got str"):
        list(Data(iter(["x"]), name="train").batches())
    with pytest.raises(TypeError, match="is a dict without an input key"):
        list(Data([{"pixels": X}]).batches())
    stream = Data(iter([(X, Y)]))
    list(stream.batches())
    with pytest.raises(ValueError, match="read only once"):
        list(stream.batches())


def test_rooms_read_every_form_through_the_adapter():
    """Concepts, examples, tune and the benchmark take a Dataset or a DataLoader as they take (x, y)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    loader = DataLoader(TensorDataset(X, Y, MASK), batch_size=3)
    scores = xk.concepts.ChannelRelevance(model, "0")(loader)
    assert torch.allclose(scores.score, xk.concepts.ChannelRelevance(model, "0")((X, Y)).score, atol=1e-6)
    index = xk.examples.FeatureIndex(model, layer="2").fit(TensorDataset(X, Y))
    assert torch.equal(index.labels, Y)
    direct = xk.metrics.benchmark(model, (X, Y), ["gradient"], ["sparseness"])
    streamed = xk.metrics.benchmark(model, loader, ["gradient"], ["sparseness"])
    assert torch.allclose(direct.scores[("Gradient", "Sparseness")], streamed.scores[("Gradient", "Sparseness")])
    with pytest.raises(TypeError, match="data gives no targets: pass a tuple"):
        xk.metrics.benchmark(model, TensorDataset(X), ["gradient"], ["sparseness"])
    from xaikit.tune.search import _check_data

    x, y, mask = _check_data(model, loader)
    assert torch.equal(x, X) and torch.equal(y, Y) and torch.equal(mask, MASK)


def test_improve_reads_data_sets_through_the_adapter():
    from xaikit.improve import a_clarc, fit_cav

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(64, 3)).eval()
    artifact, clean = X[:3].clone(), X[3:]
    artifact[:, :, :2, :2] = 3.0
    cav = fit_cav(model, "1", artifact, clean, classifier="pattern")
    streamed = fit_cav(model, "1", DataLoader(TensorDataset(artifact), batch_size=2), TensorDataset(clean, Y[3:]),
                       classifier="pattern")
    assert torch.allclose(cav.direction, streamed.direction, atol=1e-6)
    tuned = a_clarc(model, cav, X, Y, epochs=1, batch_size=4)
    from_loader = a_clarc(model, cav, DataLoader(TensorDataset(X, Y), batch_size=5), epochs=1, batch_size=4)
    assert all(torch.allclose(a, b) for a, b in zip(tuned.state_dict().values(), from_loader.state_dict().values()))
    with pytest.raises(ValueError, match="a_clarc fine-tunes on labelled data"):
        a_clarc(model, cav, TensorDataset(X), epochs=1)


def test_a_dataframe_is_a_table():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.0, -1.0], "label": [0, 1, 1]})
    x, y, _ = Data(frame, label_column="label").tensors()
    assert x.tolist() == [[1.0, 0.5], [2.0, 0.0], [3.0, -1.0]] and y.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="label_column 'c' is not a column of the DataFrame"):
        Data(frame, label_column="c")


def test_batch_size_auto_is_sized_by_the_memory_budget_and_reads_every_sample_once():
    """``batch_size="auto"`` means what it means everywhere: as many samples as the memory budget holds."""
    import xaikit as xk

    x = torch.arange(40 * 3 * 8 * 8, dtype=torch.float32).reshape(40, 3, 8, 8)
    from xaikit.batching import ACTIVATION_FACTOR

    xk.set_memory_budget(8 * 3 * 8 * 8 * 4 * ACTIVATION_FACTOR)  # the budget of 8 such samples
    try:
        sizes = [len(b.x) for b in Data((x, torch.zeros(40, dtype=torch.long)), batch_size="auto").batches()]
    finally:
        xk.set_memory_budget(None)
    assert sizes == [8] * 5
    torch.testing.assert_close(torch.cat([b.x for b in Data(x, batch_size="auto").batches()]), x)
