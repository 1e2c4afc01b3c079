"""The columns of a table that a model reads: names, which are categorical, and their categories.

Rooms that explain tabular rows by changing or constraining named columns (anchors' predicates, counterfactuals'
constraints) read their data through :func:`read_columns` and refer to columns through :class:`Columns`, so that
an unknown column, an undeclared categorical column or a category that does not exist raises one error that
names the argument and the valid names.

A categorical column is held as its category codes ``0 … C−1`` (floats in ``x``); the model is called on these
codes. A DataFrame column of text (or pandas ``category`` dtype) must be declared in ``categorical=``: it is then
encoded with its sorted categories, which :meth:`Columns.label` gives back for readable output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .data import Data
from .errors import unknown_name


@dataclass
class Columns:
    """Names of the ``D`` columns, and the categories of the categorical ones.

    Attributes
    ----------
    names : list of str
    categories : dict column index -> list of category labels (code ``c`` is ``categories[j][c]``); for a
        numeric column declared categorical, the labels are its distinct values and the codes are the values.
    coded : set of column indices whose values are codes ``0 … C−1`` of text categories
    """

    names: list[str]
    categories: dict[int, list[Any]] = field(default_factory=dict)
    coded: set[int] = field(default_factory=set)

    @property
    def d(self) -> int:
        return len(self.names)

    def index(self, column: Any, argument: str) -> int:
        """The index of ``column`` (a name or an int); an unknown one raises a ``ValueError`` naming
        ``argument`` with the close names."""
        if isinstance(column, (int, np.integer)) and not isinstance(column, bool):
            if not 0 <= int(column) < self.d:
                raise ValueError(f"{argument}: column index {int(column)} is out of range for {self.d} columns")
            return int(column)
        if column not in self.names:
            raise unknown_name(f"column in {argument}", column, self.names)
        return self.names.index(column)

    def indices(self, columns: Any, argument: str) -> list[int]:
        """Indices of a list of names/ints (a single name or int is a list of one)."""
        if columns is None:
            return []
        if isinstance(columns, (str, int, np.integer)):
            columns = [columns]
        return [self.index(c, argument) for c in columns]

    def is_categorical(self, j: int) -> bool:
        return j in self.categories

    def values(self, j: int) -> torch.Tensor:
        """The values column ``j`` may take (its codes), float64."""
        if j in self.coded:
            return torch.arange(len(self.categories[j]), dtype=torch.float64)
        return torch.as_tensor([float(v) for v in self.categories[j]], dtype=torch.float64)

    def label(self, j: int, value: float) -> str:
        """The readable value of column ``j``: a category's label, or the number to 4 significant digits."""
        if j in self.coded:
            code = int(round(value))
            return str(self.categories[j][code]) if 0 <= code < len(self.categories[j]) else f"{value:g}"
        return f"{value:.4g}"


def _numeric(values: Any) -> bool:
    return np.asarray(values).dtype.kind in "biuf"


def read_columns(data: Any, feature_names: Sequence[str] | None = None, categorical: Any = None,
                 name: str = "data") -> tuple[torch.Tensor, Columns]:
    """The rows of ``data`` as ``(x (N, D) float64, Columns)``.

    ``data`` is a DataFrame (text or ``category`` columns must be named in ``categorical``) or anything
    :class:`xaikit.data.Data` reads (the label, if any, is dropped). ``categorical`` is a list of column names or
    indices, or a dict ``{column: categories}`` giving the allowed values (labels for text columns; numbers
    otherwise).
    """
    declared = categorical if isinstance(categorical, dict) else {c: None for c in (categorical or [])}
    if not isinstance(declared, dict):
        raise TypeError(f"categorical must be a list of column names or a dict {{column: categories}}, "
                        f"got {type(categorical).__name__}")
    coded: set[int] = set()
    given: dict[int, list[Any]] = {}
    if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        names = [str(c) for c in data.columns]
        if feature_names is not None and list(feature_names) != names:
            raise ValueError(f"feature_names {list(feature_names)} differ from the DataFrame's columns {names}; "
                             "leave feature_names out for a DataFrame")
        columns = Columns(names)
        keys = {columns.index(c, "categorical"): c for c in declared}
        cols = []
        for j, c in enumerate(data.columns):
            values = data[c]
            text = not _numeric(values.to_numpy()) or str(values.dtype) == "category"
            if text and j not in keys:
                raise ValueError(f"column {names[j]!r} holds categories (dtype {values.dtype}) but is not declared "
                                 f"in categorical=; pass categorical=[{names[j]!r}, ...] (its values are then "
                                 "encoded as codes 0 … C-1 in sorted order)")
            if text:
                labels = declared[keys[j]] or sorted({str(v) for v in values.tolist()})
                lookup = {str(v): i for i, v in enumerate(labels)}
                unknown = sorted({str(v) for v in values.tolist()} - set(lookup))
                if unknown:
                    raise ValueError(f"categorical: column {names[j]!r} holds {unknown}, not among its declared "
                                     f"categories {list(labels)}")
                cols.append(np.array([lookup[str(v)] for v in values.tolist()], dtype=np.float64))
                coded.add(j)
                given[j] = list(labels)
            else:
                cols.append(values.to_numpy(dtype=np.float64))
        x = torch.from_numpy(np.stack(cols, 1)) if cols else torch.zeros(len(data), 0, dtype=torch.float64)
    else:
        source = Data(data, batch_size=None, name=name)
        whole = source.tensors()
        x = whole.x.reshape(whole.x.shape[0], -1).double().cpu()
        names = [str(n) for n in feature_names] if feature_names is not None else \
            list(getattr(source, "columns", None) or [f"x{j}" for j in range(x.shape[1])])
        if len(names) != x.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names but {name} has {x.shape[1]} columns; give one "
                             "name per column")
        columns = Columns(names)
        keys = {columns.index(c, "categorical"): c for c in declared}
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; impute or drop them first")
    for j, key in keys.items():
        if j in coded:
            continue
        present = sorted(set(x[:, j].tolist()))
        allowed = declared[key]
        if allowed is not None:
            allowed = [float(v) for v in allowed]
            stray = [v for v in present if v not in allowed]
            if stray:
                raise ValueError(f"categorical: column {names[j]!r} holds {stray}, not among its declared "
                                 f"categories {allowed}")
        given[j] = allowed if allowed is not None else present
    columns.categories, columns.coded = given, coded
    return x, columns
