"""What a cache keys on: one short hash of models' weights, data and settings (foundation module).

Every cache of the package (``FeatureIndex.fit(cache=)``, ``ReferenceSamples(cache=)``, the results file of
``xaikit.tune``) keys on :func:`fingerprint` of what its result depends on, so that a cache written for other
weights, other data or other settings is never read back as if it were current.

:func:`fingerprint` hashes (SHA-1 over the raw bytes, not for security):

- an ``nn.Module``: every entry of its ``state_dict()`` (parameters *and* buffers: BatchNorm statistics count),
  by name, dtype, shape and value, and its class;
- a tensor or an array: dtype, shape and every byte of its values;
- dicts (sorted by key), lists and tuples: their items, in order;
- ``str``, numbers, ``bool``, ``None``: their ``repr``;
- a function or class: its ``module:qualname``;
- any other object: its class and its attributes (``vars``), recursively. An object seen before in the same
  fingerprint (a method's model, a cycle) counts as a reference to it, not again.

Hashing reads every byte once (one to two seconds per GB on a CPU; the tensors of a model on a GPU are copied to
the CPU first), far less than the forward passes a cache saves.

>>> import torch
>>> a = torch.nn.Linear(2, 2)
>>> key = fingerprint(a, torch.ones(3), {"layer": "fc"})
>>> len(key), key == fingerprint(a, torch.ones(3), {"layer": "fc"})
(16, True)
>>> with torch.no_grad():
...     _ = a.weight.add_(1)
>>> key == fingerprint(a, torch.ones(3), {"layer": "fc"})
False
"""
from __future__ import annotations

import hashlib
import inspect
import re
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["Fingerprint", "fingerprint"]


class Fingerprint:
    """An incremental hash of models, tensors and settings (see the module); ``str(fp)`` is its 16 hex digits."""

    def __init__(self, *values: Any) -> None:
        self._digest = hashlib.sha1(usedforsecurity=False)
        self._seen: dict[int, int] = {}
        self._alive: list[Any] = []  # what ``_seen`` refers to, kept alive so that no id is reused
        for value in values:
            self.update(value)

    def update(self, value: Any) -> "Fingerprint":
        """Add ``value`` to the hash; returns ``self``."""
        if isinstance(value, (str, int, float, complex, bool, bytes)) or value is None:
            self._text(f"{type(value).__name__}:{value!r}")
        elif isinstance(value, torch.Tensor):
            self._tensor(value)
        elif isinstance(value, np.ndarray):
            self._tensor(torch.from_numpy(np.ascontiguousarray(value)) if value.dtype != object else value.tolist())
        elif self._again(value):
            return self
        elif isinstance(value, nn.Module):
            self._text(f"module:{_qualified(type(value))}")
            for name, tensor in value.state_dict().items():
                self._text(name)
                self.update(tensor)
        elif isinstance(value, Mapping):
            self._text(f"mapping:{len(value)}")
            for key in sorted(value, key=repr):
                self.update(key)
                self.update(value[key])
        elif isinstance(value, (list, tuple)):
            self._text(f"{type(value).__name__}:{len(value)}")
            for item in value:
                self.update(item)
        elif inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value) or inspect.ismethod(value):
            self._text(f"callable:{_qualified(value)}")
        else:
            self._text(f"object:{_qualified(type(value))}")
            state = getattr(value, "__dict__", None)
            self.update(state if state else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)))  # no addresses
        return self

    def _again(self, value: Any) -> bool:
        """Whether ``value`` (a container or object) was hashed before: then only a reference to it is added."""
        key = id(value)
        if key in self._seen:
            self._text(f"ref:{self._seen[key]}")
            return True
        self._seen[key] = len(self._seen)
        self._alive.append(value)
        return False

    def _text(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        self._digest.update(len(data).to_bytes(8, "little"))
        self._digest.update(data)

    def _tensor(self, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor):  # an array of Python objects
            self.update(tensor)
            return
        self._text(f"tensor:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.layout}")
        if tensor.device.type == "meta":
            return
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        if flat.is_quantized:
            flat = flat.int_repr()
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        self._digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")  # no copy: the buffer

    def __str__(self) -> str:
        return self._digest.hexdigest()[:16]

    hexdigest = __str__


def fingerprint(*values: Any) -> str:
    """16 hex digits that change when any of ``values`` changes: models (their parameters and buffers), tensors,
    arrays and settings (see :mod:`xaikit.fingerprint`). The one key of every cache in xaikit."""
    return str(Fingerprint(*values))


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"
