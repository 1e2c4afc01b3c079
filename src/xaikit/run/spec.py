"""The work of a run, described once: a small picklable :class:`RunSpec` that every worker rebuilds from.

A spec names a model factory (``"module:factory"``, a zoo name or any picklable callable returning an
``nn.Module``), the methods and metrics with their settings, the target and the seed. Workers call
:func:`build` to get the model (in eval mode, on their device) and the method and metric objects; the driver
never needs the model. :meth:`RunSpec.describe` is the JSON identity written to the run's manifest.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..batching import check_batch_size
from ..errors import check_positive
from ..methods.base import Method, get_method
from ..methods.resolve import parse_spec
from .errors import WorkerSetupError

#: zoo names accepted as the model of a spec
ZOO_FACTORIES = {"efficientnet-lite0": "xaikit.zoo.imagenet:load_efficientnet_lite0"}
#: accepted ``target`` values besides an int
TARGETS = ("auto", "argmax", "label")

Items = Mapping[str, Any] | Sequence[Any]


def _normalise(items: Items | None, what: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Methods/metrics as ``label -> (name, settings)`` from names, ``(name, settings)`` pairs or a dict."""
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    pairs: list[tuple[str | None, Any]]
    if isinstance(items, Mapping):
        pairs = list(items.items())
    elif isinstance(items, (list, tuple)):
        pairs = [(None, item) for item in items]
    else:
        raise TypeError(f"{what} must be a list of names or (name, settings) pairs, or a dict label -> name, "
                        f"got {type(items).__name__}")
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for label, item in pairs:
        if isinstance(item, str):  # a name or a "name:key=value" spec, read as the CLI reads it
            if label is None:
                label = item
            name, settings = parse_spec(item)
        else:
            name, settings = tuple(item) if isinstance(item, (tuple, list)) and len(item) == 2 else (None, None)
        if not isinstance(name, str) or not isinstance(settings, dict):
            raise TypeError(f"{what}: each entry must be a name or a (name, settings dict) pair, got {item!r}")
        if label is None:
            label = name if not settings else name + ":" + ",".join(f"{k}={v}" for k, v in settings.items())
        if label in out:
            raise ValueError(f"{what}: the label {label!r} is given twice; name the entries with a dict")
        out[label] = (name, dict(settings))
    return out


@dataclass(frozen=True)
class RunSpec:
    """What to compute for every sample of a data set.

    Parameters
    ----------
    model : str or callable
        ``"module:factory"``, a zoo name (``"efficientnet-lite0"``) or a picklable callable returning an
        ``nn.Module``. Each worker calls it once, after ``torch.manual_seed(seed)``.
    methods : list or dict
        Attribution methods: names (``"lrp"``), specs (``"lrp:composite=epsilon_gamma_box"``, read as the CLI
        reads them), ``(name, settings)`` pairs or a dict ``label -> name, spec or pair``.
    metrics : list or dict, optional
        Evaluation metrics of :mod:`xaikit.metrics`, given like ``methods``; each scores each method.
    target : "auto", "argmax", "label" or int
        ``"auto"``: the data's labels where it has them, else the arg-max; ``"label"`` requires labels.
    seed : int
        Seeds the model factory, every shard (``seed`` and the shard index) and the methods/metrics that take
        a ``seed`` setting and were not given one.
    batch_size : int or "auto"
        Samples per method call inside a shard; ``"auto"`` times chunk sizes on the real work
        (:func:`xaikit.batching.chunked`). Only a fixed int gives the same bytes whatever the timing.
    shard_size : int
        Samples per shard: the unit of storage, of resume and of work handed to a worker.
    save_maps : bool
        Store the attributions (dense maps) in zarr; ``False`` keeps only the per-sample scalars.
    device : "auto", "cpu" or "cuda"
        ``"auto"``: each worker uses a GPU where it has one.
    """

    model: str | Callable[[], nn.Module]
    methods: Items
    metrics: Items | None = None
    target: str | int = "auto"
    seed: int = 0
    batch_size: int | str = "auto"
    shard_size: int = 64
    save_maps: bool = True
    device: str = "auto"
    _methods: dict = field(init=False, repr=False, compare=False)
    _metrics: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, str) or callable(self.model)):
            raise TypeError(f"model must be 'module:factory', a zoo name or a callable returning an nn.Module, "
                            f"got {type(self.model).__name__}")
        if isinstance(self.model, str) and self.model not in ZOO_FACTORIES and ":" not in self.model:
            raise ValueError(f"model {self.model!r}: give 'module:factory' or a zoo name "
                             f"({', '.join(ZOO_FACTORIES)})")
        methods = _normalise(self.methods, "methods")
        if not methods:
            raise ValueError("methods is empty: give at least one attribution method, e.g. methods=['lrp']")
        for label, (name, _) in methods.items():
            get_method(name)  # ValueError listing the valid names
        metrics = _normalise(self.metrics, "metrics")
        registry = _metric_registry()
        for label, (name, _) in metrics.items():
            if name not in registry:
                raise ValueError(f"unknown metric {name!r}; valid: {', '.join(sorted(registry))}")
        if not (self.target in TARGETS or (isinstance(self.target, int) and not isinstance(self.target, bool)
                                            and self.target >= 0)):
            raise ValueError(f"target must be one of {', '.join(TARGETS)} or a class index >= 0, got {self.target!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        check_batch_size(self.batch_size)
        check_positive(self.shard_size, "shard_size", integer=True)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        object.__setattr__(self, "_methods", methods)
        object.__setattr__(self, "_metrics", metrics)

    @property
    def method_items(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``label -> (method name, settings)``."""
        return dict(self._methods)

    @property
    def metric_items(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``label -> (metric name, settings)``."""
        return dict(self._metrics)

    @property
    def model_name(self) -> str:
        """The model factory as text (for messages and the manifest)."""
        return self.model if isinstance(self.model, str) else describe_callable(self.model)

    def describe(self) -> dict[str, Any]:
        """The JSON identity of the work (what the results depend on; not where or how fast it runs)."""
        return {
            "model": self.model_name,
            "methods": {k: [n, _jsonable(s)] for k, (n, s) in self._methods.items()},
            "metrics": {k: [n, _jsonable(s)] for k, (n, s) in self._metrics.items()},
            "target": self.target, "seed": self.seed, "batch_size": self.batch_size,
            "shard_size": self.shard_size, "save_maps": self.save_maps,
        }


def fingerprint(identity: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``identity`` (16 hex digits)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_callable(obj: Any) -> str:
    """A stable text for a callable (no memory addresses): ``module:qualname``, with a partial's arguments."""
    if isinstance(obj, functools.partial):
        args = [repr(a) for a in obj.args] + [f"{k}={v!r}" for k, v in sorted(obj.keywords.items())]
        return f"partial({describe_callable(obj.func)}, {', '.join(args)})"
    if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
        return f"{obj.__module__}:{obj.__qualname__}"
    state = getattr(obj, "__dict__", {})
    return f"{type(obj).__module__}:{type(obj).__qualname__}({_jsonable(state)!r})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return describe_callable(value)
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def _metric_registry() -> dict[str, type]:
    from ..metrics import METRICS

    return METRICS


def _accepts(cls: type, keyword: str) -> bool:
    return keyword in inspect.signature(inspect.unwrap(cls.__init__)).parameters


def _with_defaults(cls: type, settings: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    """The run's seed and fixed batch size where the class takes them and they are unset.

    A fixed ``batch_size`` reaches the methods' and metrics' own chunks too: ``"auto"`` chunks by timing, and
    float results depend (in the last bits) on how samples are grouped, so only fixed chunks repeat bytewise.
    """
    settings = dict(settings)
    if "seed" not in settings and _accepts(cls, "seed"):
        settings["seed"] = spec.seed
    if "batch_size" not in settings and spec.batch_size != "auto" and _accepts(cls, "batch_size"):
        settings["batch_size"] = spec.batch_size
    return settings


@dataclass
class Parts:
    """What a worker builds from a spec: the model on its device, and the method and metric objects."""

    model: nn.Module
    methods: dict[str, Method]
    metrics: dict[str, Any]
    device: torch.device


def load_factory(model: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """The callable behind ``model`` (a zoo name or ``"module:factory"`` is imported)."""
    if callable(model):
        return model
    text = ZOO_FACTORIES.get(model, model)
    module_name, _, name = text.rpartition(":")
    module = importlib.import_module(module_name)
    if not hasattr(module, name):
        raise AttributeError(f"module {module_name!r} has no {name!r}")
    return getattr(module, name)


def build(spec: RunSpec, where: str = "in-process") -> Parts:
    """Build the model (seeded, eval mode, on this worker's device), the methods and the metrics of ``spec``.

    Raises
    ------
    WorkerSetupError
        Naming the model factory (or the method/metric) and the worker (``where``) when building fails.
    """
    device = torch.device("cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu")
    if spec.device == "cuda" and device.type != "cuda":
        raise WorkerSetupError(f"device='cuda' but worker {where} has no CUDA device")
    torch.manual_seed(spec.seed)
    try:
        model = load_factory(spec.model)()
    except Exception as err:  # noqa: BLE001 - user code fails in every way; name it and the worker
        raise WorkerSetupError(f"model factory {spec.model_name!r} failed on worker {where}: "
                               f"{type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise WorkerSetupError(f"model factory {spec.model_name!r} returned {type(model).__name__} on worker "
                               f"{where}, not a torch.nn.Module")
    model = model.eval().to(device)
    methods, metrics = {}, {}
    registry = _metric_registry()
    try:
        for label, (name, settings) in spec.method_items.items():
            cls = get_method(name)
            methods[label] = cls(model, **_with_defaults(cls, settings, spec))
        for label, (name, settings) in spec.metric_items.items():
            cls = registry[name]
            metrics[label] = cls(**_with_defaults(cls, settings, spec))
    except (TypeError, ValueError) as err:
        raise WorkerSetupError(f"{label!r}: {err}") from err
    return Parts(model, methods, metrics, device)
