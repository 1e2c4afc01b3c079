"""The pieces of other parts of xaikit that the command line and the default report use, in one place.

Each function imports its piece lazily and raises :class:`Unavailable` with a one-line reason when the piece
is not installed, so a report section can say what is missing instead of failing the whole run.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported by the commands that run, not by ``xaikit --help``
    import torch
    from torch import nn


class Unavailable(RuntimeError):
    """A part of xaikit (or an optional dependency) that this command needs is not installed."""


def attribute(spec: str, what: str) -> Any:
    """``"package.module:name"`` -> the object, or :class:`Unavailable` naming what is missing."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise Unavailable(f"{what} needs {module_name} ({err})") from None
    if not hasattr(module, name):
        raise Unavailable(f"{what} needs {module_name}.{name}, which this version does not have")
    return getattr(module, name)


# ---- models of the zoo, by CLI name --------------------------------------------------------------------------

#: image models: loader, input size, input range, default inputs, label function
IMAGE_MODELS: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {
        "loader": "xaikit.zoo.imagenet:load_efficientnet_lite0",
        "size": 224, "low": -1.0, "high": 1.0,
        "inputs": ("skimage:chelsea", "skimage:coffee", "skimage:astronaut", "skimage:rocket"),
        "labels": "xaikit.zoo.imagenet:imagenet_label",
    },
}
#: the ground-truth model and data set (one shape on a textured background, known object masks, images in
#: [-1, 1]): the CLI names, the trainer ``(seed=) -> model`` and the generator ``(n, seed=) -> .x, .y, .mask``
GROUND_TRUTH_MODEL = "ground-truth-cnn"
GROUND_TRUTH_DATA = "ground-truth"
GROUND_TRUTH_LOADER = "xaikit.zoo.groundtruth:load_shapes_model"
GROUND_TRUTH_DATASET = "xaikit.zoo.groundtruth:make_shapes"
GROUND_TRUTH_RANGE = (-1.0, 1.0)
GROUND_TRUTH_CLASSES = "xaikit.zoo.groundtruth:SHAPES"
#: text models: name -> loader ``(seed) -> (model, tokenizer, class names)``, see :func:`load_text_model`
TEXT_MODELS: dict[str, str] = {"minilm": "xaikit.zoo.text:sentiment_task"}
#: class names of the text models
TEXT_CLASSES: dict[str, str] = {"minilm": "xaikit.zoo.text:SENTIMENTS"}
#: the LRP composite of text models in the CLI and the report (``lrp`` without a composite on token ids)
TEXT_COMPOSITE = "attnlrp"
#: sentences of the default text example (the minilm sentiment probe: judging words decide)
DEFAULT_SENTENCES = (
    "a wonderful film with a brilliant cast",
    "the plot was dull and the ending was awful",
    "a dull movie",
)
#: token heatmaps: ``token_html(tokens, relevance, merge=, fragment=) -> str`` (N token lists, relevance (N, L))
TOKENS_HTML = "xaikit.viz.text:token_html"

ZOO_NAMES = (*IMAGE_MODELS, GROUND_TRUTH_MODEL, *TEXT_MODELS)


def load_ground_truth_cnn(seed: int) -> nn.Module:
    """The small CNN trained on the ground-truth data set drawn with ``seed`` (shipped weights for seed 0)."""
    return attribute(GROUND_TRUTH_LOADER, "the ground-truth CNN")(seed=seed)


def ground_truth_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` held-out samples of the ground-truth data set (drawn with ``seed + 1``, so none was trained on):
    images ``(n, C, H, W)``, labels ``(n,)``, object masks ``(n, H, W)``."""
    data = attribute(GROUND_TRUTH_DATASET, "the ground-truth data set")(n, seed=seed + 1)
    return data.x, data.y, data.mask


def ground_truth_training(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of the ground-truth data set drawn with ``seed`` itself (as :func:`load_ground_truth_cnn`
    trains on): images and labels, the data set searched for nearest neighbours in the report."""
    data = attribute(GROUND_TRUTH_DATASET, "the ground-truth data set")(n, seed=seed)
    return data.x, data.y


def examples() -> Any:
    """The explanation-by-example room (:mod:`xaikit.examples`: ``FeatureIndex``, ``CEM``)."""
    attribute("xaikit.examples:CEM", "explanation by example")
    return importlib.import_module("xaikit.examples")


def load_text_model(name: str, seed: int) -> tuple[nn.Module, Any, tuple[str, ...]]:
    """A zoo text model, its tokenizer and its class names.

    ``minilm``: all-MiniLM-L6-v2 with a linear sentiment probe trained (seconds) on template reviews, so the
    tokens that should be relevant (the judging words) are known: ``(input_ids, attention_mask) -> (N, 2)``
    logits of negative and positive.
    """
    task = attribute(TEXT_MODELS[name], f"the text model {name!r}")(seed=seed)
    return task.model, task.tokenizer, tuple(attribute(TEXT_CLASSES[name], f"the classes of {name!r}"))


def tokens_html() -> Callable[..., str]:
    """The token heatmap renderer of :mod:`xaikit.viz.text`."""
    return attribute(TOKENS_HTML, "token heatmaps")


# ---- methods and metrics ------------------------------------------------------------------------------------

#: methods of ``explain`` when none are given, and for causal language models (the generated answer)
DEFAULT_EXPLAIN_METHODS = ("gradient", "input_x_gradient", "lrp")
#: methods of ``explain`` when none are given for a scikit-learn estimator or a NumpyModel (outputs only)
DEFAULT_AGNOSTIC_METHODS = ("occlusion", "kernel_shap")
DEFAULT_GENERATION_METHODS = ("input_x_gradient", "lrp:composite=attnlrp", "lrp:composite=cp_lrp")
#: the main image methods of the default report (those not installed are left out with a note)
DEFAULT_IMAGE_METHODS = (
    "gradient", "input_x_gradient", "integrated_gradients:steps=16", "smooth_grad:samples=16", "grad_cam",
    "guided_backprop", "occlusion:window=32,stride=16", "lrp:composite=epsilon_plus_flat",
    "lrp:composite=epsilon_gamma_box",
)
#: methods compared in the default metrics table (settings for the 32×32 images of the ground-truth data set;
#: occlusion's window is scaled to larger inputs by ``commands.sized_for``; IG with the heatmaps' 16 steps)
DEFAULT_EVAL_METHODS = (
    "gradient", "input_x_gradient", "integrated_gradients:steps=16", "guided_backprop", "grad_cam",
    "occlusion:window=4,stride=2", "lrp:composite=epsilon_plus_flat",
)
#: metrics of the default table: faithfulness, localisation, complexity, randomisation
DEFAULT_METRICS = ("pixel_flipping", "region_perturbation", "pointing_game", "relevance_mass_accuracy",
                   "sparseness", "mprt")
#: methods and composites for the default text example
DEFAULT_TEXT_METHODS = ("gradient", "input_x_gradient", "integrated_gradients:steps=16", "occlusion", "lrp")


def metric_registry() -> dict[str, type]:
    """snake_case metric name -> metric class (``xaikit.metrics.METRICS``)."""
    return attribute("xaikit.metrics:METRICS", "metrics")


def benchmark() -> Callable[..., Any]:
    """``benchmark(model, data, methods, metrics, ...)`` -> a benchmark table (``xaikit.metrics.benchmark``)."""
    return attribute("xaikit.metrics:benchmark", "the metrics table")
