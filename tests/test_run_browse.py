"""The run explorer's back end (xaikit.run.RunBrowser): pages, filters and sorting equal a brute-force pandas
computation on the run's own table; maps are read for the page only; SpRAy clusters of the maps; bad input."""
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("pyarrow")
pytest.importorskip("zarr")

from xaikit.improve import spray  # noqa: E402
from xaikit.run import RunBrowser, RunFilter, RunSpec, open_run, run  # noqa: E402
from xaikit.run.synthetic import write_synthetic_run  # noqa: E402
from xaikit.zoo import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = write_synthetic_run(tmp_path_factory.mktemp("synthetic"), 300, shard_size=64, failure_rate=0.05, seed=1)
    return out, open_run(out).table().reset_index()


def brute(table: pd.DataFrame, label=None, correct=None, failed=None, ranges=None) -> pd.DataFrame:
    keep = pd.Series(True, index=table.index)
    if label is not None:
        keep &= table["label"] == label
    if correct is not None:
        keep &= table["ok"] & ((table["prediction"] == table["label"]) == correct)
    if failed is not None:
        keep &= ~table["ok"] if failed else table["ok"]
    for name, (low, high) in (ranges or {}).items():
        values = table[name]
        keep &= values.notna()
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
    return table[keep]


@pytest.mark.parametrize("query", [
    {}, {"label": 3}, {"correct": True}, {"correct": False, "label": 2}, {"failed": True}, {"failed": False},
    {"ranges": {"pixel_flipping/lrp": (0.2, 0.6)}}, {"ranges": {"sparseness/gradient": (None, 0.3)}, "label": 1},
])
def test_filters_equal_brute_force(synthetic, query):
    out, table = synthetic
    browser = RunBrowser(out)
    expected = brute(table, **query)
    page = browser.page(query, limit=1000)
    assert page.total == len(expected)
    assert page.indices == expected["index"].tolist()[:1000]


@pytest.mark.parametrize("sort,descending", [("pixel_flipping/lrp", False), ("pixel_flipping/lrp", True),
                                             ("score", True), ("prediction", False)])
def test_sort_with_nan_last_and_pages(synthetic, sort, descending):
    out, table = synthetic
    browser = RunBrowser(out)
    expected = table.sort_values([sort, "index"], ascending=[not descending, True], na_position="last",
                                 kind="stable")
    if descending:  # pandas sorts index descending too with ascending=False on both; redo it per key
        expected = pd.concat([g for _, g in sorted(table[table[sort].notna()].groupby(sort), key=lambda kv: -kv[0])]
                             + [table[table[sort].isna()]])
    pages = [browser.page(sort=sort, descending=descending, offset=o, limit=50) for o in range(0, 300, 50)]
    got = [i for p in pages for i in p.indices]
    assert got == expected["index"].tolist()
    assert all(p.total == 300 for p in pages)
    nan_rows = table[sort].isna().sum()
    if nan_rows:
        assert set(got[-nan_rows:]) == set(table.loc[table[sort].isna(), "index"])
        assert all(r[sort] is None for p in pages for r in p.rows if r["index"] in set(got[-nan_rows:]))


def test_maps_of_the_page_only(synthetic, monkeypatch):
    out, table = synthetic
    browser = RunBrowser(out)
    page = browser.page({"label": 4}, sort="score", descending=True, limit=7)
    whole = open_run(out).maps("lrp").numpy()
    maps = browser.maps("lrp", page.indices)
    np.testing.assert_array_equal(maps, whole[page.indices])
    array = browser._array("lrp")
    read = []
    original = type(array).get_orthogonal_selection
    monkeypatch.setattr(type(array), "get_orthogonal_selection",
                        lambda self, sel, **kw: read.append(len(sel[0])) or original(self, sel, **kw))
    browser.maps("lrp", page.indices)
    assert read == [7]  # the page's samples, not the array


def test_benchmark_table_and_filtered(synthetic):
    out, table = synthetic
    browser = RunBrowser(out)
    full = browser.benchmark_table()
    assert str(full) == str(open_run(out).benchmark_table())  # the same cells as RunResult's table
    sub = browser.benchmark_table({"label": 5})
    rows = table[table["label"] == 5]
    mean = np.nanmean(rows["pixel_flipping/gradient"].to_numpy())
    assert float(sub.scores[("gradient", "pixel_flipping")].nanmean()) == pytest.approx(mean)


def test_clusters_equal_spray_on_the_maps(synthetic):
    out, table = synthetic
    browser = RunBrowser(out)
    found = browser.clusters("gradient", {"label": 2}, n_clusters=3)
    members = table[(table["label"] == 2) & table["ok"]]["index"].tolist()
    assert found.indices == members and not found.sampled
    direct = spray(open_run(out).maps("gradient", members), n_clusters=3)
    assert found.labels == direct.labels.tolist()
    assert sorted(i for m in found.members.values() for i in m) == members
    few = browser.clusters("gradient", {"label": 2}, n_clusters=2, limit=10)
    assert few.sampled and len(few.indices) == 10 and set(few.indices) <= set(members)


def test_bad_queries_are_refused(synthetic):
    out, _ = synthetic
    browser = RunBrowser(out)
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        browser.page(sort="nope")
    with pytest.raises(ValueError, match="unknown column"):
        browser.page({"ranges": {"error": (0, 1)}})
    with pytest.raises(ValueError, match="unknown filter key"):
        browser.page({"lable": 3})
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        browser.maps("nope", [0])
    with pytest.raises(ValueError, match="sample indices"):
        browser.maps("lrp", [300])
    with pytest.raises(ValueError, match="offset"):
        browser.page(offset=-1)
    with pytest.raises(ValueError, match="class index"):
        browser.page(RunFilter(label="3"))


def test_real_run_and_a_growing_run(tmp_path):
    data = make_shapes(12, size=16, seed=2)
    spec = RunSpec(model="xaikit.zoo.groundtruth:ShapesCNN", methods=["gradient"], metrics=["sparseness"],
                   shard_size=4, batch_size=4)
    run(spec, torch.utils.data.Subset(data_set(data), range(12)), tmp_path, progress=False)
    browser = RunBrowser(tmp_path)
    assert browser.page().total == 12
    table = open_run(tmp_path).table()
    best = browser.page(sort="sparseness/gradient", descending=True, limit=1).rows[0]
    assert best["index"] == int(table["sparseness/gradient"].idxmax())
    # a shard removed (as in a run still going): the browser re-reads when the set of shards changes
    (tmp_path / "rows" / "shard-000002.parquet").unlink()
    assert browser.page().total == 8


def data_set(data):
    return torch.utils.data.TensorDataset(data.x, data.y)


def test_first_page_of_a_fresh_browser_reads_only_its_shards(tmp_path, monkeypatch):
    out = write_synthetic_run(tmp_path, 300, shard_size=64, save_maps=False, seed=2)
    (out / "rows" / "shard-000001.parquet").unlink()  # a gap, as in a run still going
    whole = RunBrowser(out)
    whole.table()
    import pyarrow.parquet as pq
    for offset, limit in ((0, 24), (50, 30), (60, 100), (200, 50), (230, 10), (10, 1000)):
        fresh = RunBrowser(out)
        opened = []
        original = pq.ParquetFile.__init__
        monkeypatch.setattr(pq.ParquetFile, "__init__", lambda self, path, *a, **k: (
            threading.current_thread().name != "xaikit-run-rows" and opened.append(Path(path).name))
            or original(self, path, *a, **k))  # the files the page itself opens (not the background read)
        fast = fresh.page(offset=offset, limit=limit)
        monkeypatch.undo()
        expected = whole.page(offset=offset, limit=limit)
        assert fast.rows == expected.rows and fast.total == expected.total == 236
        assert len(opened) <= -(-limit // 64) + 1 or limit == 1000  # the page's shards, not all of them
        fresh.table()  # the background read finishes: the same table as a full read
        assert fresh.table().to_pandas().equals(whole.table().to_pandas())  # (NaN equal to NaN)
