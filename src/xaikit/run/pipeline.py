"""``xaikit.run.run``: stream a data set through explain and evaluate, into a resumable run folder."""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any


from ..progress import Progress
from .._version import __version__
from .engines import ENGINES, run_in_process, run_ray
from .errors import RunError, require
from .results import RunResult
from .sources import Source, as_source
from .spec import RunSpec
from .store import Store, map_name


def identity(spec: RunSpec, source: Source) -> dict[str, Any]:
    """What the results depend on: the spec, the data, the number of samples, the shapes."""
    n = len(source)
    if n == 0:
        raise ValueError("the data set is empty")
    shape = _sample_shape(source)
    maps = {label: map_name(label) for label in spec.method_items} if spec.save_maps else {}
    if len(set(maps.values())) != len(maps):
        raise ValueError(f"method labels {sorted(maps)} give the same map names; label them apart with a dict")
    return {"xaikit": __version__.split("+")[0], "spec": spec.describe(), "data": source.describe(),
            "num_samples": n, "shard_size": spec.shard_size, "num_shards": -(-n // spec.shard_size),
            "sample_shape": list(shape), "maps": maps}


def _sample_shape(source: Source) -> tuple[int, ...]:
    """The shape of the first sample that can be read (every sample must have it)."""
    errors = []
    for index in range(min(len(source), 8)):
        try:
            return tuple(source.sample(index).x.shape)
        except Exception as err:  # noqa: BLE001 - try the next one, say why if none can be read
            errors.append(f"{index}: {type(err).__name__}: {err}")
    raise ValueError(f"cannot read any of the first samples of the data: {'; '.join(errors)}")


def _check(spec: RunSpec, source: Source) -> None:
    from ..metrics import METRICS

    needing = [label for label, (name, _) in spec.metric_items.items() if METRICS[name].needs_mask]
    if needing and not source.has_masks:
        raise ValueError(f"metric(s) {', '.join(needing)} need ground-truth masks, which the data does not have")
    if spec.target == "label" and not source.has_labels:
        raise ValueError("target='label' but the data has no labels; use target='auto' or 'argmax'")


def run(spec: RunSpec, data: Any, out: str | Path, *, engine: str = "inprocess", address: str | None = None,
        workers: int | None = None, overwrite: bool = False, progress: bool = True,
        **source_options: Any) -> RunResult:
    """Compute ``spec`` on every sample of ``data`` into the run folder ``out`` and return the result.

    Parameters
    ----------
    spec : RunSpec
        The work: model factory, methods, metrics, target, seed, shard size.
    data : dataset, DataLoader, folder, CSV/Parquet path, ``datasets.Dataset``, ShapesData, tensor or Source
        See :func:`~xaikit.run.sources.as_source`; ``source_options`` go to it.
    out : path
        The run folder. A folder holding this run's manifest is resumed: only the missing shards are computed.
        One holding a different run's manifest is refused unless ``overwrite``.
    engine : "inprocess" or "ray"
        ``"ray"`` needs ``xaikit[ray]``: an actor pool of ``workers`` on the cluster at ``address``
        (``"auto"``: the running cluster), or on a local cluster started for the run. A Ray run pays a fixed
        start-up cost before its first sample: starting a local cluster (4–7 s on a 2-core machine) and the
        actor processes, which import torch and build the model (4–5 s more); 8 samples of the shapes CNN take
        12 s on Ray and 1 s in-process. Ray pays off for runs of minutes and more, on several GPUs or machines;
        for short runs ``"inprocess"`` is faster.
    progress : bool
        A progress bar over the samples and a summary line at the end (stderr).

    Returns
    -------
    RunResult
        Reader of the run folder; ``result.summary`` holds this session's numbers.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be an xaikit.run.RunSpec, got {type(spec).__name__}")
    if engine == "inprocess" and (address is not None or workers not in (None, 1)):
        raise ValueError("address and workers apply to engine='ray'; the in-process engine has one worker")
    if engine == "ray":
        require("ray", "ray")
    require("pyarrow", "run")
    if spec.save_maps:
        require("zarr", "run")
    source = as_source(data, **source_options)
    _check(spec, source)
    store = Store(out)
    manifest = store.prepare(identity(spec, source), overwrite=overwrite)
    done = store.done()
    todo = [s for s in range(manifest["num_shards"]) if s not in done]
    n_todo = sum(min(manifest["num_samples"], (s + 1) * spec.shard_size) - s * spec.shard_size for s in todo)
    bar = Progress(n_todo, f"xaikit run ({engine})", "sample", enabled=progress)
    computed: list[dict[str, Any]] = []

    def report(shard: dict[str, Any]) -> None:
        computed.append(shard)
        bar.update(shard["rows"])
        bar.set_postfix(failed=sum(s["failures"] for s in computed))

    began = time.perf_counter()
    n_workers = 0
    try:
        if todo:
            if engine == "ray":
                n_workers = run_ray(spec, source, store, todo, report, address=address, workers=workers)
            else:
                n_workers = run_in_process(spec, source, store, todo, report)
    finally:
        bar.close()
        seconds = time.perf_counter() - began
        summary = _summary(engine, n_workers, seconds, computed, len(done), manifest["num_shards"])
        manifest = store.manifest()
        manifest["sessions"].append(summary)
        store.write_manifest(manifest)
    missing = set(range(manifest["num_shards"])) - store.done()
    if missing:
        raise RunError(f"{len(missing)} shard(s) were not written ({sorted(missing)[:8]}); run again to resume")
    if progress:
        print(format_summary(summary), file=sys.stderr)
    result = RunResult(out, summary)
    if summary["samples_computed"] and summary["failures"] == summary["samples_computed"]:
        first = result.failures()["error"].iloc[0]
        warnings.warn(f"every sample of this run failed; the first error: {first}", UserWarning, stacklevel=2)
    return result


def _summary(engine: str, workers: int, seconds: float, computed: list[dict[str, Any]], reused: int,
             total: int) -> dict[str, Any]:
    samples = sum(s["rows"] for s in computed)
    return {"engine": engine, "workers": workers, "seconds": round(seconds, 3),
            "shards_computed": len(computed), "shards_reused": reused, "shards_total": total,
            "samples_computed": samples, "failures": sum(s["failures"] for s in computed),
            "retried_chunks": sum(s.get("retried_chunks", 0) for s in computed),
            "samples_per_s": round(samples / seconds, 3) if seconds > 0 and samples else 0.0,
            "finished": len(computed) + reused == total, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def format_summary(summary: dict[str, Any]) -> str:
    """One line: samples, seconds, throughput, failures, shards computed and reused."""
    return (f"xaikit run: {summary['samples_computed']} samples in {summary['seconds']:.1f} s "
            f"({summary['samples_per_s']:.2f} samples/s, {summary['engine']}, {summary['workers']} worker(s)); "
            f"{summary['failures']} failed; shards: {summary['shards_computed']} computed, "
            f"{summary['shards_reused']} reused of {summary['shards_total']}")


def benchmark(spec: RunSpec, data: Any, out: str | Path, **options: Any) -> Any:
    """The methods × metrics table of :func:`xaikit.metrics.benchmark`, computed through the pipeline.

    Runs (or resumes) ``spec`` on the whole data set ``data`` with :func:`run` (``options`` go to it: engine,
    workers, overwrite, ...) and returns the :class:`~xaikit.metrics.benchmark.BenchmarkResult` of the rows:
    per-sample scores, mean ± standard error, the best method per metric, Markdown/CSV/JSON export.
    """
    if not spec.metric_items:
        raise ValueError("spec has no metrics: give RunSpec(metrics=[...]) for a methods × metrics table")
    return run(spec, data, out, **options).benchmark_table()
