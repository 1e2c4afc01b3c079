"""One worker's job: compute a whole shard and write it (maps, then rows) — the same code in every engine.

Inside a shard the samples are explained in chunks (``batch_size``, or timed by
:func:`xaikit.batching.chunked` for ``"auto"``). A chunk that runs out of memory is split in halves and
retried; a chunk that raises anything else is retried one sample at a time, so only the samples that raise
are lost: their row says why (``ok=False``, ``error``) and their maps stay NaN. The shard is seeded from the
run seed and its index, so a shard gives the same bytes whichever worker computes it, and when.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np
import torch

from ..batching import chunked, max_chunk
from .errors import RunError
from .sources import Source
from .spec import RunSpec, build
from .store import Store, require, shard_report

#: error text kept per failed sample
ERROR_CHARS = 500


def shard_seed(seed: int, shard: int) -> int:
    """The seed of one shard: a fixed function of the run seed and the shard index."""
    return (seed * 1_000_003 + shard) % (2**63 - 1)


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` means the device (or host) ran out of memory."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text.lower() or "can't allocate memory" in text or isinstance(err, MemoryError))


def worker_name() -> str:
    return f"{socket.gethostname()} (pid {os.getpid()})"


class ShardWorker:
    """Builds the spec's model, methods and metrics once; :meth:`__call__` computes and writes one shard."""

    def __init__(self, spec: RunSpec, source: Source, store: Store, where: str | None = None) -> None:
        self.spec, self.source, self.store = spec, source, store
        self.parts = build(spec, where or worker_name())
        manifest = store.manifest()
        self.n, self.shard_size = manifest["num_samples"], manifest["shard_size"]
        self.sample_shape = tuple(manifest["sample_shape"])
        self.maps = manifest["maps"]
        self.method_s: dict[str, float] = {}  #: seconds per method in the current shard
        self.retries: list[str] = []  #: chunks of the current shard retried smaller, and why

    # -- one shard -----------------------------------------------------------------------------------------
    def __call__(self, shard: int) -> dict[str, Any]:
        began = time.perf_counter()
        start, stop = shard * self.shard_size, min(self.n, (shard + 1) * self.shard_size)
        if not 0 <= start < stop:
            raise RunError(f"shard {shard} is outside the run (0 .. {(self.n - 1) // self.shard_size})")
        torch.manual_seed(shard_seed(self.spec.seed, shard))
        count = stop - start
        errors: list[str | None] = [None] * count
        ids, labels, xs, ys, masks, loaded = [str(start + i) for i in range(count)], [None] * count, [], [], [], []
        for i in range(count):
            try:
                sample = self.source.sample(start + i)
                if tuple(sample.x.shape) != self.sample_shape:
                    raise ValueError(f"sample shape {tuple(sample.x.shape)} differs from the run's "
                                     f"{self.sample_shape}")
            except Exception as err:  # noqa: BLE001 - recorded for this sample, the shard goes on
                errors[i] = _text(err, "loading")
                continue
            ids[i], labels[i] = sample.id, sample.y
            xs.append(sample.x)
            ys.append(sample.y)
            masks.append(sample.mask)
            loaded.append(i)
        self.method_s = {label: 0.0 for label in self.parts.methods}
        self.retries = []
        result = self._compute(xs, ys, masks) if loaded else None
        maps = {label: np.full((count, *self.sample_shape), np.nan, np.float32) for label in self.maps}
        rows = _empty_rows(count, self.parts.methods, self.parts.metrics)
        if result is not None:
            for j, i in enumerate(loaded):
                if result["errors"][j] is not None:
                    errors[i] = result["errors"][j]
                    continue
                for key, values in result["rows"].items():
                    rows[key][i] = values[j]
                for label in self.maps:
                    maps[label][i] = result["maps"][label][j]
        rows["ok"] = [e is None for e in errors]
        for name, array in maps.items():
            self.store.write_map(self.maps[name], start, array)
        table = _table(start, shard, ids, labels, errors, rows)
        seconds = time.perf_counter() - began
        failures = sum(e is not None for e in errors)
        timing = {"seconds": seconds, "method_s": self.method_s, "worker": worker_name(), "retried_chunks": self.retries,
                  "rows": count, "failures": failures}
        self.store.write_rows(shard, table, timing)
        return shard_report(shard, timing)

    # -- chunks --------------------------------------------------------------------------------------------
    def _compute(self, xs: list, ys: list, masks: list) -> dict[str, Any]:
        device = self.parts.device
        x = torch.stack(xs).to(device)
        y = torch.tensor(ys, device=device) if ys and all(v is not None for v in ys) else None
        mask = torch.stack(masks).to(device) if masks and all(m is not None for m in masks) else None
        item_bytes = x[0].numel() * x.element_size()
        key = ("xaikit.run", id(self), tuple(x.shape[1:]), str(device))
        parts = chunked(lambda a, b: self._safe(x, y, mask, a, b), x.shape[0], self.spec.batch_size, key=key,
                        cap=max_chunk(item_bytes, device))
        return _cat(parts)

    def _safe(self, x, y, mask, a: int, b: int) -> dict[str, Any]:
        """Chunk ``a:b``; halves on out-of-memory, one sample at a time on any other error."""
        try:
            return self._chunk(x[a:b], None if y is None else y[a:b], None if mask is None else mask[a:b])
        except RunError:
            raise
        except Exception as err:  # noqa: BLE001 - a failing sample must not lose the shard
            self.retries.append(f"{a}:{b} {_text(err, 'chunk')[:200]}")
            if b - a > 1:
                if is_oom(err):
                    if device_is_cuda(x):
                        torch.cuda.empty_cache()
                    middle = (a + b) // 2
                    return _cat([self._safe(x, y, mask, a, middle), self._safe(x, y, mask, middle, b)])
                return _cat([self._safe(x, y, mask, i, i + 1) for i in range(a, b)])
            return self._failed(_text(err, "computing"))

    def _failed(self, error: str) -> dict[str, Any]:
        rows = {k: np.array(v, dtype=np.float64 if k not in ("target", "prediction") else np.int64)
                for k, v in _empty_rows(1, self.parts.methods, self.parts.metrics).items()}
        maps = {label: np.full((1, *self.sample_shape), np.nan, np.float32) for label in self.maps}
        return {"errors": [error], "rows": rows, "maps": maps}

    def _chunk(self, x: torch.Tensor, y: torch.Tensor | None, mask: torch.Tensor | None) -> dict[str, Any]:
        target = self._target(y)
        rows: dict[str, np.ndarray] = {}
        maps: dict[str, np.ndarray] = {}
        for label, method in self.parts.methods.items():
            began = time.perf_counter()
            expl = method(x, target=target)
            self.method_s[label] += time.perf_counter() - began
            if tuple(expl.attribution.shape[1:]) != self.sample_shape:
                raise RunError(f"method {label!r} gives attributions of shape {tuple(expl.attribution.shape[1:])}, "
                               f"not the input's {self.sample_shape}; run it with save_maps=False")
            if "target" not in rows:  # the first method fixes target, prediction and score of each sample
                output = expl.output.detach().flatten(1).double()
                index = expl.target.to(output.device)
                rows["target"] = index.cpu().numpy().astype(np.int64)
                rows["prediction"] = output.argmax(1).cpu().numpy().astype(np.int64)
                rows["score"] = output.gather(1, index.clamp(min=0)[:, None])[:, 0].cpu().numpy()
            if label in self.maps:
                maps[label] = expl.attribution.detach().float().cpu().numpy()
            for metric_label, metric in self.parts.metrics.items():
                result = metric.evaluate(self.parts.model, x, expl.target.to(x.device),
                                         method if metric.needs_method else expl,
                                         mask if metric.needs_mask else None)
                rows[column(metric_label, label)] = result.scores.detach().double().cpu().numpy()
        return {"errors": [None] * x.shape[0], "rows": rows, "maps": maps}

    def _target(self, y: torch.Tensor | None) -> Any:
        target = self.spec.target
        if isinstance(target, int):
            return target
        if target == "label" or (target == "auto" and y is not None):
            if y is None:
                raise RunError("target='label' but the data has no labels")
            return y
        return None


def device_is_cuda(x: torch.Tensor) -> bool:
    return x.device.type == "cuda"


def column(metric: str, method: str) -> str:
    """The row column of a metric's score for a method: ``"metric/method"``."""
    return f"{metric}/{method}"


def _text(err: BaseException, stage: str) -> str:
    return f"{stage}: {type(err).__name__}: {err}"[:ERROR_CHARS]


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": [e for p in parts for e in p["errors"]], "rows": {}, "maps": {}}
    for kind in ("rows", "maps"):
        names = dict.fromkeys(n for p in parts for n in p[kind])
        for name in names:
            out[kind][name] = np.concatenate([p[kind][name] for p in parts])
    return out


def _empty_rows(count: int, methods: dict, metrics: dict) -> dict[str, list]:
    rows: dict[str, list] = {"target": [-1] * count, "prediction": [-1] * count, "score": [float("nan")] * count}
    for metric in metrics:
        for method in methods:
            rows[column(metric, method)] = [float("nan")] * count
    return rows


def _table(start: int, shard: int, ids: list[str], labels: list, errors: list, rows: dict[str, Any]) -> Any:
    pa = require("pyarrow", "run")
    count = len(ids)
    columns = {
        "index": pa.array(np.arange(start, start + count, dtype=np.int64)),
        "id": pa.array(ids, pa.string()),
        "shard": pa.array(np.full(count, shard, np.int32)),
        "label": pa.array(labels, pa.int64()),
        "ok": pa.array(rows.pop("ok"), pa.bool_()),
        "error": pa.array(errors, pa.string()),
        "target": pa.array(np.asarray(rows.pop("target"), np.int64)),
        "prediction": pa.array(np.asarray(rows.pop("prediction"), np.int64)),
        "score": pa.array(np.asarray(rows.pop("score"), np.float64)),
    }
    for name, values in rows.items():
        columns[name] = pa.array(np.asarray(values, np.float64))
    return pa.table(columns)
