"""xaikit.run on a local Ray cluster of 2 CPU workers started here (one ray.init for the module).

Same bytes as in-process (rows and zarr shards, for deterministic methods with a fixed batch size), a worker
killed mid-shard (the shard is redone whole, no duplicate or missing row), a failing sample recorded, a model
factory that fails on the workers named in the error.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")
pytest.importorskip("zarr")

from xaikit.run import RunSpec, WorkerSetupError, run  # noqa: E402
from xaikit.zoo import make_shapes  # noqa: E402

MODEL = "xaikit.zoo.groundtruth:ShapesCNN"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this module's classes by value
    src = str(Path(__import__("xaikit").__file__).parents[1])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": src, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def digest(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parts[len(out.parts)] in ("rows", "maps") and not p.name.startswith(".")}


class KillOnce(torch.utils.data.Dataset):
    """Samples of tensors; reading sample ``at`` kills the reading process once (a worker dying mid-shard)."""

    def __init__(self, x, y, at, flag):
        self.x, self.y, self.at, self.flag = x, y, at, flag

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.at and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os._exit(1)
        return self.x[i], self.y[i]


def test_ray_same_bytes_as_in_process_despite_killed_worker_and_failing_sample(tmp_path):
    data = make_shapes(12, size=16, seed=5)
    x = data.x.clone()
    x[3, 1, 2, 2] = float("nan")  # sample 3 fails (NaN input); its shard must be kept
    spec = RunSpec(model=MODEL, methods=["gradient", ("lrp", {"composite": "epsilon_plus_flat"})],
                   metrics=[("pixel_flipping", {"pixels_per_step": 64})], shard_size=3, batch_size=3)
    local = run(spec, KillOnce(x, data.y, at=-1, flag=tmp_path / "never"), tmp_path / "local", progress=False)
    flag = tmp_path / "killed"
    remote = run(spec, KillOnce(x, data.y, at=7, flag=flag), tmp_path / "ray", engine="ray", workers=2,
                 progress=False)
    assert flag.exists()  # a worker did die in shard 2
    assert remote.summary["engine"] == "ray" and remote.summary["workers"] == 2
    table = remote.table()
    assert list(table.index) == list(range(12))  # no duplicate, no missing row
    assert list(table.index[~table["ok"]]) == [3] and "NaN" in table.loc[3, "error"]
    assert remote.summary["failures"] == 1
    assert digest(tmp_path / "local") == digest(tmp_path / "ray")  # bitwise: rows and zarr shards
    workers = {json.loads(p.read_text())["worker"] for p in (tmp_path / "ray" / "timing").iterdir()}
    assert f"(pid {os.getpid()})" not in " ".join(workers) and len(workers) >= 2  # computed by the actors


def broken_factory():
    raise RuntimeError("no weights on this node")


def test_factory_failing_on_worker_names_it(tmp_path):
    spec = RunSpec(model=broken_factory, methods=["gradient"], shard_size=4)
    with pytest.raises(WorkerSetupError, match=r"model factory 'test_run_ray:broken_factory' failed on worker "
                                               r".*Ray actor.*RuntimeError: no weights on this node"):
        run(spec, make_shapes(8, size=16, seed=0), tmp_path, engine="ray", workers=1, progress=False)
