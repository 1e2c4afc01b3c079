"""Browsing a run folder without its model: pages of rows, filters, sorting, the metrics table, SpRAy clusters.

``browser = xk.run.RunBrowser("out/run")`` reads the Parquet rows of the completed shards once into one Arrow
table (re-read when more shards are written), then answers each query with ``pyarrow.compute`` on it:

- ``browser.page(RunFilter(label=3, correct=False, ranges={"pixel_flipping/lrp": (None, 0.2)}),
  sort="pixel_flipping/lrp", descending=True, offset=0, limit=24)`` → :class:`RunPageResult` (the rows of the
  page, how many match);
- ``browser.maps("lrp", page.indices)`` → only those samples' maps, read from the zarr shards (one inner chunk
  per sample), never the whole array;
- ``browser.benchmark_table()`` → the methods × metrics :class:`~xaikit.metrics.benchmark.BenchmarkResult`;
- ``browser.clusters("lrp", RunFilter(label=0))`` → :class:`RunClustersResult`, SpRAy (Lapuschkin et al.,
  Nat. Commun. 2019; :func:`xaikit.improve.spray`) on the heatmaps of the matching samples, with each
  cluster's members.

The model is never built: everything comes from the manifest, the rows and the maps.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import check_positive
from ..results import ResultExport
from .errors import require
from .store import Store
from .worker import column

#: the columns every run's rows have (besides the "metric/method" scores)
BASE_COLUMNS = ("index", "id", "shard", "label", "ok", "error", "target", "prediction", "score")
#: the sortable and range-filterable numeric base columns
NUMERIC_COLUMNS = ("index", "label", "target", "prediction", "score")


@dataclass
class RunFilter:
    """Which rows to keep; every given condition must hold (``None``: no condition).

    Attributes
    ----------
    label, prediction : int or sequence of int
        The sample's label / the model's arg-max class is (one of) these.
    correct : bool
        ``True``: prediction equals the label; ``False``: it differs (rows without a label never match).
    failed : bool
        ``True``: only the samples that failed (``ok`` false); ``False``: only those that did not.
    ranges : dict ``column -> (low, high)``
        A numeric column (a ``"metric/method"`` score, ``score``, ...) within ``[low, high]``; ``None`` leaves
        an end open. NaN never matches a range.
    """

    label: int | Sequence[int] | None = None
    prediction: int | Sequence[int] | None = None
    correct: bool | None = None
    failed: bool | None = None
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "RunFilter":
        """A filter from a JSON-like dict (the web view's query); unknown keys are refused."""
        values = dict(values or {})
        known = {"label", "prediction", "correct", "failed", "ranges"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown filter key(s) {unknown}; valid: {sorted(known)}")
        ranges = {k: (None if v[0] is None else float(v[0]), None if v[1] is None else float(v[1]))
                  for k, v in dict(values.get("ranges") or {}).items()}
        return cls(values.get("label"), values.get("prediction"), values.get("correct"), values.get("failed"), ranges)


@dataclass
class RunPageResult(ResultExport):
    """One page of rows: ``rows`` (list of dicts, in the page's order), ``total`` rows matching the filter,
    ``offset`` and ``limit`` of the page, ``sort`` column and direction."""

    rows: list[dict[str, Any]]
    total: int
    offset: int
    limit: int
    sort: str
    descending: bool

    @property
    def indices(self) -> list[int]:
        """Sample indices of the page's rows (for :meth:`RunBrowser.maps`)."""
        return [int(r["index"]) for r in self.rows]

    def _rows(self) -> list[dict[str, Any]]:
        return self.rows


@dataclass
class RunClustersResult(ResultExport):
    """SpRAy on a run's heatmaps: ``indices`` (N,) the clustered samples, ``labels`` (N,) their cluster,
    ``members`` cluster → sample indices, ``eigenvalues`` of the normalised graph Laplacian (ascending),
    ``mean`` (k, size, size) mean pooled heatmap per cluster, ``method`` the maps clustered, ``sampled`` whether
    the matching samples were more than ``limit`` and a spread-out subset was clustered."""

    method: str
    indices: list[int]
    labels: list[int]
    eigenvalues: list[float]
    mean: np.ndarray
    sampled: bool

    @property
    def n_clusters(self) -> int:
        return int(self.mean.shape[0])

    @property
    def members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {c: [] for c in range(self.n_clusters)}
        for index, label in zip(self.indices, self.labels):
            out[label].append(index)
        return out

    def _rows(self) -> list[dict[str, Any]]:
        return [{"index": i, "cluster": c} for i, c in zip(self.indices, self.labels)]


class RunBrowser:
    """Queries on the run folder ``out`` (see the module docstring); thread-safe, cheap to keep open."""

    def __init__(self, out: str | Path) -> None:
        self.store = Store(out)
        self.manifest = self.store.manifest()
        self._lock = threading.Lock()
        self._table: Any = None
        self._shards: frozenset[int] = frozenset()
        self._arrays: dict[str, Any] = {}
        self._parts: dict[int, Any] = {}
        self._loading = False

    @property
    def out(self) -> Path:
        return self.store.out

    # -- what the run holds -----------------------------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        return list(self.manifest["spec"]["methods"])

    @property
    def metrics(self) -> list[str]:
        return list(self.manifest["spec"]["metrics"])

    @property
    def map_methods(self) -> list[str]:
        """Methods whose maps were saved."""
        return list(self.manifest["maps"])

    @property
    def score_columns(self) -> list[str]:
        """The ``"metric/method"`` columns."""
        return [column(k, m) for k in self.metrics for m in self.methods]

    @property
    def sortable(self) -> list[str]:
        return [*NUMERIC_COLUMNS, *self.score_columns]

    def table(self) -> Any:
        """The rows of the completed shards as one ``pyarrow.Table`` sorted by ``index``. Each shard's rows file
        is read once (``pyarrow.parquet.ParquetFile``, about half the CPU time of a ``pyarrow.dataset`` scan of
        many small files); when more shards are written (a run still going), only those are read (a shard's
        rows file never changes once written)."""
        done = frozenset(self.store.done())
        with self._lock:
            if self._table is None or done != self._shards:
                if not done:
                    raise FileNotFoundError(f"run {str(self.out)!r} has no completed shard yet")
                pa = require("pyarrow", "run")
                pq = require("pyarrow.parquet", "run")
                for shard in sorted(done - set(self._parts)):
                    self._parts[shard] = pq.ParquetFile(self.store.rows_path(shard)).read()
                for shard in set(self._parts) - done:  # a shard removed (a run restarted with overwrite)
                    del self._parts[shard]
                # shards hold disjoint, ascending index ranges: in shard order the rows are sorted by index
                self._table = pa.concat_tables([self._parts[s] for s in sorted(done)]).combine_chunks()
                self._shards = done
            return self._table

    def classes(self) -> list[int]:
        """The labels and predicted classes that occur, sorted."""
        pc = require("pyarrow.compute", "run")
        table = self.table()
        values = set(pc.unique(table["label"].drop_null()).to_pylist())
        values |= set(v for v in pc.unique(table["prediction"]).to_pylist() if v is not None and v >= 0)
        return sorted(values)

    # -- queries ----------------------------------------------------------------------------------------
    def _mask(self, table: Any, filters: RunFilter) -> Any:
        pa = require("pyarrow", "run")
        pc = require("pyarrow.compute", "run")
        keep = pa.scalar(True)
        for name in ("label", "prediction"):
            wanted = getattr(filters, name)
            if wanted is not None:
                values = [wanted] if isinstance(wanted, (int, np.integer)) else list(wanted)
                if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
                    raise ValueError(f"filter {name} must be a class index or a list of them, got {wanted!r}")
                keep = pc.and_kleene(keep, pc.is_in(table[name], pa.array(values, pa.int64())))
        if filters.correct is not None:
            same = pc.equal(table["prediction"], table["label"])  # null where there is no label
            same = pc.fill_null(same, False) if filters.correct else pc.fill_null(pc.invert(same), False)
            keep = pc.and_kleene(keep, pc.and_(same, table["ok"]))
        if filters.failed is not None:
            keep = pc.and_kleene(keep, pc.invert(table["ok"]) if filters.failed else table["ok"])
        for name, bounds in filters.ranges.items():
            self._check_column(name)
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
                raise ValueError(f"range of {name!r} must be (low, high) with None for an open end, got {bounds!r}")
            low, high = bounds
            values = table[name]
            if pa.types.is_floating(values.type):
                keep = pc.and_kleene(keep, pc.invert(pc.is_nan(values)))
            if low is not None:
                keep = pc.and_kleene(keep, pc.greater_equal(values, float(low)))
            if high is not None:
                keep = pc.and_kleene(keep, pc.less_equal(values, float(high)))
        return keep

    def _check_column(self, name: str) -> None:
        if name not in self.sortable:
            raise ValueError(f"unknown column {name!r}; numeric columns of this run: {', '.join(self.sortable)}")

    def select(self, filters: RunFilter | Mapping[str, Any] | None = None, sort: str = "index",
               descending: bool = False) -> Any:
        """The matching rows (a ``pyarrow.Table``), sorted by ``sort`` (NaN and missing values last)."""
        pa = require("pyarrow", "run")
        pc = require("pyarrow.compute", "run")
        filters = filters if isinstance(filters, RunFilter) else RunFilter.from_dict(filters)
        self._check_column(sort)
        table = self.table()
        mask = self._mask(table, filters)
        if not isinstance(mask, pa.Scalar):
            table = table.filter(pc.fill_null(mask, False))
        if sort == "index" and not descending:
            return table
        key = table[sort]
        if pa.types.is_floating(key.type):  # NaN as null: nulls go last (Arrow's default) in either direction
            key = pc.if_else(pc.is_nan(key), pa.scalar(None, key.type), key)
        order = pc.sort_indices(pa.table({"k": key, "i": table["index"]}),
                                sort_keys=[("k", "descending" if descending else "ascending"), ("i", "ascending")])
        return table.take(order)

    def page(self, filters: RunFilter | Mapping[str, Any] | None = None, sort: str = "index",
             descending: bool = False, offset: int = 0, limit: int = 24) -> RunPageResult:
        """Rows ``offset .. offset+limit`` of :meth:`select` (``limit`` at most 1,000)."""
        check_positive(limit, "limit", integer=True)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
        limit = min(int(limit), 1000)
        filters = filters if isinstance(filters, RunFilter) else RunFilter.from_dict(filters)
        self._check_column(sort)
        plain = filters == RunFilter() and sort == "index" and not descending
        if plain and self._table is None:  # a fresh browser's first page: only the shards it shows are read
            part, total = self._first_rows(int(offset), limit)
            if not self._loading:  # the rest, behind (once)
                self._loading = True
                threading.Thread(target=self.table, name="xaikit-run-rows", daemon=True).start()
        else:
            rows = self.select(filters, sort, descending)
            part, total = rows.slice(int(offset), limit).to_pylist(), rows.num_rows
        for row in part:  # JSON-friendly: NaN as None
            for key, value in row.items():
                if isinstance(value, float) and math.isnan(value):
                    row[key] = None
        return RunPageResult(part, total, int(offset), limit, sort, bool(descending))

    def _first_rows(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Rows ``offset .. offset+limit`` of the completed shards in index order, read from those shards' files
        only (every shard's row count follows from the manifest), and how many rows there are."""
        pq = require("pyarrow.parquet", "run")
        n, size = self.manifest["num_samples"], self.manifest["shard_size"]
        done = sorted(self.store.done())
        if not done:
            raise FileNotFoundError(f"run {str(self.out)!r} has no completed shard yet")
        counts = [min(n, (s + 1) * size) - s * size for s in done]
        rows: list[dict[str, Any]] = []
        start = 0
        for shard, count in zip(done, counts):
            if start + count > offset and start < offset + limit:
                table = pq.ParquetFile(self.store.rows_path(shard)).read()
                rows += table.slice(max(0, offset - start), offset + limit - max(start, offset)).to_pylist()
            start += count
        return rows, sum(counts)

    # -- maps -------------------------------------------------------------------------------------------
    def _array(self, method: str) -> Any:
        names = self.manifest["maps"]
        if not names:
            raise ValueError(f"run {str(self.out)!r} was made with save_maps=False: it has no maps")
        if method not in names:
            raise ValueError(f"unknown method {method!r}; this run has maps of {', '.join(names)}")
        with self._lock:
            if method not in self._arrays:
                zarr = require("zarr", "run")
                self._arrays[method] = zarr.open_array(str(self.out / "maps" / names[method]), mode="r",
                                                       zarr_format=3)
            return self._arrays[method]

    def maps(self, method: str, indices: Sequence[int]) -> np.ndarray:
        """The maps of ``method`` for the samples ``indices`` only, ``(len(indices), *sample shape)`` float32
        (NaN for failed samples and unwritten shards)."""
        array = self._array(method)
        index = np.asarray(list(indices), dtype=np.int64)
        n = self.manifest["num_samples"]
        if index.size and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"sample indices must be in 0 .. {n - 1}")
        if index.size == 0:
            return np.zeros((0, *self.manifest["sample_shape"]), np.float32)
        return np.asarray(array.get_orthogonal_selection((index,)))

    # -- tables -----------------------------------------------------------------------------------------
    def benchmark_table(self, filters: RunFilter | Mapping[str, Any] | None = None) -> Any:
        """The methods × metrics table of the rows that match ``filters`` (default all)."""
        from .results import benchmark_of

        return benchmark_of(self.manifest, self.select(filters), None)

    def clusters(self, method: str, filters: RunFilter | Mapping[str, Any] | None = None,
                 n_clusters: int | None = None, limit: int = 512, size: int = 8, seed: int = 0) -> RunClustersResult:
        """SpRAy clusters of the ``method`` heatmaps of the matching, successful samples (SpRAy is meant for
        the samples of one class: give ``filters={"label": c}`` or ``{"prediction": c}``).

        At most ``limit`` samples are clustered (evenly spread over the matching ones): spectral clustering
        is quadratic in their number.
        """
        from ..improve.spray import spray

        check_positive(limit, "limit", integer=True)
        self._array(method)
        filters = filters if isinstance(filters, RunFilter) else RunFilter.from_dict(filters)
        filters = RunFilter(filters.label, filters.prediction, filters.correct, False, filters.ranges)
        index = self.select(filters)["index"].to_numpy()
        sampled = index.size > limit
        if sampled:
            index = index[np.linspace(0, index.size - 1, limit).round().astype(np.int64)]
        if index.size < 3:
            raise ValueError(f"SpRAy needs at least 3 heatmaps; {index.size} samples match the filter")
        maps = torch.from_numpy(self.maps(method, index.tolist()))
        if maps.ndim == 2:
            raise ValueError("SpRAy clusters image heatmaps; the maps of this run are vectors")
        if maps.ndim > 4:
            maps = maps.flatten(1, maps.ndim - 3)
        result = spray(maps, n_clusters=n_clusters, size=size, seed=seed)
        return RunClustersResult(method, index.tolist(), result.labels.tolist(), result.eigenvalues.tolist(),
                                 result.mean.numpy(), sampled)

    def __repr__(self) -> str:
        return f"RunBrowser({str(self.out)!r}, samples={self.manifest['num_samples']})"
