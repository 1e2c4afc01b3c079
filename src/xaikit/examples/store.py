"""A resumable on-disk store of projected training gradients (TRAK's features), one zarr array per shard.

A training set is featurised shard by shard (``shard_size`` consecutive samples); each finished shard is written
as ``features/shard-NNNNNN`` (``(M, S, k)`` float32: the ``M`` ensemble members' features) and
``weights/shard-NNNNNN`` (``(M, S)``: the Newton weights), then marked done by an empty file written last.
A run killed midway resumes on the same path: finished shards are read back, not recomputed. The store's
``manifest.json`` keys it on the model's weights, the attributed parameters, the projection and the output
function (:mod:`xaikit.fingerprint`); a store of other settings is refused, never silently mixed.

Reading is by row ranges or indices, shard by shard: scoring a block of training samples holds that block only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["FeatureStore", "StoredFeatures"]


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as err:
        raise ImportError(f"TRAK(store=...) writes zarr arrays ({err}); install it with `pip install xaikit[run]` "
                          "or fit without store= (features in memory)") from None
    return zarr


class FeatureStore:
    """The shards of one featurisation under ``path`` (see the module's text)."""

    def __init__(self, path: str | Path, key: dict[str, Any], shard_size: int) -> None:
        self.path = Path(path)
        self.shard_size = shard_size
        manifest = self.path / "manifest.json"
        wanted = {**key, "shard_size": shard_size, "version": 1}
        self.key = wanted
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != wanted:
                diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
                raise ValueError(f"the store {str(self.path)!r} holds features of other settings ({', '.join(diff)} "
                                 "differ); use another path, or delete it to start again")
        else:
            (self.path / "done").mkdir(parents=True, exist_ok=True)
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(wanted, indent=1))
            os.replace(tmp, manifest)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def done(self) -> set[int]:
        """Shards whose features are completely written."""
        return {int(p.name[6:]) for p in (self.path / "done").iterdir() if p.name.startswith("shard-")}

    def write(self, shard: int, features: torch.Tensor, weights: torch.Tensor) -> None:
        """Write one shard (``(M, S, k)`` features, ``(M, S)`` weights), then mark it done."""
        zarr = _zarr()
        for name, value in (("features", features), ("weights", weights)):
            array = value.detach().float().cpu().numpy()
            z = zarr.open_array(str(self.path / name / f"shard-{shard:06d}"), mode="w", shape=array.shape,
                                dtype="float32", chunks=array.shape, zarr_format=3)
            z[...] = array
        (self.path / "done" / f"shard-{shard:06d}").touch()

    def read(self, shard: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (M, S, k), weights (M, S))`` of a finished shard (the last one read is cached)."""
        if shard not in self._cache:
            zarr = _zarr()
            self._cache = {shard: tuple(torch.from_numpy(np.asarray(zarr.open_array(
                str(self.path / name / f"shard-{shard:06d}"), mode="r", zarr_format=3)[...]))
                for name in ("features", "weights"))}
        return self._cache[shard]


class StoredFeatures:
    """Member ``m``'s features ``(N, k)`` in a :class:`FeatureStore`, read by rows as a tensor would be."""

    def __init__(self, store: FeatureStore, member: int, total: int, k: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.store, self.member, self.total, self.k = store, member, total, k
        self.dtype, self.device = dtype, device
        self.shape = torch.Size((total, k))

    def __getitem__(self, rows: slice | torch.Tensor) -> torch.Tensor:
        size = self.store.shard_size
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.total)
            if step != 1:
                raise ValueError("stored features are read by contiguous row ranges or index tensors")
            parts = [self.store.read(s)[0][self.member, max(start - s * size, 0):stop - s * size]
                     for s in range(start // size, (stop - 1) // size + 1)] if stop > start else []
            out = torch.cat(parts) if parts else torch.zeros(0, self.k)
        else:
            rows = torch.as_tensor(rows).long().cpu()
            out = torch.zeros(rows.numel(), self.k)
            for s in rows.div(size, rounding_mode="floor").unique().tolist():
                hit = (rows // size) == s
                out[hit] = self.store.read(s)[0][self.member, rows[hit] - s * size]
        return out.to(self.device, self.dtype)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, features)`` shard by shard."""
        for s in range(0, self.total, self.store.shard_size):
            yield s, self[s:s + self.store.shard_size]
