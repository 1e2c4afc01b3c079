"""Engines that hand the missing shards to workers: in-process (default) and Ray Data.

Both run :class:`~xaikit.run.worker.ShardWorker` on whole shards, so they write the same bytes. The Ray
engine maps the list of shard indices with ``Dataset.map_batches`` over an actor pool: one actor per worker,
each building the model once, ``num_gpus=1`` per actor where the cluster has GPUs, one shard per call (the
chunk size inside a shard comes from the run's ``batch_size``, ``"auto"`` by timing). A worker that dies is
not restarted by Ray; the shards not yet written are mapped again over fresh actors (:func:`run_ray`).

A Ray run has a fixed start-up cost (a local cluster 4–7 s, then the actors' imports and model, 4–5 s, on a
2-core machine) that dominates short runs: the in-process engine is the default for that reason.
"""
from __future__ import annotations

import logging
import re
import socket
import warnings
from typing import Any, Callable, Iterable

from .errors import ClusterUnreachable, RunError, WorkerSetupError, require
from .sources import Source
from .spec import RunSpec
from .store import Store
from .worker import ShardWorker, worker_name

Report = Callable[[dict[str, Any]], None]
#: builds a shard worker on a worker (its argument names the worker); the worker maps a shard index to its report
MakeWorker = Callable[[str], Callable[[int], dict[str, Any]]]


def run_in_process(spec: RunSpec, source: Source, store: Store, shards: list[int], report: Report,
                   make_worker: MakeWorker | None = None) -> int:
    """Compute ``shards`` here, one after another; returns the number of workers (1).

    ``make_worker(where)``: another kind of shard worker (a callable ``shard -> report``; e.g. the
    featurisation of :mod:`xaikit.run.features`); default the explain-and-evaluate :class:`ShardWorker`."""
    worker = make_worker("in-process") if make_worker else ShardWorker(spec, source, store, where="in-process")
    for shard in shards:
        report(worker(shard))
    return 1


# ---- Ray --------------------------------------------------------------------------------------------------

class RayShardWorker:
    """The Ray actor: a :class:`ShardWorker` built once per actor, called on batches of shard indices."""

    def __init__(self, spec: RunSpec, source: Source, store: Store, threads: int,
                 make_worker: MakeWorker | None = None) -> None:
        import torch

        torch.set_num_threads(threads)
        where = f"{worker_name()} (Ray actor)"
        self.worker = make_worker(where) if make_worker else ShardWorker(spec, source, store, where=where)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [self.worker(int(s)) for s in batch["shard"]]
        return {key: np.array([r[key] for r in results]) for key in ("shard", "rows", "failures", "seconds", "retried_chunks")}


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast with :class:`ClusterUnreachable` when ``host:port`` does not accept connections.

    (``ray.init`` itself keeps retrying an unreachable address for minutes.)
    """
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if match is None:
        return  # "auto", "local" and other forms: ray.init decides quickly
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address!r} ({type(err).__name__}: {err}); start it with "
            "`ray start --head` and pass the address it prints, or drop --address to start a local cluster") from None


def connect(address: str | None, num_cpus: int | None) -> bool:
    """Connect to the cluster at ``address`` or start a local one; returns whether we started it."""
    ray = require("ray", "ray")
    if ray.is_initialized():
        if address is not None:
            warnings.warn(f"Ray is already initialised in this process: the run uses that session, not address "
                          f"{address!r}", UserWarning, stacklevel=3)
        return False
    if address is not None:
        check_address(address)
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 configure_logging=True, logging_level=logging.WARNING, log_to_driver=True)
    except ConnectionError as err:
        raise ClusterUnreachable(f"cannot reach the Ray cluster at {address!r}: {err}") from None
    return address is None


RESTARTS = 3  # rounds of fresh actors for the shards of workers that died, per run


def run_ray(spec: RunSpec, source: Source, store: Store, shards: list[int], report: Report,
            address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1,
            make_worker: MakeWorker | None = None) -> int:
    """Compute ``shards`` on a Ray cluster with an actor pool of ``workers``; returns the number of workers.

    Without ``address`` (and no Ray already initialised) a local cluster is started and shut down at the end.
    ``workers`` defaults to the cluster's GPUs when it has some (one actor per GPU), else its CPUs.

    A worker that dies (killed, out of memory, node lost) is not restarted by Ray (``max_restarts=0``: Ray
    Data hands its actors their constructor arguments through the object store, and Ray's core logs an
    error-level line for every such actor that may restart, because a restart can fail once those objects are
    gone, ray-project/ray#53727). Instead the shards not yet written are mapped again over a fresh actor pool,
    up to ``RESTARTS`` times; a shard is written whole or not at all, so a shard cut off is redone whole.
    ``make_worker``: as for :func:`run_in_process` (picklable; called once per actor).
    """
    ray = require("ray", "ray")
    started = connect(address, None if workers is None else workers * cpus_per_worker)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = spec.device != "cpu" and gpus > 0
        if spec.device == "cuda" and not use_gpu:
            raise RunError("device='cuda' but the Ray cluster has no GPUs")
        if workers is None:
            workers = gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // cpus_per_worker)
        workers = max(1, min(workers, len(shards)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.max_consecutive_actor_init_deaths = 0  # a factory that fails once fails the run
        reported: set[int] = set()

        def counted(shard: dict[str, Any]) -> None:
            reported.add(shard["shard"])
            report(shard)

        todo = list(shards)
        for restart in range(RESTARTS + 1):
            try:
                _map_shards(ray, spec, source, store, todo, counted, workers, cpus_per_worker, use_gpu,
                            make_worker)
                break
            except Exception as err:  # noqa: BLE001 - translate the worker's error for the user
                ours = _worker_error(err)
                if ours is not err or not _actor_died(ray, err) or restart == RESTARTS:
                    raise ours from err
                done = store.done()
                for shard in sorted(done.intersection(todo) - reported):  # written, its result not yet received
                    counted(store.report(shard))
                todo = [s for s in todo if s not in done]
                if not todo:
                    break
    finally:
        if started:
            ray.shutdown()
    return workers


def _map_shards(ray: Any, spec: RunSpec, source: Source, store: Store, shards: list[int], report: Report,
                workers: int, cpus_per_worker: int, use_gpu: bool, make_worker: MakeWorker | None = None) -> None:
    """One pass of Ray Data ``map_batches`` over ``shards`` with a pool of ``workers`` actors."""
    ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
    with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60): only this warning
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            RayShardWorker, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(shards)))),
            num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0, max_restarts=0,
            fn_constructor_kwargs={"spec": spec, "source": source, "store": store, "threads": cpus_per_worker,
                                   "make_worker": make_worker})
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
        for i in range(len(batch["shard"])):
            report({key: batch[key][i].item() for key in batch})


def _actor_died(ray: Any, err: BaseException) -> bool:
    """Whether ``err`` (or an error in its chain) says that an actor process died."""
    died = tuple(getattr(ray.exceptions, name) for name in ("RayActorError", "ActorUnavailableError")
                 if hasattr(ray.exceptions, name))  # the second is newer than Ray 2.9
    return any(isinstance(e, died) for e in _chain(err)) or "ActorDiedError" in str(err)


def _worker_error(err: BaseException) -> BaseException:
    """Our own errors raised in a Ray actor, unwrapped; any other error as it is."""
    for candidate in _chain(err):
        if isinstance(candidate, RunError):
            return type(candidate)(str(candidate))
    text = str(err)
    match = re.search(r"(WorkerSetupError|RunError): (.+)", text)
    if match:
        kind = WorkerSetupError if match.group(1) == "WorkerSetupError" else RunError
        return kind(match.group(2).strip().splitlines()[0])
    return err


def _chain(err: BaseException | None) -> Iterable[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            yield cause
        err = err.__cause__ or err.__context__


ENGINES = ("inprocess", "ray")
