"""TRAK featurisation through xaikit.run (in-process engine): the same scores as TRAK.fit in memory, a run
killed midway resumed without redoing finished shards, a store of other data refused, bad input named.
The Ray engine's equality with the in-process one is in tests/test_run_ray.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import xaikit as xk
from killed_source import KilledAt
from xaikit.run import TensorSource, featurise

pytest.importorskip("zarr")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval()  # float32: what the store holds


def _data(n: int = 50, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


class Counting(xk.examples.TRAK):
    """TRAK that counts the samples it featurises (in this process)."""

    seen = 0

    def _features(self, stacked, x, y):  # one vmap over a group of ensemble members: counted per member
        Counting.seen += x.shape[0] * next(iter(stacked.values())).shape[0]
        return super()._features(stacked, x, y)


def _trak(cls=xk.examples.TRAK, models=None):
    models = models or [_model(0), _model(1)]
    return cls(models[0], checkpoints=[m.state_dict() for m in models], projection=12, batch_size=8)


def test_featurise_in_process_equals_the_in_memory_fit(tmp_path):
    x, y = _data()
    xq, yq = _data(6, seed=2)
    memory = _trak().fit((x, y))
    stored = featurise(_trak(), (x, y), tmp_path / "f", shard_size=16, progress=False)
    assert stored.train_size == 50 and stored.fit_info["shards_computed"] == 4
    torch.testing.assert_close(stored.scores(xq, yq), memory.scores(xq, yq), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stored.self_scores(), memory.self_scores(), rtol=1e-6, atol=1e-9)
    a, b = stored.top(xq, yq, k=3), memory.top(xq, yq, k=3)
    assert torch.equal(a.supporting, b.supporting) and torch.equal(a.opposing, b.opposing)
    from xaikit.batching import set_memory_budget
    widths = []
    block = stored._block
    stored._block = lambda query, rows: widths.append(rows.stop - rows.start) or block(query, rows)
    set_memory_budget(8 * 4 * 6 * 5)  # blocks of 5 training samples for 6 queries: smaller than a shard (16)
    try:
        small = stored.top(xq, yq, k=3)
    finally:
        set_memory_budget(None)
    assert max(widths) == 5
    assert torch.equal(small.supporting, a.supporting) and torch.equal(small.opposing_score, a.opposing_score)


def test_a_killed_run_resumes_without_redoing_finished_shards(tmp_path):
    x, y = _data()
    xq, yq = _data(6, seed=2)
    with pytest.raises(KeyboardInterrupt):  # dies while reading shard 2 (samples 32..47)
        featurise(_trak(Counting), KilledAt(x, y, at=40), tmp_path / "f", shard_size=16, progress=False)
    Counting.seen = 0
    resumed = featurise(_trak(Counting), TensorSource(x, y), tmp_path / "f", shard_size=16, progress=False)
    assert Counting.seen == 2 * (50 - 32)  # 2 ensemble members × the samples of shards 2 and 3 only
    assert resumed.fit_info["shards_reused"] == 2 and resumed.fit_info["shards_computed"] == 2
    Counting.seen = 0
    again = featurise(_trak(Counting), TensorSource(x, y), tmp_path / "f", shard_size=16, progress=False)
    assert Counting.seen == 0 and again.fit_info["shards_computed"] == 0
    fresh = featurise(_trak(), (x, y), tmp_path / "g", shard_size=16, progress=False)
    torch.testing.assert_close(resumed.scores(xq, yq), fresh.scores(xq, yq), rtol=0, atol=0)


def test_a_store_of_other_data_or_settings_is_refused_and_bad_input_named(tmp_path):
    x, y = _data()
    featurise(_trak(), (x, y), tmp_path / "f", shard_size=16, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        featurise(_trak(), (x + 1, y), tmp_path / "f", shard_size=16, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        featurise(_trak(models=[_model(3)]), (x, y), tmp_path / "f", shard_size=16, progress=False)
    with pytest.raises(ValueError, match="no labels"):
        featurise(_trak(), x, tmp_path / "h", progress=False)
    with pytest.raises(ValueError, match="engine"):
        featurise(_trak(), (x, y), tmp_path / "h", engine="spark", progress=False)
    with pytest.raises(TypeError, match="TRAK"):
        featurise(_model(), (x, y), tmp_path / "h", progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        featurise(_trak(), (x, y), tmp_path / "h", shard_size=0, progress=False)
