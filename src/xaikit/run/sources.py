"""Data sources of a run: random access to samples by index, picklable, so any worker can read any shard.

:func:`as_source` accepts a torch ``Dataset`` or ``DataLoader`` (map-style), a folder of images, a CSV or
Parquet table, a Hugging Face ``datasets.Dataset``, a :class:`~xaikit.zoo.ShapesData` or a tensor. Each
source gives :class:`Sample` objects (input, optional label and ground-truth mask, an id) and a JSON
:meth:`Source.describe` that goes into the run's identity. Files are read lazily, in the worker that needs
them; a sample that cannot be read raises, and the worker records the error for that sample only.

The readers (image files, tables, the item forms of a dataset) are those of the one data adapter,
:mod:`xaikit.data`; a source adds what a run needs on top: random access by index, picklable, an identity.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import IMAGE_SUFFIXES, TABLE_SUFFIXES, X_KEYS, Y_KEYS, image_files, image_tensor, read_image, read_table
from ..data import _split as split_item

__all__ = ["Sample", "Source", "TensorSource", "DatasetSource", "ImageFolderSource", "TableSource", "HFSource",
           "as_source", "image_tensor", "IMAGE_SUFFIXES"]


@dataclass
class Sample:
    """One sample: input ``x`` (no batch dimension), label ``y`` (or ``None``), mask (or ``None``), an id."""

    x: torch.Tensor
    y: int | None = None
    mask: torch.Tensor | None = None
    id: str = ""


class Source:
    """Random access to the samples of a data set."""

    has_labels: bool = False
    has_masks: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, index: int) -> Sample:
        """The sample at ``index`` (may raise for a sample that cannot be read)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON description that identifies the data (kind, location, length)."""
        raise NotImplementedError


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
        return torch.as_tensor(np.asarray(value))
    raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}")


def _label(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.item()
    return int(value)


class TensorSource(Source):
    """Samples from tensors: ``x`` (N, ...), labels ``y`` (N,) and masks (N, ...) optional."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 name: str = "tensor") -> None:
        x = _as_tensor(x, "x")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"x must have a non-empty leading sample dimension, got shape {tuple(x.shape)}")
        for other, what in ((y, "y"), (mask, "mask")):
            if other is not None and len(other) != x.shape[0]:
                raise ValueError(f"{what} has {len(other)} entries for {x.shape[0]} samples")
        self.x, self.y, self.mask, self.name = x, y, mask, name
        self.has_labels, self.has_masks = y is not None, mask is not None

    def __len__(self) -> int:
        return self.x.shape[0]

    def sample(self, index: int) -> Sample:
        return Sample(self.x[index], _label(self.y[index]) if self.y is not None else None,
                      self.mask[index] if self.mask is not None else None, str(index))

    def describe(self) -> dict[str, Any]:
        # identity by content: a different tensor of the same shape is a different data set
        import hashlib

        digest = hashlib.sha256()
        for tensor in (self.x, self.y, self.mask):
            if tensor is not None:
                digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
        return {"kind": "tensor", "name": self.name, "length": len(self), "shape": list(self.x.shape[1:]),
                "sha256": digest.hexdigest()[:16]}


class DatasetSource(Source):
    """A map-style torch ``Dataset`` (or the dataset of a ``DataLoader``).

    Items may be a tensor, a tuple ``(x, y)`` / ``(x, y, mask)`` or a dict with ``x``/``image``/``input``/
    ``pixel_values``, ``y``/``label``/``target`` and ``mask``.
    """

    X_KEYS = X_KEYS
    Y_KEYS = Y_KEYS

    def __init__(self, dataset: Any, name: str | None = None) -> None:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"dataset {type(dataset).__name__} is not map-style (needs len() and indexing): "
                            "sharding and resume need random access; wrap it in a torch Dataset")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.name = name or f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        first = self._split(dataset[0])
        self.has_labels, self.has_masks = first[1] is not None, first[2] is not None

    def _split(self, item: Any) -> tuple[Any, Any, Any]:
        """``(x, y, mask)`` of an item, by the adapter's rules (:mod:`xaikit.data`)."""
        return tuple(split_item(item, "a dataset item"))

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int) -> Sample:
        x, y, mask = self._split(self.dataset[index])
        x = _as_tensor(x, "dataset input")
        return Sample(x, _label(y), None if mask is None else _as_tensor(mask, "mask"), str(index))

    def describe(self) -> dict[str, Any]:
        return {"kind": "dataset", "name": self.name, "length": len(self)}


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


class ImageFolderSource(Source):
    """The image files of a folder (sorted by name; subfolders name the labels when ``labels_from_folders``),
    resized to ``size`` and scaled to ``[low, high]``."""

    def __init__(self, folder: str | Path, size: int = 224, low: float = 0.0, high: float = 1.0,
                 labels_from_folders: bool = False) -> None:
        folder = Path(folder)
        self.files, self.classes = image_files(folder, labels_from_folders)
        self.folder, self.size, self.low, self.high = folder, size, low, high
        self.has_labels = labels_from_folders

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, index: int) -> Sample:
        name = self.files[index]
        label = self.classes.index(Path(name).parts[0]) if self.classes else None
        return Sample(read_image(self.folder / name, self.size, self.low, self.high), label, None, name)

    def describe(self) -> dict[str, Any]:
        return {"kind": "image-folder", "path": str(self.folder.resolve()), "length": len(self),
                "size": self.size, "range": [self.low, self.high], "classes": self.classes}


class TableSource(Source):
    """The rows of a CSV or Parquet table: numeric feature columns as a vector, an optional label column
    (read by :func:`xaikit.data.read_table`; each worker reads the file itself)."""

    def __init__(self, path: str | Path, label_column: str | None = None,
                 feature_columns: Sequence[str] | None = None) -> None:
        self.path, self.label_column = Path(path), label_column
        self.feature_columns = None if feature_columns is None else list(feature_columns)
        self._x, self._y, self.columns = read_table(self.path, label_column, self.feature_columns)
        self.length = self._x.shape[0]
        self.has_labels = label_column is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_x"] = state["_y"] = None  # each worker reads the file itself
        return state

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        if self._x is None:
            self._x, self._y, _ = read_table(self.path, self.label_column, self.feature_columns)
        y = _label(self._y[index]) if self._y is not None else None
        return Sample(self._x[index], y, None, str(index))

    def describe(self) -> dict[str, Any]:
        return {"kind": "table", "path": str(self.path.resolve()), "length": len(self),
                "columns": self.columns, "label_column": self.label_column}


class HFSource(DatasetSource):
    """A Hugging Face ``datasets.Dataset``: PIL images are resized to ``size`` and scaled to ``[low, high]``."""

    def __init__(self, dataset: Any, size: int = 224, low: float = 0.0, high: float = 1.0) -> None:
        self.size, self.low, self.high = size, low, high
        super().__init__(dataset, name=f"huggingface:{getattr(dataset, '_fingerprint', '')}")

    def sample(self, index: int) -> Sample:
        x, y, mask = self._split(self.dataset[index])
        if _is_pil(x):
            x = image_tensor(np.asarray(x), self.size, self.low, self.high)
        else:
            x = _as_tensor(x, "dataset input").float()
        return Sample(x, _label(y), None if mask is None else _as_tensor(mask, "mask"), str(index))


def as_source(data: Any, **options: Any) -> Source:
    """Turn ``data`` into a :class:`Source`.

    Parameters
    ----------
    data : Source, Dataset, DataLoader, path, ShapesData, tensor or ``datasets.Dataset``
        A folder path gives an :class:`ImageFolderSource`, a ``.csv``/``.parquet`` path a :class:`TableSource`.
    **options
        Passed to the source: ``size``, ``low``, ``high`` for images, ``label_column``, ``feature_columns``
        for tables; unknown options raise ``TypeError``.
    """
    if isinstance(data, Source):
        _no_options(options, "a Source")
        return data
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return ImageFolderSource(path, **options)
        if path.suffix.lower() in TABLE_SUFFIXES:
            return TableSource(path, **options)
        if not path.exists():
            raise FileNotFoundError(f"data {str(path)!r} not found")
        raise ValueError(f"data {str(path)!r}: give a folder of images, a .csv or a .parquet file")
    if isinstance(data, torch.Tensor):
        return TensorSource(data, **options)
    if all(hasattr(data, k) for k in ("x", "y", "mask")) and isinstance(getattr(data, "x"), torch.Tensor):
        _no_options(options, "a ShapesData")
        return TensorSource(data.x, data.y, data.mask, name=type(data).__name__)
    if type(data).__module__.startswith("datasets.") and hasattr(data, "features"):
        return HFSource(data, **options)
    if isinstance(data, torch.utils.data.DataLoader):
        warnings.warn("xaikit.run reads the DataLoader's dataset by index (shards and resume need random access): "
                      "its sampler, order, batch size and collate_fn are not used", UserWarning, stacklevel=3)
        data = data.dataset
    if isinstance(data, torch.utils.data.IterableDataset):
        raise TypeError("an IterableDataset has no random access: sharding and resume need a map-style dataset")
    _no_options(options, "a dataset")
    return DatasetSource(data)


def _no_options(options: dict[str, Any], what: str) -> None:
    if options:
        raise TypeError(f"unknown option(s) {', '.join(sorted(options))} for {what}")
