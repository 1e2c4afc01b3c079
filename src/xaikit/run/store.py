"""The output folder of a run: manifest, per-sample rows in Parquet, dense maps in zarr v3 shards.

Layout::

    out/manifest.json              identity of the run (spec, data, shapes) and a summary of every session
    out/rows/shard-000007.parquet  the per-sample scalars of shard 7 (its presence marks the shard done)
    out/timing/shard-000007.json   seconds spent on shard 7, its rows and failures (kept apart so the rows
                                   are the same bytes)
    out/maps/<method>/             zarr v3 array (N, *sample shape), one zarr shard per run shard

A shard is written by exactly one worker and completed atomically: the maps are written first, then the
rows go to a temporary file that is renamed into place. A run killed at any point leaves at most a shard
without its rows file; resuming recomputes exactly those shards and rewrites their maps whole.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ManifestMismatch, require
from .spec import fingerprint

MANIFEST = "manifest.json"
FORMAT = "xaikit-run/1"
_ROWS = re.compile(r"^shard-(\d{6})\.parquet$")


def map_name(label: str) -> str:
    """A folder-safe zarr array name for a method label."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "method"


def shard_report(shard: int, timing: dict[str, Any]) -> dict[str, Any]:
    """What a worker reports to the driver for a completed ``shard``, from the shard's timing record."""
    return {"shard": shard, "rows": timing["rows"], "failures": timing["failures"], "seconds": timing["seconds"],
            "retried_chunks": len(timing["retried_chunks"])}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of the run in ``out`` (``None`` when there is none)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestMismatch(f"{str(path)!r} is not a valid run manifest ({err}); "
                               "give another output folder or overwrite=True") from None


class Store:
    """Reads and writes one run folder (picklable: workers get a copy and open the arrays themselves)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._arrays: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"out": self.out, "_arrays": {}}

    # -- the manifest --------------------------------------------------------------------------------------
    def prepare(self, identity: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
        """Start or resume the run described by ``identity``; returns the manifest.

        The same run is resumed. A folder holding the manifest of a different run is refused unless
        ``overwrite``, which deletes the run found there (manifest, rows, timing and maps, nothing else) and
        starts afresh.
        """
        key = fingerprint(identity)
        existing = read_manifest(self.out) if self.out.exists() else None
        if existing is not None and overwrite:
            self.clear()
            existing = None
        if existing is not None and existing.get("fingerprint") != key:
            raise ManifestMismatch(
                f"output folder {str(self.out)!r} holds a different run (model {existing.get('spec', {}).get('model')!r}, "
                f"data {existing.get('data', {}).get('kind')!r}, fingerprint {existing.get('fingerprint')}, "
                f"this run {key}); give another folder or overwrite=True (--overwrite) to replace it")
        if existing is not None:
            return existing
        self.out.mkdir(parents=True, exist_ok=True)
        for folder in ("rows", "timing"):
            (self.out / folder).mkdir(exist_ok=True)
        manifest = {"format": FORMAT, "fingerprint": key, **identity, "sessions": []}
        if identity["spec"]["save_maps"]:
            self._create_maps(manifest)
        self.write_manifest(manifest)
        return manifest

    def clear(self) -> None:
        """Delete this run's files (manifest, rows, timing, maps)."""
        for folder in ("rows", "timing", "maps"):
            shutil.rmtree(self.out / folder, ignore_errors=True)
        (self.out / MANIFEST).unlink(missing_ok=True)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())

    def manifest(self) -> dict[str, Any]:
        manifest = read_manifest(self.out)
        if manifest is None:
            raise FileNotFoundError(f"{str(self.out)!r} holds no run manifest ({MANIFEST})")
        return manifest

    # -- dense maps ----------------------------------------------------------------------------------------
    def _create_maps(self, manifest: dict[str, Any]) -> None:
        zarr = require("zarr", "run")
        n, shard, shape = manifest["num_samples"], manifest["shard_size"], tuple(manifest["sample_shape"])
        root = zarr.open_group(str(self.out / "maps"), mode="w", zarr_format=3)
        for label, name in manifest["maps"].items():
            root.create_array(name, shape=(n, *shape), dtype="float32", chunks=(1, *shape),
                              shards=(shard, *shape), fill_value=np.nan, attributes={"method": label})

    def array(self, name: str) -> Any:
        if name not in self._arrays:
            zarr = require("zarr", "run")
            self._arrays[name] = zarr.open_array(str(self.out / "maps" / name), mode="r+", zarr_format=3)
        return self._arrays[name]

    def write_map(self, name: str, start: int, values: np.ndarray) -> None:
        """Write rows ``start:start+len(values)`` of map ``name`` (one whole shard)."""
        self.array(name)[start:start + len(values)] = values

    # -- rows ----------------------------------------------------------------------------------------------
    def rows_path(self, shard: int) -> Path:
        return self.out / "rows" / f"shard-{shard:06d}.parquet"

    def done(self) -> set[int]:
        """Shards whose rows are written (complete)."""
        folder = self.out / "rows"
        if not folder.is_dir():
            return set()
        return {int(m.group(1)) for p in folder.iterdir() if (m := _ROWS.match(p.name))}

    def report(self, shard: int) -> dict[str, Any]:
        """:func:`shard_report` of a completed shard, read back from its timing record."""
        return shard_report(shard, json.loads((self.out / "timing" / f"shard-{shard:06d}.json").read_text()))

    def write_rows(self, shard: int, table: Any, timing: dict[str, Any]) -> None:
        """Complete ``shard``: its timing, then its rows (atomically; the rows file marks the shard done)."""
        pa = require("pyarrow", "run")
        pq = require("pyarrow.parquet", "run")
        write_atomic(self.out / "timing" / f"shard-{shard:06d}.json", json.dumps(timing).encode())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_atomic(self.rows_path(shard), sink.getvalue().to_pybytes())
