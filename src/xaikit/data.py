"""One data adapter for every room that reads a data set: batches of ``(x, y, mask)`` (foundation module).

``Data(data, batch_size=256, name="data")`` accepts

- a tensor (or array) ``x`` ``(N, ...)``: no labels;
- a tuple/list ``(x, y)`` or ``(x, y, mask)``: tensors or arrays with the same leading dimension; ``y`` may be
  ``None`` (no labels) or an int (the same label for every sample); also an object with ``.x``, ``.y`` and
  optionally ``.mask`` (e.g. :class:`xaikit.zoo.ShapesData`);
- a map-style ``torch.utils.data.Dataset``: items ``x``, ``(x, y)``, ``(x, y, mask)`` or dicts (``x``/``image``/
  ``input``/``pixel_values``, ``y``/``label``/``target``, ``mask``), read in order ``batch_size`` at a time;
- a ``DataLoader``, an ``IterableDataset`` or any iterable of batches in those forms: streamed in its own
  batches, never held whole;
- an image folder (a path): the image files sorted by name, resized to ``size`` × ``size`` and scaled to
  ``[low, high]`` (``labels_from_folders=True``: one subfolder per class, labels by sorted subfolder name);
- a table: a ``.csv`` (or ``.parquet``, which needs pandas) path or a ``pandas.DataFrame``, its numeric columns
  as features (``label_column``, ``feature_columns`` choose), or a 2-D array.

:meth:`Data.batches` streams :class:`Batch` ``(x, y, mask)`` (``y``/``mask`` ``None`` where the data has none),
:meth:`Data.tensors` gathers everything into one :class:`Batch`, :meth:`Data.samples` reads inputs back by index
(where the form has random access). Empty data and unknown forms raise errors that name the argument.
Only torch, numpy and the foundation are imported; images are read with scikit-image when a folder is given.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .batching import batch_size_for, check_batch_size
from .fingerprint import fingerprint

__all__ = ["Batch", "Data", "IMAGE_SUFFIXES", "TABLE_SUFFIXES", "image_files", "image_tensor", "read_image",
           "read_table"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
#: samples of a folder or a Dataset read besides the first batch to identify it (:meth:`Data.fingerprint`)
SPOT_CHECKS = 16
X_KEYS = ("x", "image", "input", "pixel_values", "inputs")
Y_KEYS = ("y", "label", "labels", "target")
FORMS = ("a tensor x, a tuple (x, y) or (x, y, mask), a Dataset, a DataLoader or iterable of batches, an image "
         "folder, a .csv/.parquet table or a 2-D array")


class Batch(NamedTuple):
    """A batch: inputs ``x`` ``(B, ...)``, labels ``y`` ``(B,)`` or ``None``, masks ``(B, ...)`` or ``None``."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    mask: torch.Tensor | None = None


# -- readers (also used by xaikit.run's sources) -------------------------------------------------------------
def image_tensor(image: np.ndarray, size: int, low: float, high: float) -> torch.Tensor:
    """An ``(H, W[, C])`` image -> ``(3, size, size)`` float tensor in ``[low, high]`` (resized whole)."""
    from skimage import color, transform, util

    image = util.img_as_float(image)
    if image.ndim == 2:
        image = color.gray2rgb(image)
    elif image.shape[-1] == 4:
        image = color.rgba2rgb(image)
    image = transform.resize(image, (size, size), anti_aliasing=True)
    return torch.tensor(image, dtype=torch.float32).permute(2, 0, 1) * (high - low) + low


def image_files(folder: str | Path, labels_from_folders: bool = False,
                name: str = "data") -> tuple[list[str], list[str]]:
    """The image files of ``folder`` (relative, sorted) and the class names (subfolders, sorted) when
    ``labels_from_folders``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: image folder {str(folder)!r} not found")
    pattern = "*/*" if labels_from_folders else "*"
    files = sorted(str(p.relative_to(folder)) for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        where = ("in its subfolders (labels_from_folders=True)" if labels_from_folders else
                 "(subfolders are not read; labels_from_folders=True reads one subfolder per class)")
        raise ValueError(f"{name} is empty: folder {str(folder)!r} holds no images {where}; suffixes: "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}")
    classes = sorted({Path(f).parts[0] for f in files}) if labels_from_folders else []
    return files, classes


def read_image(path: str | Path, size: int = 224, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The image file ``path`` as a ``(3, size, size)`` tensor in ``[low, high]``."""
    from skimage import io

    return image_tensor(io.imread(str(path)), size, low, high)


def read_table(path: str | Path, label_column: str | None = None, feature_columns: Sequence[str] | None = None,
               name: str = "data") -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """The rows of a ``.csv`` or ``.parquet`` table: ``(x (N, D) float32, y (N,) or None, feature columns)``.

    The features are the numeric columns (all but ``label_column``, or ``feature_columns``). CSV is read
    without pandas; Parquet needs pandas and pyarrow (the extra ``xaikit[run]``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: table {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{name}: table {str(path)!r}: give a .csv or .parquet file")
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
        if not lines:
            raise ValueError(f"{name} is empty: table {str(path)!r} has no header")
        header, body = lines[0], [line for line in lines[1:] if line]
        columns = {c: [line[j] if j < len(line) else "" for line in body] for j, c in enumerate(header)}
    else:
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(f"{name}: reading {str(path)!r} needs pandas and pyarrow (pip install 'xaikit[run]'); "
                              "or give a .csv") from err
        frame = pd.read_parquet(path)
        columns = {str(c): frame[c].tolist() for c in frame.columns}
        body = range(len(frame))
    return _table(columns, len(body), label_column, feature_columns, repr(str(path)), name)


def _table(columns: dict[str, list], rows: int, label_column: str | None, feature_columns: Sequence[str] | None,
           where: str, name: str) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """``(x, y, feature columns)`` of a table given as ``{column: values}`` (``where`` names it in errors)."""
    if label_column is not None and label_column not in columns:
        raise ValueError(f"label_column {label_column!r} is not a column of {where}; "
                         f"columns: {', '.join(columns)}")
    chosen = list(feature_columns) if feature_columns is not None else [c for c in columns if c != label_column]
    missing = [c for c in chosen if c not in columns]
    if missing:
        raise ValueError(f"feature_columns {missing} are not columns of {where}; columns: {', '.join(columns)}")
    numeric, bad = [], []
    for c in chosen:
        try:
            numeric.append(_floats(columns[c]))
        except (TypeError, ValueError):
            bad.append(c)
    if bad:
        raise ValueError(f"columns {bad} of {where} are not numeric; pass feature_columns= to choose")
    if rows == 0:
        raise ValueError(f"{name} is empty: table {where} has no rows")
    x = torch.from_numpy(np.stack(numeric, 1)) if numeric else torch.zeros(rows, 0)
    y = None
    if label_column is not None:
        try:
            y = torch.as_tensor([int(float(v)) for v in columns[label_column]], dtype=torch.long)
        except (TypeError, ValueError):
            raise ValueError(f"label_column {label_column!r} of {where} must hold integer classes") from None
    return x, y, chosen


def _floats(values: list) -> np.ndarray:
    """A column as float32 (empty cells and None: NaN); raises ``ValueError`` for text."""
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):  # empty cells
        return np.asarray([np.nan if v in ("", None) else float(v) for v in values], np.float32)


# -- splitting items and batches -----------------------------------------------------------------------------
def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and value and
                                         not isinstance(value[0], (torch.Tensor, np.ndarray, tuple, list, dict))):
        return torch.as_tensor(np.asarray(value))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (torch.Tensor, np.ndarray)):
        return torch.stack([_tensor(v, what) for v in value])
    raise TypeError(f"{what} must be a tensor or an array, got {type(value).__name__}")


def _labels(y: Any, n: int, what: str) -> torch.Tensor | None:
    if y is None:
        return None
    if isinstance(y, bool):
        raise TypeError(f"{what} must be labels (a tensor of N ints, an int or None), got a bool")
    if isinstance(y, (int, np.integer)):
        return torch.full((n,), int(y), dtype=torch.long)
    y = _tensor(y, what)
    if y.ndim == 0:
        return y.reshape(1).expand(n).clone()
    if y.shape[0] != n:
        raise ValueError(f"{what} has {y.shape[0]} entries for {n} samples; give one label per sample")
    return y


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _split(item: Any, what: str) -> Batch:
    """An item or a batch in any accepted form -> :class:`Batch` (tensors not stacked or checked further)."""
    if _is_array(item):
        return Batch(_tensor(item, what))
    if isinstance(item, dict):
        key = next((k for k in X_KEYS if k in item), None)
        if key is None:
            raise TypeError(f"{what} is a dict without an input key ({', '.join(X_KEYS)}); keys: "
                            f"{', '.join(map(str, item))}")
        y = next((item[k] for k in Y_KEYS if k in item), None)
        return Batch(item[key], y, item.get("mask"))
    if hasattr(item, "x") and _is_array(getattr(item, "x")):
        return Batch(item.x, getattr(item, "y", None), getattr(item, "mask", None))
    if isinstance(item, (tuple, list)):
        if 1 <= len(item) <= 3:
            return Batch(*item)
        raise TypeError(f"{what} must be x, (x, y) or (x, y, mask), got a {type(item).__name__} of {len(item)}")
    return Batch(item)  # an input of another type (e.g. a PIL image): converted, or refused, by the reader


def _checked(batch: Batch, what: str) -> Batch:
    """Tensors, one label and one mask per sample."""
    x = _tensor(batch.x, f"{what} inputs")
    if x.ndim == 0:
        raise ValueError(f"{what}: x must have a leading sample dimension (N, ...), got a scalar")
    y = _labels(batch.y, x.shape[0], f"{what} labels (y)")
    mask = None if batch.mask is None else _tensor(batch.mask, f"{what} mask")
    if mask is not None and mask.shape[0] != x.shape[0]:
        raise ValueError(f"{what} mask has {mask.shape[0]} entries for {x.shape[0]} samples")
    return Batch(x, y, mask)


def _collate(items: list[Batch], what: str) -> Batch:
    x = torch.stack([_tensor(i.x, f"{what} inputs") for i in items])
    ys = [i.y for i in items]
    if any(v is None for v in ys) and not all(v is None for v in ys):
        raise ValueError(f"{what}: some items have a label and others not")
    y = None if ys[0] is None else torch.as_tensor([int(v) for v in ys], dtype=torch.long)
    masks = [i.mask for i in items]
    mask = None if any(m is None for m in masks) else torch.stack([_tensor(m, f"{what} mask") for m in masks])
    return Batch(x, y, mask)


class Data:
    """A data set in any accepted form (see the module docstring) as batches of ``(x, y, mask)``.

    Parameters
    ----------
    data : tensor, array, tuple, Dataset, DataLoader, iterable of batches, folder or table path
    batch_size : "auto", int or None
        Samples per batch for data held in memory, a Dataset, a folder or a table: an int, ``"auto"`` (as many
        samples as the memory budget allows for one sample's size, :func:`xaikit.batching.batch_size_for`) or
        ``None`` (data held in memory as one batch, the others 256 at a time). A DataLoader or another iterable
        keeps its own batches.
    name : str
        The argument's name in error messages (``"data"``, ``"train"`` ...).
    ordered : bool
        Refuse a shuffling DataLoader (for results that refer to samples by position).
    size, low, high, labels_from_folders
        Image folders: the side images are resized to, the value range, labels from subfolders.
    label_column, feature_columns
        Tables: the label column, the feature columns (default: every other numeric column).
    """

    def __init__(self, data: Any, batch_size: int | str | None = 256, name: str = "data", *, ordered: bool = False,
                 size: int = 224, low: float = 0.0, high: float = 1.0, labels_from_folders: bool = False,
                 label_column: str | None = None, feature_columns: Sequence[str] | None = None) -> None:
        if batch_size is not None:
            check_batch_size(batch_size)
        self.name, self.batch_size = name, batch_size
        self.tensors_: Batch | None = None  # data held in memory
        self.dataset: Any = None  # random access by index (map-style Dataset, folder)
        self.loader: Any = None  # a stream of batches (DataLoader, iterable)
        self.files: list[str] = []
        self.folder: Path | None = None
        options = {"size": (size, 224), "low": (low, 0.0), "high": (high, 1.0),
                   "labels_from_folders": (labels_from_folders, False), "label_column": (label_column, None),
                   "feature_columns": (feature_columns, None)}
        given = {k for k, (value, default) in options.items() if value is not default and value != default}
        folder_keys, table_keys = {"size", "low", "high", "labels_from_folders"}, {"label_column", "feature_columns"}
        if isinstance(data, (str, Path)):
            path = Path(data)
            if path.is_dir():
                self.files, self.classes = image_files(path, labels_from_folders, name)
                self.folder, self.image = path, (size, low, high)
                given -= folder_keys
            elif path.suffix.lower() in TABLE_SUFFIXES:
                x, y, self.columns = read_table(path, label_column, feature_columns, name)
                self.tensors_ = Batch(x, y)
                given -= table_keys
            elif not path.exists():
                raise FileNotFoundError(f"{name} {str(path)!r} not found; give {FORMS}")
            else:
                raise ValueError(f"{name} {str(path)!r}: give a folder of images or a .csv/.parquet table")
        elif type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns") and hasattr(data, "to_numpy"):
            columns = {str(c): data[c].tolist() for c in data.columns}
            x, y, self.columns = _table(columns, len(data), label_column, feature_columns, "the DataFrame", name)
            self.tensors_ = Batch(x, y)
            given -= table_keys
        elif isinstance(data, DataLoader):
            self.loader = data
            dataset = getattr(data, "dataset", None)
            if dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__") \
                    and hasattr(dataset, "__len__"):
                self.dataset = dataset
            if ordered:
                from torch.utils.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler

                inner = getattr(getattr(data, "batch_sampler", None), "sampler", None)
                if isinstance(inner, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)):
                    raise ValueError(f"{name}: the DataLoader must not shuffle (shuffle=False): the results refer to "
                                     "samples by their position in the data set")
        elif isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
            self.dataset = data
        elif _is_array(data) or (isinstance(data, (tuple, list)) and data and _is_array(data[0])) or \
                (hasattr(data, "x") and _is_array(getattr(data, "x"))):
            if isinstance(data, (tuple, list)) and len(data) > 3:
                raise TypeError(f"{name} must be (x, y) or (x, y, mask), got a {type(data).__name__} of {len(data)}"
                                " items; a list of batches goes in a DataLoader or a generator")
            x = data if _is_array(data) else None
            if isinstance(data, np.ndarray):
                x = torch.from_numpy(data.astype(np.float32) if data.dtype == np.float64 else data)
            self.tensors_ = _checked(Batch(x) if x is not None else _split(data, name), name)
        elif hasattr(data, "__iter__") and not isinstance(data, (dict, bytes)):
            self.loader = data
        else:
            raise TypeError(f"{name} must be {FORMS}; got {type(data).__name__}")
        if given:
            raise TypeError(f"{name}: option(s) {', '.join(sorted(given))} do not apply to a "
                            f"{type(data).__name__}: size, low, high, labels_from_folders are for image folders, "
                            "label_column, feature_columns for tables")
        if self.tensors_ is not None and self.tensors_.x.shape[0] == 0:
            raise ValueError(f"{name} is empty: it holds no samples (x has shape {tuple(self.tensors_.x.shape)})")
        if self.dataset is not None and self.loader is None and len(self.dataset) == 0:
            raise ValueError(f"{name} is empty: the Dataset holds no samples")

    # -- reading -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.tensors_ is not None:
            return self.tensors_.x.shape[0]
        if self.folder is not None:
            return len(self.files)
        if self.dataset is not None:
            return len(self.dataset)
        raise TypeError(f"{self.name} is a stream of batches with no known length")

    @property
    def has_random_access(self) -> bool:
        return self.tensors_ is not None or self.folder is not None or self.dataset is not None

    def _chunk(self) -> int:
        """Samples per batch; ``"auto"`` sized by the first sample (:func:`~xaikit.batching.batch_size_for`)."""
        if self.batch_size == "auto":
            first = self.tensors_.x[0] if self.tensors_ is not None else \
                self._items([0]).x[0] if self.has_random_access and len(self) else None
            self.batch_size = batch_size_for("auto", first)
        return self.batch_size or 256

    def _items(self, index: Sequence[int]) -> Batch:
        """The samples at ``index`` of a folder or a map-style Dataset, stacked."""
        if self.folder is not None:
            size, low, high = self.image
            x = torch.stack([read_image(self.folder / self.files[i], size, low, high) for i in index])
            y = (torch.as_tensor([self.classes.index(Path(self.files[i]).parts[0]) for i in index])
                 if self.classes else None)
            return Batch(x, y)
        return _collate([_split(self.dataset[int(i)], f"item {int(i)} of {self.name}") for i in index], self.name)

    def batches(self) -> Iterator[Batch]:
        """:class:`Batch` ``(x, y, mask)`` in the data set's order; raises ``ValueError`` if there is none."""
        seen = False
        if self.tensors_ is not None:
            x, y, mask = self.tensors_
            step = x.shape[0] if self.batch_size is None else self._chunk()
            for start in range(0, x.shape[0], step):
                part = slice(start, start + step)
                yield Batch(x[part], None if y is None else y[part], None if mask is None else mask[part])
            return
        if self.loader is None:  # a folder or a map-style Dataset, read by index
            n, step = len(self), self._chunk()
            for start in range(0, n, step):
                yield _checked(self._items(range(start, min(n, start + step))), self.name)
            return
        if isinstance(self.loader, IterableDataset) and not isinstance(self.loader, DataLoader):
            items: list[Batch] = []
            for item in self.loader:
                items.append(_split(item, f"an item of {self.name}"))
                if len(items) == self._chunk():
                    seen = True
                    yield _checked(_collate(items, self.name), self.name)
                    items = []
            if items:
                seen = True
                yield _checked(_collate(items, self.name), self.name)
        else:
            for item in self.loader:
                seen = True
                yield _checked(_split(item, f"a batch of {self.name}"), f"a batch of {self.name}")
        if not seen:
            again = " (an iterator is read only once: pass a DataLoader or a Dataset to read it again)" \
                if self.one_shot else ""
            raise ValueError(f"{self.name} is empty: it gave no batch, no samples{again}")

    def tensors(self) -> Batch:
        """Every sample at once: ``x`` ``(N, ...)``, ``y`` ``(N,)`` or ``None``, ``mask`` or ``None``."""
        if self.tensors_ is not None:
            return self.tensors_
        parts = list(self.batches())
        ys, masks = [p.y for p in parts], [p.mask for p in parts]
        if any(v is None for v in ys) and not all(v is None for v in ys):
            raise ValueError(f"{self.name}: some batches have labels and others not")
        return Batch(torch.cat([p.x for p in parts]), None if ys[0] is None else torch.cat(ys),
                     None if any(m is None for m in masks) else torch.cat(masks))

    def samples(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs of the samples ``index`` (any shape of ints), stacked as ``(*index.shape, ...)``."""
        flat = torch.as_tensor(index).reshape(-1).cpu()
        if self.tensors_ is not None:
            x = self.tensors_.x
            out = x[flat.to(x.device)]
        elif self.folder is not None or self.dataset is not None:
            out = self._items(flat.tolist()).x
        else:
            raise TypeError(f"{self.name} is a stream without random access; pass a tensor, a Dataset, a "
                            "DataLoader over a map-style Dataset or a folder to read samples back")
        return out.reshape(*torch.as_tensor(index).shape, *out.shape[1:])

    @property
    def one_shot(self) -> bool:
        """Whether the data is an iterator that can be read only once (a generator)."""
        return self.tensors_ is None and self.loader is not None and iter(self.loader) is self.loader

    def fingerprint(self) -> str:
        """What identifies the data of a cache (:func:`xaikit.fingerprint.fingerprint`): every value of data held
        in memory; of a folder or a Dataset its length, the file names and the first batch and up to
        ``SPOT_CHECKS`` samples spread over it (reading them all again would cost what the cache saves); of a
        stream its first batch and its length where known."""
        if self.one_shot:
            raise ValueError(f"{self.name} is an iterator that can be read only once; a cache needs to read its "
                             "first batch again: pass a DataLoader, a Dataset or tensors")
        if self.tensors_ is not None:
            return fingerprint(tuple(self.tensors_))
        first = next(iter(self.batches()))
        try:
            n = len(self)
        except TypeError:
            n = None
        spots = [] if n is None or not self.has_random_access or n <= first.x.shape[0] else \
            sorted({int(i) for i in np.linspace(first.x.shape[0], n - 1, SPOT_CHECKS)})
        return fingerprint(tuple(first), n, self.files, spots, tuple(self._items(spots)) if spots else None)
