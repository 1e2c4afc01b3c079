"""Training-set featurisation for data attribution at data-set scale: TRAK's projected gradients, sharded,
streamed through the run engines (in-process or Ray) into a resumable zarr store.

``xk.run.featurise(trak, data, "out/features", shard_size=4096, engine="ray")`` splits the training set into
shards of ``shard_size`` consecutive samples, hands the shards not yet written to the engine's workers (each
worker holds a copy of the unfitted :class:`~xaikit.examples.TRAK`: the model, the ensemble's weights and the
seeded projection), and each worker featurises its shard (``M`` per-sample-gradient passes in batches of the
TRAK's ``batch_size``, the projection) and writes it to the :class:`~xaikit.examples.store.FeatureStore`
under ``out`` (zarr v3; a shard is marked done after its arrays are written). The driver then forms the
kernels shard by shard and returns the TRAK ready to score, its features read from disk block by block.

Resume: a run killed at any point leaves whole shards and at most shards without their done-mark; running the
same call again computes only the shards not marked done (the store is keyed on the TRAK's settings and the
data's identity, so a store of other settings or data is refused). With a fixed ``batch_size`` a shard is
the same computation whichever worker runs it, so the in-process and Ray engines give the same scores (to
the last bits of a matrix product run on another number of threads; tested).

Memory (numbers, per worker): one batch's per-sample gradients ``B p``, the projection (``p k`` when cached,
see :class:`~xaikit.examples.gradients.RandomProjection`), one shard's inputs and features ``S (d + M k)``;
on the driver the kernels ``M k²`` and, while forming them, one shard ``M S k``.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import check_positive
from ..examples.store import FeatureStore
from ..examples.trak import TRAK
from ..progress import Progress
from .engines import ENGINES, run_in_process, run_ray
from .errors import RunError, require
from .sources import Source, TensorSource, as_source

__all__ = ["featurise", "FeaturiseJob", "FeatureShardWorker"]


@dataclass(frozen=True)
class FeaturiseJob:
    """What every worker needs (picklable): the unfitted TRAK, the data, the store's path, key and layout."""

    trak: TRAK
    source: Source
    path: str
    key: dict
    shard_size: int
    total: int
    device: str = "cpu"  # read by the Ray engine: featurisation runs where the TRAK's model is

    def store(self) -> FeatureStore:
        return FeatureStore(self.path, self.key, self.shard_size)

    def rows(self, shard: int) -> int:
        return min(self.total, (shard + 1) * self.shard_size) - shard * self.shard_size

    def __call__(self, where: str) -> "FeatureShardWorker":
        """A worker for this job (the engines call it once per worker)."""
        return FeatureShardWorker(self, where)


class FeatureShardWorker:
    """Featurises one shard of the training set and writes it to the store (the same code in every engine)."""

    def __init__(self, job: FeaturiseJob, where: str) -> None:
        self.job, self.where = job, where
        self.store = job.store()

    def __call__(self, shard: int) -> dict[str, Any]:
        began = time.perf_counter()
        job = self.job
        start, stop = shard * job.shard_size, min(job.total, (shard + 1) * job.shard_size)
        if not 0 <= start < stop:
            raise RunError(f"shard {shard} is outside the training set (0 .. {(job.total - 1) // job.shard_size})")
        x, y = read_rows(job.source, start, stop)
        device = next(iter(job.trak.model.parameters())).device
        feats, qs = job.trak.shard_features(x.to(device), y.to(device))
        self.store.write(shard, feats, qs)
        return {"shard": shard, "rows": stop - start, "failures": 0, "seconds": time.perf_counter() - began,
                "retried_chunks": 0}


class _ShardIndex:
    """What the Ray engine asks of a store on a restart: the shards done, and a report of a done shard."""

    def __init__(self, job: FeaturiseJob) -> None:
        self.job = job

    def done(self) -> set[int]:
        return self.job.store().done()

    def report(self, shard: int) -> dict[str, Any]:
        return {"shard": shard, "rows": self.job.rows(shard), "failures": 0, "seconds": 0.0, "retried_chunks": 0}


def read_rows(source: Source, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(S, ...)`` and labels ``(S,)`` of samples ``start:stop`` (a tensor source is sliced; any other
    source is read sample by sample). A sample without a label raises: attribution needs labelled data."""
    if isinstance(source, TensorSource) and source.y is not None:
        return source.x[start:stop], torch.as_tensor(source.y[start:stop]).long()
    xs, ys = [], []
    for i in range(start, stop):
        sample = source.sample(i)
        if sample.y is None:
            raise ValueError(f"training sample {i} has no label; featurisation needs labelled data (x, y)")
        xs.append(sample.x)
        ys.append(sample.y)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def featurise(trak: TRAK, data: Any, out: str | Path, *, shard_size: int = 4096, engine: str = "inprocess",
              address: str | None = None, workers: int | None = None, progress: bool = True,
              **source_options: Any) -> TRAK:
    """Featurise the labelled training set ``data`` for ``trak`` through a run engine into the store ``out``
    and return ``trak`` fitted on it (see the module's text).

    Parameters
    ----------
    trak : xaikit.examples.TRAK
        Built with the model, the ensemble's weights and the projection; its ``batch_size`` (an int for
        results that do not depend on the engine) is the per-sample-gradient batch inside a shard.
    data : tensors ``(x, y)``, a labelled dataset or any form :func:`~xaikit.run.sources.as_source` reads
        Random access by index (a shard is read by whichever worker computes it).
    out : path
        The feature store. A store of the same settings and data is resumed; another one is refused.
    shard_size : int
        Samples per shard: the unit of work, storage and resume.
    engine : "inprocess" or "ray"
        ``"ray"`` (``xaikit[ray]``): an actor pool of ``workers`` on the cluster at ``address`` or on a local
        cluster started for the call; each actor pays torch's import and a copy of the TRAK once.
    progress : bool
        A progress bar over the samples featurised in this call.

    Returns
    -------
    TRAK
        ``trak`` itself, fitted: ``trak.scores``, ``trak.top`` and ``trak.self_scores`` read the features from
        the store block by block.
    """
    if not isinstance(trak, TRAK):
        raise TypeError(f"trak must be an xaikit.examples.TRAK, got {type(trak).__name__}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "inprocess" and (address is not None or workers not in (None, 1)):
        raise ValueError("address and workers apply to engine='ray'; the in-process engine has one worker")
    check_positive(shard_size, "shard_size", integer=True)
    if engine == "ray":
        require("ray", "ray")
    require("zarr", "run")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(v, torch.Tensor) for v in data):
        data = TensorSource(data[0], data[1])
    source = as_source(data, **source_options)
    if not source.has_labels:
        raise ValueError("data has no labels; TRAK featurises labelled training data: pass (x, y) tensors or a "
                         "dataset whose items carry labels")
    total = len(source)
    shape = tuple(read_rows(source, 0, 1)[0].shape[1:])
    key = {**trak.store_key(), "data": source.describe(), "num_samples": total}
    device = next(iter(trak.model.parameters())).device.type
    job = FeaturiseJob(trak, source, str(out), key, shard_size, total, device)
    store = job.store()
    done = store.done()
    todo = [s for s in range(-(-total // shard_size)) if s not in done]
    bar = Progress(sum(job.rows(s) for s in todo), f"TRAK features ({engine})", "sample", enabled=progress)
    began = time.perf_counter()
    try:
        if todo and engine == "ray":
            run_ray(job, source, _ShardIndex(job), todo, lambda r: bar.update(r["rows"]), address=address,
                    workers=workers, make_worker=job)
        elif todo:
            run_in_process(job, source, _ShardIndex(job), todo, lambda r: bar.update(r["rows"]), make_worker=job)
    finally:
        bar.close()
    trak.fit_info = {"engine": engine, "shards_computed": len(todo), "shards_reused": len(done),
                     "samples_computed": sum(job.rows(s) for s in todo), "seconds": time.perf_counter() - began}
    if progress:
        info = trak.fit_info
        print(f"TRAK features: {info['samples_computed']} samples in {info['seconds']:.1f} s ({engine}); shards: "
              f"{info['shards_computed']} computed, {info['shards_reused']} reused", file=sys.stderr)
    return trak.load_features(store, total, shape)
