"""xaikit.run on a local Ray cluster of 2 CPU workers started here (one ray.init for the module).

Same bytes as in-process (rows and zarr shards, for deterministic methods with a fixed batch size), a worker
killed mid-shard (the shard is redone whole, no duplicate or missing row), a failing sample recorded, a model
factory that fails on the workers named in the error.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")
pytest.importorskip("zarr")

from killed_source import KilledAt  # noqa: E402
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
            Path(self.flag).write_text(str(os.getpid()))
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
    workers = {p.name: json.loads(p.read_text())["worker"] for p in (tmp_path / "ray" / "timing").iterdir()}
    assert len(workers) == 4 and f"(pid {os.getpid()})" not in " ".join(workers.values())  # by the actors
    assert f"(pid {flag.read_text()})" not in workers["shard-000002.json"]  # the cut-off shard redone elsewhere


def broken_factory():
    raise RuntimeError("no weights on this node")


def test_factory_failing_on_worker_names_it(tmp_path):
    spec = RunSpec(model=broken_factory, methods=["gradient"], shard_size=4)
    with pytest.raises(WorkerSetupError, match=r"model factory 'test_run_ray:broken_factory' failed on worker "
                                               r".*Ray actor.*RuntimeError: no weights on this node"):
        run(spec, make_shapes(8, size=16, seed=0), tmp_path, engine="ray", workers=1, progress=False)


USER_RUN = """
import sys, tempfile
from xaikit.run import RunSpec, run
from xaikit.zoo import make_shapes
spec = RunSpec(model="xaikit.zoo.groundtruth:ShapesCNN", methods=["gradient"], shard_size=4, batch_size=4)
with tempfile.TemporaryDirectory() as out:
    result = run(spec, make_shapes(8, size=16, seed=0), out, engine="ray", workers=1, progress=False)
    assert result.table()["ok"].all() and result.summary["engine"] == "ray"
print("finished")
"""


def test_a_users_ray_run_prints_no_error_line():
    # Ray Data passes its actors' constructor arguments through the object store; with its default
    # max_restarts=-1 Ray's core logged an error-level line ("... has constructor arguments in the object store
    # and max_restarts > 0") for the first actor of every process, which a user reads as a failure. Run as a
    # user does: a fresh process whose run starts its own local cluster; everything it prints on stderr is read.
    src = str(Path(__import__("xaikit").__file__).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=src, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", USER_RUN], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-3000:]
    error_lines = [line for line in done.stderr.splitlines()
                   if re.search(r"^\[[^\]]* E \d+ \d+\]|\bERROR\b|\"levelname\": ?\"E(RROR)?\"", line)]
    assert not error_lines, error_lines


def test_trak_featurisation_on_ray_equals_in_process_and_resumes_an_in_process_store(tmp_path):
    """TRAK's projected gradients through xk.run.featurise: a store left half-done by an in-process run is
    finished on Ray (2 actors, only its missing shards), and its scores equal a whole in-process run's for a
    fixed batch size (one Ray start: the Ray shards and the in-process ones are compared in one store)."""
    from torch import nn

    import xaikit as xk
    from xaikit.run import featurise

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval() for _ in range(2)]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    xq = torch.randn(7, 5, generator=g)

    def trak():
        return xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=12,
                                batch_size=8)

    local = featurise(trak(), (x, y), tmp_path / "local", shard_size=16, progress=False)
    with pytest.raises(KeyboardInterrupt):  # an in-process run that dies in shard 2, after shards 0 and 1
        featurise(trak(), KilledAt(x, y, 40), tmp_path / "half", shard_size=16, progress=False)
    finished = featurise(trak(), (x, y), tmp_path / "half", shard_size=16, engine="ray", workers=2, progress=False)
    assert finished.fit_info["shards_reused"] == 2 and finished.fit_info["shards_computed"] == 2
    torch.testing.assert_close(finished.scores(xq), local.scores(xq), rtol=1e-6, atol=1e-7)
