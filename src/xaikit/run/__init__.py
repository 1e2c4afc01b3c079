"""Data-set scale: stream a data set through explain and evaluate into sharded, resumable storage.

``xk.run.run(RunSpec(model="module:factory", methods=["lrp"], metrics=["pixel_flipping"]), data, "out/run")``
computes every sample, in-process by default or on a Ray cluster (``engine="ray"``, extra ``xaikit[ray]``),
writes per-sample scalars to Parquet and attributions to zarr v3 shards (each written by one worker), and
returns a :class:`RunResult` (pandas/Arrow tables, tensors, the metrics table). A run killed at any point
and restarted computes only the missing shards. See ``docs/run.md``.
"""
from .browse import RunBrowser, RunClustersResult, RunFilter, RunPageResult
from .errors import ClusterUnreachable, ManifestMismatch, MissingExtra, RunError, WorkerSetupError
from .features import featurise
from .pipeline import benchmark, format_summary, run
from .results import RunResult, open_run
from .sources import (DatasetSource, HFSource, ImageFolderSource, Sample, Source, TableSource, TensorSource,
                      as_source)
from .spec import RunSpec

__all__ = ["run", "featurise",
           "benchmark", "RunSpec", "RunResult", "open_run", "format_summary", "as_source", "Source", "Sample",
           "TensorSource", "DatasetSource", "ImageFolderSource", "TableSource", "HFSource", "RunError",
           "ManifestMismatch", "WorkerSetupError", "ClusterUnreachable", "MissingExtra", "RunBrowser",
           "RunFilter", "RunPageResult", "RunClustersResult"]
