"""The zoo's generated data sets are dataclasses of tensors with one row per sample, held side by side."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

Self = TypeVar("Self", bound="Rows")


class Rows:
    """Mixin for such a dataclass (every field a tensor whose first dimension is the sample): ``len`` is the
    number of samples, and indexing (an int, a slice, indices or a mask) selects those rows of every field, as a
    new instance of the same class."""

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]  # type: ignore[arg-type]

    def __getitem__(self: Self, index: Any) -> Self:
        return type(self)(*(getattr(self, field.name)[index] for field in fields(self)))  # type: ignore[arg-type]
