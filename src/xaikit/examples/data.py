"""Data sets as a stream of ``(x, y)`` batches, and their samples by index.

A data set is one of

- a tensor ``x`` ``(N, ...)`` (no labels);
- a tuple/list ``(x, y, ...)`` of tensors with the same leading dimension, or an object with ``.x`` and ``.y``
  (e.g. :class:`xaikit.zoo.ShapesData`);
- a ``torch.utils.data.DataLoader`` or any iterable of batches ``x`` or ``(x, y, ...)``: streamed, never held
  in memory as a whole; samples are read back by index through ``loader.dataset`` when it is a map-style
  data set;
- a map-style ``torch.utils.data.Dataset`` (items ``x`` or ``(x, y, ...)``): read in batches.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..batching import batch_size_for, check_batch_size

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


def _split(item: Any, where: str) -> Batch:
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, dict):
        raise TypeError(f"{where}: dict batches are not supported; yield x or (x, y) tensors")
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        y = item[1] if len(item) > 1 and isinstance(item[1], torch.Tensor) else None
        return item[0], y
    if hasattr(item, "x") and isinstance(getattr(item, "x"), torch.Tensor):
        y = getattr(item, "y", None)
        return item.x, y if isinstance(y, torch.Tensor) else None
    raise TypeError(f"{where} must be a tensor x, a tuple (x, y, ...) of tensors or an object with .x and .y, "
                    f"got {type(item).__name__}")


class DataSource:
    """Uniform access to a data set: :meth:`batches` streams ``(x, y)``, :meth:`samples` reads by index."""

    def __init__(self, data: Any, batch_size: int | str = 256, name: str = "data") -> None:
        self.name = name
        check_batch_size(batch_size)
        self.batch_size = batch_size
        self.tensors: Batch | None = None
        self.dataset: Dataset | None = None
        self.loader = None
        if isinstance(data, DataLoader):
            self.loader = data
            dataset = getattr(data, "dataset", None)
            self.dataset = dataset if dataset is not None and hasattr(dataset, "__getitem__") else None
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.dataset = data
            first = _split(data[0], f"an item of {name}")[0] if batch_size == "auto" and len(data) else None
            self.batch_size = batch_size_for(batch_size, first)
            self.loader = DataLoader(data, batch_size=self.batch_size, shuffle=False)
        elif isinstance(data, torch.Tensor) or isinstance(data, (tuple, list)) or hasattr(data, "x"):
            x, y = _split(data, name)
            if y is not None and (y.ndim == 0 or y.shape[0] != x.shape[0]):
                raise ValueError(f"{name}: labels have shape {tuple(y.shape)} for {x.shape[0]} samples")
            self.tensors = (x, y)
            self.batch_size = batch_size_for(batch_size, x[0] if len(x) else None)
        elif hasattr(data, "__iter__"):
            self.loader = data
        else:
            raise TypeError(f"{name} must be a tensor, a tuple (x, y), a Dataset, a DataLoader or an iterable of "
                            f"batches, got {type(data).__name__}")
        if isinstance(self.loader, DataLoader):
            from torch.utils.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler

            inner = getattr(getattr(self.loader, "batch_sampler", None), "sampler", None)
            if isinstance(inner, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)):
                raise ValueError(f"{name}: the DataLoader must not shuffle (shuffle=False), or neighbour indices "
                                 "would not refer to the data set's order")

    def __len__(self) -> int:
        if self.tensors is not None:
            return self.tensors[0].shape[0]
        if self.dataset is not None and hasattr(self.dataset, "__len__"):
            return len(self.dataset)
        raise TypeError(f"{self.name} has no known length")

    def batches(self) -> Iterator[Batch]:
        """``(x, y)`` batches in the data set's order (``y`` is ``None`` without labels)."""
        if self.tensors is not None:
            x, y = self.tensors
            for start in range(0, x.shape[0], self.batch_size):
                stop = start + self.batch_size
                yield x[start:stop], None if y is None else y[start:stop]
            return
        for item in self.loader:
            yield _split(item, f"a batch of {self.name}")

    def samples(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs of the samples ``index`` (any shape of ints), stacked as ``(*index.shape, ...)``."""
        flat = index.reshape(-1).cpu()
        if self.tensors is not None:
            x = self.tensors[0]
            out = x[flat.to(x.device)]
        elif self.dataset is not None:
            out = torch.stack([_split(self.dataset[int(i)], f"an item of {self.name}")[0] for i in flat])
        else:
            raise TypeError(f"{self.name} is a stream without random access; pass a tensor, a Dataset or a "
                            "DataLoader over a map-style Dataset to read neighbours back")
        return out.reshape(*index.shape, *out.shape[1:])

    @property
    def one_shot(self) -> bool:
        """Whether the data is an iterator that can be read only once (a generator)."""
        return self.tensors is None and self.loader is not None and iter(self.loader) is self.loader

    def fingerprint(self) -> str:
        """A short hash of the first batch and the length (when known): identifies the data of a cache."""
        if self.one_shot:
            raise ValueError(f"{self.name} is an iterator that can be read only once; a cache needs to read its "
                             "first batch again: pass a DataLoader, a Dataset or tensors")
        digest = hashlib.sha1()
        for x, y in self.batches():
            digest.update(str((tuple(x.shape), str(x.dtype))).encode())
            digest.update(x.detach().cpu().contiguous().numpy().tobytes())
            if y is not None:
                digest.update(y.detach().cpu().contiguous().numpy().tobytes())
            break
        try:
            digest.update(str(len(self)).encode())
        except TypeError:
            pass
        return digest.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
