"""A synthetic run folder written with the run store's own writer: for benchmarks, tests and demos of the run
explorer (:class:`~xaikit.run.RunBrowser`) at any size, without computing a single explanation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .store import Store, map_name
from .worker import _table, column


def write_synthetic_run(out: str | Path, num_samples: int = 1000, methods: Sequence[str] = ("gradient", "lrp"),
                        metrics: Sequence[str] = ("pixel_flipping", "sparseness"), classes: int = 10,
                        sample_shape: Sequence[int] = (1, 8, 8), shard_size: int = 256, failure_rate: float = 0.01,
                        seed: int = 0, save_maps: bool = True) -> Path:
    """Write a finished run folder of ``num_samples`` random rows (labels, predictions right 80 % of the time,
    a fraction ``failure_rate`` failed with NaN scores and maps, uniform metric scores) and random maps.

    The manifest, Parquet rows and zarr shards have exactly the layout of :func:`xaikit.run.run`'s (they are
    written by :class:`~xaikit.run.store.Store` and the worker's row schema); the spec names the model
    ``"synthetic"``, which nothing builds.
    """
    rng = np.random.default_rng(seed)
    spec = {"model": "synthetic", "methods": {m: [m, {}] for m in methods},
            "metrics": {k: [k, {}] for k in metrics}, "target": "auto", "seed": seed, "batch_size": 1,
            "shard_size": shard_size, "save_maps": save_maps}
    identity = {"xaikit": "synthetic", "spec": spec, "data": {"kind": "synthetic", "length": num_samples,
                                                              "seed": seed},
                "num_samples": num_samples, "shard_size": shard_size, "num_shards": -(-num_samples // shard_size),
                "sample_shape": list(sample_shape), "maps": {m: map_name(m) for m in methods} if save_maps else {}}
    store = Store(out)
    manifest = store.prepare(identity, overwrite=True)
    for shard in range(manifest["num_shards"]):
        start, stop = shard * shard_size, min(num_samples, (shard + 1) * shard_size)
        count = stop - start
        labels = rng.integers(0, classes, count)
        right = rng.random(count) < 0.8
        prediction = np.where(right, labels, (labels + rng.integers(1, classes, count)) % classes)
        ok = rng.random(count) >= failure_rate
        rows = {"ok": ok.tolist(), "target": labels, "prediction": np.where(ok, prediction, -1),
                "score": np.where(ok, rng.normal(size=count), np.nan)}
        for k in metrics:
            for m in methods:
                rows[column(k, m)] = np.where(ok, rng.random(count), np.nan)
        errors = [None if good else "computing: RuntimeError: synthetic failure" for good in ok]
        if save_maps:
            for m in methods:
                maps = rng.normal(size=(count, *sample_shape)).astype(np.float32)
                maps[~ok] = np.nan
                store.write_map(map_name(m), start, maps)
        table = _table(start, shard, [f"sample-{start + i}" for i in range(count)], labels.tolist(), errors, rows)
        store.write_rows(shard, table, {"seconds": 0.0, "method_s": {m: 0.0 for m in methods}, "worker": "synthetic",
                                        "retried_chunks": [], "rows": count, "failures": int((~ok).sum())})
    return store.out
