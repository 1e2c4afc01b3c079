"""Model specs on the command line.

- a zoo name: ``efficientnet-lite0``, ``ground-truth-cnn``, ``minilm``;
- ``module:factory`` or ``path/to/file.py:factory``: a callable returning an ``nn.Module`` (or the module itself),
  or a fitted scikit-learn estimator or :class:`~xaikit.NumpyModel` (for the model-agnostic methods only:
  :data:`MODEL_AGNOSTIC`; its ``predict_proba``, else its ``predict``, is explained);
- a saved TorchScript file (``torch.jit.save``);
- a Hugging Face causal language model folder (``config.json``, weights, tokenizer; ``save_pretrained``):
  explained on the answer it generates for text prompts;
- ``--weights FILE``: a state dict loaded into the model given by one of the above.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import parts
from .errors import NotFound, UsageError, one_line


@dataclass
class LoadedModel:
    """A model ready to explain and what the command line needs to feed it."""

    model: Any  #: an ``nn.Module``, or a :class:`~xaikit.NumpyModel` (scikit-learn) for the model-agnostic methods
    spec: str
    kind: str = "auto"  #: "image", "text", "causal-lm" or "auto" (decided by the inputs)
    size: int = 224  #: image side length
    low: float | None = None  #: input range of images (None: each image's own range, for display only)
    high: float | None = None
    default_inputs: tuple[str, ...] = ()
    label: Callable[[int], str] = field(default=lambda i: f"class {i}")
    tokenizer: Any = None


def load_model(spec: str, weights: str | None = None, device: str = "cpu", seed: int = 0,
               image_size: int | None = None, input_range: tuple[float, float] | None = None) -> LoadedModel:
    """Resolve a model spec (see module docstring) to an eval-mode model on ``device``."""
    loaded = _resolve(spec, seed)
    if weights is not None:
        if not isinstance(loaded.model, nn.Module):
            raise UsageError(f"--weights loads a state dict into a torch model; {spec!r} is a "
                             f"{type(loaded.model).__name__}")
        _load_weights(loaded.model, weights)
    if image_size is not None:
        loaded.size = image_size
    if input_range is not None:
        loaded.low, loaded.high = input_range
    if isinstance(loaded.model, nn.Module):
        loaded.model = loaded.model.eval().to(device)
    return loaded


def model_agnostic() -> tuple[str, ...]:
    """The methods that need only the model's outputs (``needs_module is None``): those the CLI runs on a
    scikit-learn estimator or a :class:`~xaikit.NumpyModel`."""
    from ..methods.base import METHODS

    return tuple(name for name, cls in METHODS.items() if cls.needs_module is None)


def check_methods_fit_model(model: Any, spec: str, names: list[str]) -> None:
    """A :class:`UsageError` naming the methods of ``names`` that need a torch model when ``model`` is not one,
    and the model-agnostic methods to use instead."""
    if isinstance(model, nn.Module):
        return
    from ..methods.base import get_method

    torch_only = [n for n in names if get_method(n).needs_module is not None]
    if torch_only:
        raise UsageError(f"method(s) {', '.join(torch_only)} need a torch.nn.Module (gradients or layers), but the "
                         f"model {spec!r} is a {_kind(model)}; use the model-agnostic methods: "
                         f"{', '.join(model_agnostic())}")


def _kind(model: Any) -> str:
    estimator = getattr(model, "estimator", None)
    return f"scikit-learn {type(estimator).__name__}" if estimator is not None else type(model).__name__


def _resolve(spec: str, seed: int) -> LoadedModel:
    if spec in parts.IMAGE_MODELS:
        entry = parts.IMAGE_MODELS[spec]
        model = parts.attribute(entry["loader"], f"the model {spec!r}")()
        return LoadedModel(model, spec, "image", entry["size"], entry["low"], entry["high"], tuple(entry["inputs"]),
                           parts.attribute(entry["labels"], "class names"))
    if spec == parts.GROUND_TRUTH_MODEL:
        low, high = parts.GROUND_TRUTH_RANGE
        classes = parts.attribute(parts.GROUND_TRUTH_CLASSES, "the ground-truth class names")
        return LoadedModel(parts.load_ground_truth_cnn(seed), spec, "image", low=low, high=high,
                           default_inputs=(parts.GROUND_TRUTH_DATA,), label=lambda i: _name(classes, i))
    if spec in parts.TEXT_MODELS:
        model, tokenizer, classes = parts.load_text_model(spec, seed)
        return LoadedModel(model, spec, "text", label=lambda i: _name(classes, i), tokenizer=tokenizer)
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        model, tokenizer = _causal_lm(path)
        return LoadedModel(model, spec, "causal-lm", tokenizer=tokenizer)
    if path.is_file():
        return LoadedModel(_torchscript(path), spec)
    if ":" in spec and not path.exists():
        return LoadedModel(_factory(spec), spec)
    raise NotFound(f"model {spec!r} not found: give a zoo name ({', '.join(parts.ZOO_NAMES)}), "
                   "module:factory, file.py:factory or a TorchScript file")


def _causal_lm(path: Path) -> tuple[nn.Module, Any]:
    """A Hugging Face causal language model and its tokenizer from a folder, offline."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging
    except ImportError as err:
        raise parts.Unavailable(f"a Hugging Face model folder needs transformers ({err})") from None
    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any loading error means the same to the user
        raise NotFound(f"cannot load a causal language model and its tokenizer from {str(path)!r}: "
                       f"{type(err).__name__}: {one_line(err)}") from None
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()
    if tokenizer.pad_token is None:  # prompts of different lengths are padded; the mask hides the padding
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer


def _name(classes: tuple[str, ...], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


def _torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated but still loads
            return torch.jit.load(str(path), map_location="cpu")
    except Exception:  # noqa: BLE001 - any failure means "not TorchScript"; say what to do instead
        pass
    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise NotFound(f"cannot load model file {str(path)!r}: neither TorchScript nor a state dict "
                       f"({one_line(err)})") from None
    if isinstance(content, dict):
        raise UsageError(f"{str(path)!r} is a state dict, not a model: give the architecture and the weights, "
                         f"--model module:factory --weights {path}")
    raise NotFound(f"cannot load model file {str(path)!r}: save it with torch.jit.save or as a state dict")


def _factory(spec: str) -> nn.Module:
    module_name, _, name = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise NotFound(f"model file {module_name!r} not found")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules.setdefault(file.stem, module)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except NotFound:
        raise
    except Exception as err:  # noqa: BLE001 - import errors of user code come in every kind
        raise NotFound(f"cannot import {module_name!r} for model {spec!r}: "
                       f"{type(err).__name__}: {one_line(err)}") from None
    if not hasattr(module, name):
        raise NotFound(f"{module_name!r} has no {name!r} (model {spec!r})")
    factory = getattr(module, name)
    try:
        model = factory if isinstance(factory, nn.Module) or _estimator(factory) else factory()
    except Exception as err:  # noqa: BLE001
        raise NotFound(f"model factory {spec!r} failed: {type(err).__name__}: {one_line(err)}") from None
    from ..numpy_model import NumpyModel

    if isinstance(model, (nn.Module, NumpyModel)):
        return model
    if _estimator(model):
        return NumpyModel.from_estimator(model)
    raise NotFound(f"model factory {spec!r} returned {type(model).__name__}: give a torch.nn.Module, a fitted "
                   f"scikit-learn estimator (predict_proba or predict) or a xaikit.NumpyModel")


def _estimator(obj: Any) -> bool:
    """A scikit-learn-style estimator object (not a class or function): ``fit`` and ``predict``."""
    return not isinstance(obj, type) and callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None))


def _load_weights(model: nn.Module, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise NotFound(f"weights file {weights!r} not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise NotFound(f"cannot read weights {weights!r}: not a state dict saved with torch.save "
                       f"({one_line(err)})") from None
    if not isinstance(state, dict):
        raise NotFound(f"weights file {weights!r} does not hold a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UsageError(f"weights {weights!r} do not fit the model: {one_line(err)}") from None
