"""xaikit.run in-process: storage, resume, failures, out-of-memory retries, readers, bad input."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pyarrow")
pytest.importorskip("zarr")

from xaikit.run import (ClusterUnreachable, ManifestMismatch, RunSpec, WorkerSetupError, open_run,  # noqa: E402
                        run)
from xaikit.run.engines import check_address  # noqa: E402
from xaikit.zoo import make_shapes, ShapesCNN  # noqa: E402

MODEL = "xaikit.zoo.groundtruth:ShapesCNN"
METHODS = ["gradient", ("lrp", {"composite": "epsilon_plus_flat"})]


@pytest.fixture(scope="module")
def data():
    return make_shapes(10, size=16, seed=3)


def spec(**kw):
    kw.setdefault("methods", METHODS)
    return RunSpec(model=MODEL, shard_size=4, batch_size=2, **kw)


def digest(out: Path) -> dict:
    """sha256 of every rows and maps file (timing and manifest hold times)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parts[len(out.parts)] in ("rows", "maps") and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("reference")
    result = run(spec(metrics=[("pixel_flipping", {"pixels_per_step": 64}), "pointing_game"]), data, out,
                 progress=False)
    return out, result


def test_rows_maps_and_manifest(reference, data):
    out, result = reference
    torch.manual_seed(0)
    model = ShapesCNN().eval()
    table = result.table()
    assert list(table.index) == list(range(10)) and table["ok"].all() and table["error"].isna().all()
    assert (table["target"].to_numpy() == data.y.numpy()).all()  # target "auto": the labels
    # the maps are the methods' attributions, and the scores the metrics' scores, sample by sample
    import xaikit as xk

    expected = xk.Gradient(model)(data.x, target=data.y).attribution
    assert torch.allclose(result.maps("gradient"), expected, rtol=1e-5, atol=1e-7)
    pf = xk.metrics.PixelFlipping(pixels_per_step=64)(model, data.x, data.y, expected)
    np.testing.assert_allclose(table["pixel_flipping:pixels_per_step=64/gradient"], pf.numpy(), rtol=1e-4, atol=1e-6)
    assert result.maps("lrp:composite=epsilon_plus_flat", [7, 2]).shape == (2, 3, 16, 16)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_shards"] == 3 and manifest["sessions"][-1]["finished"]
    assert result.arrow().num_rows == 10


def test_benchmark_table_adapter(reference):
    _, result = reference
    table = result.benchmark_table()
    assert table.methods == ["gradient", "lrp:composite=epsilon_plus_flat"]
    assert table.metrics == ["pixel_flipping:pixels_per_step=64", "pointing_game"]
    assert table.higher_is_better == {"pixel_flipping:pixels_per_step=64": False, "pointing_game": True}
    rows = result.table()
    assert table.mean("gradient", "pointing_game") == pytest.approx(rows["pointing_game/gradient"].mean())
    assert "| gradient |" in table.to_markdown()


def test_benchmark_through_pipeline_equals_metrics_benchmark(tmp_path, data):
    import xaikit as xk
    from xaikit.run import benchmark

    metrics = {"pixel_flipping": ("pixel_flipping", {"pixels_per_step": 64}), "pointing_game": "pointing_game"}
    piped = benchmark(spec(metrics=metrics), data, tmp_path, progress=False)
    torch.manual_seed(0)
    model = ShapesCNN().eval()
    direct = xk.metrics.benchmark(
        model, data.astuple(),
        {"gradient": xk.Gradient(model), "lrp:composite=epsilon_plus_flat": xk.LRP(model, composite="epsilon_plus_flat")},
        {"pixel_flipping": xk.metrics.PixelFlipping(pixels_per_step=64), "pointing_game": xk.metrics.PointingGame()})
    for key, scores in direct.scores.items():
        torch.testing.assert_close(piped.scores[key], scores.double(), rtol=1e-4, atol=1e-6)
    assert {m: direct.best(m) for m in direct.metrics} == {m: piped.best(m) for m in piped.metrics}


class Interrupt(torch.utils.data.Dataset):
    """Samples of ``data``; reading sample ``at`` raises KeyboardInterrupt once (a kill of the driver)."""

    def __init__(self, data, at, flag):
        self.data, self.at, self.flag = data, at, flag

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i == self.at and not os.path.exists(self.flag):
            Path(self.flag).touch()
            raise KeyboardInterrupt
        return self.data.x[i], self.data.y[i]


def test_resume_after_interruption_computes_only_missing_shards(tmp_path, data):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=3, shuffle=True)
    with pytest.warns(UserWarning, match="sampler, order, batch size and collate_fn are not used"):
        straight = run(spec(), loader, tmp_path / "a", progress=False)  # read by index
    source = Interrupt(data, at=9, flag=tmp_path / "flag")
    with pytest.raises(KeyboardInterrupt):
        run(spec(), source, tmp_path / "b", progress=False)
    result = open_run(tmp_path / "b")
    assert not result.complete and len(result.table()) == 8  # shards 0 and 1 done, shard 2 lost
    assert result.manifest["sessions"][-1]["finished"] is False
    assert np.isnan(result.maps("gradient")[8:].numpy()).all()
    # a stray temporary rows file of a killed writer is ignored
    (tmp_path / "b" / "rows" / ".shard-000002.parquet.123.tmp").write_bytes(b"partial")
    resumed = run(spec(), source, tmp_path / "b", progress=False)
    assert resumed.summary["shards_computed"] == 1 and resumed.summary["shards_reused"] == 2
    table = resumed.table()
    assert list(table.index) == list(range(10))  # no duplicate, no missing row
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # same bytes as a straight run
    assert straight.complete


def test_failing_sample_recorded_and_shard_kept(tmp_path, data):
    x = data.x.clone()
    x[5, 0, 0, 0] = float("nan")
    result = run(spec(), torch.utils.data.TensorDataset(x, data.y), tmp_path, progress=False)
    table = result.table()
    assert list(table.index[~table["ok"]]) == [5]
    assert "NaN" in table.loc[5, "error"] and table.loc[5, "target"] == -1
    assert result.summary["failures"] == 1 and len(table) == 10
    maps = result.maps("gradient")
    assert torch.isnan(maps[5]).all() and torch.isfinite(maps[torch.arange(10) != 5]).all()
    # the other samples of that chunk equal a clean run (single-sample retries for its chunk)
    clean = run(spec(), torch.utils.data.TensorDataset(data.x, data.y), tmp_path / "clean", progress=False)
    assert torch.allclose(maps[4], clean.maps("gradient")[4], rtol=1e-5, atol=1e-8)


class OOMOverTwo(nn.Module):
    """ShapesCNN that raises CUDA's out-of-memory error on batches of more than two samples."""

    def __init__(self):
        super().__init__()
        self.net = ShapesCNN()

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_chunk_retried_smaller(tmp_path, data):
    result = run(RunSpec(model=OOMOverTwo, methods=["gradient"], shard_size=8, batch_size=8), data, tmp_path,
                 progress=False)
    assert result.table()["ok"].all() and result.summary["retried_chunks"] > 0
    torch.manual_seed(0)
    model = OOMOverTwo().eval()
    import xaikit as xk

    expected = torch.cat([xk.Gradient(model)(data.x[i:i + 2], target=data.y[i:i + 2]).attribution
                          for i in range(0, 10, 2)])
    assert torch.allclose(result.maps("gradient"), expected, rtol=1e-5, atol=1e-8)


def test_other_run_in_folder_refused_unless_overwrite(tmp_path, data):
    run(spec(methods=["gradient"]), data, tmp_path, progress=False)
    with pytest.raises(ManifestMismatch, match="different run.*overwrite"):
        run(spec(methods=["input_x_gradient"]), data, tmp_path, progress=False)
    result = run(spec(methods=["input_x_gradient"]), data, tmp_path, overwrite=True, progress=False)
    assert list(result.manifest["maps"]) == ["input_x_gradient"] and not (tmp_path / "maps" / "gradient").exists()


def broken_factory():
    raise RuntimeError("weights not found")


def test_factory_failure_names_the_factory(tmp_path, data):
    with pytest.raises(WorkerSetupError, match=r"model factory 'test_run:broken_factory' failed on worker "
                                               r"in-process: RuntimeError: weights not found"):
        run(RunSpec(model=broken_factory, methods=["gradient"]), data, tmp_path, progress=False)


def test_bad_input(tmp_path, data):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        RunSpec(model=MODEL, methods=["nope"])
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        RunSpec(model=MODEL, methods=["gradient"], metrics=["nope"])
    with pytest.raises(ValueError, match="shard_size"):
        RunSpec(model=MODEL, methods=["gradient"], shard_size=0)
    with pytest.raises(ValueError, match="need ground-truth masks"):
        run(spec(metrics=["pointing_game"]), torch.utils.data.TensorDataset(data.x, data.y), tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown engine"):
        run(spec(), data, tmp_path, engine="spark", progress=False)
    with pytest.warns(UserWarning, match="every sample of this run failed; the first error: computing: "):
        run(spec(), torch.utils.data.TensorDataset(data.x.double()), tmp_path / "f64", progress=False)
    with pytest.raises(TypeError, match="IterableDataset"):
        run(spec(), torch.utils.data.IterableDataset(), tmp_path, progress=False)


def test_unreachable_ray_address_fails_fast():
    with pytest.raises(ClusterUnreachable, match="cannot reach the Ray cluster at '127.0.0.1:1'.*ray start --head"):
        check_address("127.0.0.1:1", timeout=2)


def test_table_and_image_folder_sources(tmp_path):
    pd = pytest.importorskip("pandas")
    from skimage import io

    torch.manual_seed(0)
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32),
                         columns=[f"f{i}" for i in range(8)])
    frame["label"] = [0, 1, 2, 0, 1, 2]
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    mlp = "models:mlp"
    results = [run(RunSpec(model=mlp, methods=["input_x_gradient"], shard_size=4, batch_size=2), tmp_path / name,
                   tmp_path / f"out-{name}", label_column="label", progress=False) for name in ("t.parquet", "t.csv")]
    assert (results[0].table()["target"].to_numpy() == frame["label"].to_numpy()).all()
    assert torch.equal(results[0].maps(), results[1].maps())
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        io.imsave(folder / f"img{i}.png", (np.random.default_rng(i).random((20, 24, 3)) * 255).astype(np.uint8),
                  check_contrast=False)
    result = run(RunSpec(model=MODEL, methods=["gradient"], target="argmax", shard_size=2), folder,
                 tmp_path / "out-images", size=16, low=-1.0, high=1.0, progress=False)
    table = result.table()
    assert list(table["id"]) == ["img0.png", "img1.png", "img2.png"]
    assert (table["target"] == table["prediction"]).all()
    with pytest.raises(ValueError, match="label_column 'nope'"):
        run(RunSpec(model=mlp, methods=["gradient"]), tmp_path / "t.csv", tmp_path / "x", label_column="nope")


def test_cli_run_resume_refuse_and_errors(tmp_path, capsys):
    from xaikit.cli import main

    out = str(tmp_path / "cli")
    base = ["run", "-m", MODEL, "-i", "ground-truth", "--num-samples", "6", "--shard-size", "4", "--batch-size", "2",
            "-o", out]
    assert main(base + ["--methods", "gradient", "--metrics", "sparseness", "-q"]) == 0
    table = open_run(out).table()
    assert len(table) == 6 and "sparseness/gradient" in table.columns
    assert main(base + ["--methods", "gradient", "--metrics", "sparseness"]) == 0  # resumed: nothing to do
    assert "0 samples" in capsys.readouterr().err
    assert main(base + ["--methods", "input_x_gradient", "-q"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert main(base + ["--methods", "input_x_gradient", "--overwrite", "-q"]) == 0
    assert main(base + ["--methods", "nope", "-q"]) == 2
    assert main(["run", "-m", "no_such_module:f", "-i", "ground-truth", "-o", str(tmp_path / "x"), "-q"]) == 3
    assert "model factory" in capsys.readouterr().err
    code = main(base + ["--overwrite", "--engine", "ray", "--address", "127.0.0.1:1", "-q"])
    err = capsys.readouterr().err
    import importlib.util

    if importlib.util.find_spec("ray") is not None:
        assert code == 3 and "cannot reach the Ray cluster at '127.0.0.1:1'" in err
    else:
        assert code == 4 and "xaikit[ray]" in err
