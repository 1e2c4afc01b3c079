"""Reading a run folder back: rows as a pandas or Arrow table, maps as tensors, the metrics table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..results import ResultExport
from .errors import require
from .store import Store
from .worker import column


class RunResult(ResultExport):
    """A (finished or partial) run folder.

    ``table()`` / ``arrow()`` give one row per sample of the completed shards, sorted by sample index (also the
    rows of ``to_pandas()``, ``to_markdown()``, ``to_csv()`` and ``to_json()``);
    ``maps(method)`` the attributions as a tensor; ``failures()`` the rows that failed;
    ``benchmark_table()`` the methods × metrics table of :mod:`xaikit.metrics.benchmark`.
    """

    def __init__(self, out: str | Path, summary: dict[str, Any] | None = None) -> None:
        self.store = Store(out)
        self.manifest = self.store.manifest()
        self.summary = summary if summary is not None else (self.manifest["sessions"] or [None])[-1]

    @property
    def out(self) -> Path:
        return self.store.out

    @property
    def complete(self) -> bool:
        """Whether every shard is written."""
        return len(self.store.done()) == self.manifest["num_shards"]

    def arrow(self) -> Any:
        """The rows of the completed shards as a ``pyarrow.Table`` (sorted by ``index``)."""
        pa = require("pyarrow", "run")
        pq = require("pyarrow.parquet", "run")
        shards = sorted(self.store.done())
        if not shards:
            raise FileNotFoundError(f"run {str(self.out)!r} has no completed shard yet")
        table = pa.concat_tables([pq.read_table(self.store.rows_path(s)) for s in shards])
        return table.sort_by("index")

    def table(self) -> Any:
        """The rows as a ``pandas.DataFrame`` indexed by sample ``index``."""
        return self.arrow().to_pandas().set_index("index")

    def _rows(self) -> list[dict[str, Any]]:
        return self.table().reset_index().to_dict("records")

    def failures(self) -> Any:
        """The rows of samples that failed, with their ``error``."""
        table = self.table()
        return table[~table["ok"]]

    def maps(self, method: str | None = None, index: Sequence[int] | slice | None = None) -> torch.Tensor:
        """Attributions of ``method`` (default: the only or first one) for samples ``index`` (default all).

        Samples that failed, or whose shard is not written yet, are NaN.
        """
        names = self.manifest["maps"]
        if not names:
            raise ValueError(f"run {str(self.out)!r} was made with save_maps=False: it has no maps")
        method = next(iter(names)) if method is None else method
        if method not in names:
            raise ValueError(f"unknown method {method!r}; this run has maps of {', '.join(names)}")
        zarr = require("zarr", "run")
        array = zarr.open_array(str(self.out / "maps" / names[method]), mode="r", zarr_format=3)
        selection = slice(None) if index is None else index
        if isinstance(selection, slice):
            values = array[selection]
        else:
            values = array.get_orthogonal_selection((np.asarray(list(selection), dtype=np.int64),))
        return torch.from_numpy(np.asarray(values))

    def timing(self) -> dict[str, float]:
        """Seconds each method spent, summed over the completed shards."""
        total: dict[str, float] = {}
        for shard in self.store.done():
            path = self.out / "timing" / f"shard-{shard:06d}.json"
            if path.is_file():
                for label, seconds in json.loads(path.read_text())["method_s"].items():
                    total[label] = total.get(label, 0.0) + seconds
        return total

    def benchmark_table(self) -> Any:
        """The methods × metrics :class:`~xaikit.metrics.benchmark.BenchmarkResult` of the run's rows.

        Failed samples score NaN (left out of means, as undefined scores are). Curves are not stored by runs.
        """
        return benchmark_of(self.manifest, self.arrow(), self.timing())

    def __repr__(self) -> str:
        return (f"RunResult({str(self.out)!r}, samples={self.manifest['num_samples']}, "
                f"shards={len(self.store.done())}/{self.manifest['num_shards']})")


def benchmark_of(manifest: dict[str, Any], rows: Any, timing: dict[str, float] | None) -> Any:
    """The methods × metrics :class:`~xaikit.metrics.benchmark.BenchmarkResult` of a run's ``rows`` (an Arrow
    table of some or all of its rows); failed samples score NaN (left out of means)."""
    from ..metrics import METRICS
    from ..metrics.benchmark import BenchmarkResult

    spec = manifest["spec"]
    methods, metrics = list(spec["methods"]), list(spec["metrics"])
    if not metrics:
        raise ValueError("the run has no metrics; give RunSpec(metrics=...)")
    scores = {(m, k): torch.tensor(rows[column(k, m)].to_numpy(zero_copy_only=False).astype(np.float64))
              for m in methods for k in metrics}
    classes = {k: METRICS[spec["metrics"][k][0]] for k in metrics}
    return BenchmarkResult(methods, metrics, scores, {k: bool(c.higher_is_better) for k, c in classes.items()},
                           {k: c.family for k, c in classes.items()}, timing=timing or {})


def open_run(out: str | Path) -> RunResult:
    """Open the run folder ``out`` for reading."""
    return RunResult(out)
