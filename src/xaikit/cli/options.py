"""The options shared by the subcommands of ``xaikit`` and the types of their values (one-line errors)."""
from __future__ import annotations

import argparse

from . import parts


def batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a positive integer."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}")


def input_range(text: str) -> tuple[float, float]:
    """``--input-range``: ``LOW,HIGH`` with LOW below HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW,HIGH (e.g. -1,1), got {text!r}") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low, high


def positive_int(text: str) -> int:
    """A positive integer."""
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")


def percentile(text: str) -> float:
    """``--percentile``: a number in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 100], got {text!r}")
    return value


def cmap(text: str) -> str:
    """``--cmap``: a matplotlib colour map usable for relevance."""
    from ..viz.heatmap import relevance_cmap

    try:
        relevance_cmap(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def common_options(parser: argparse.ArgumentParser) -> None:
    """The run options (seed, batch size, device, threads, quiet, debug) and the heatmap options."""
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed of the run and of seeded methods (default 0)")
    run.add_argument("--batch-size", type=batch_size, default="auto", metavar="N|auto",
                     help="inputs per method call, passed on to the methods (default auto)")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="where to run (auto: cuda when available, else cpu)")
    run.add_argument("--threads", type=positive_int, help="CPU threads of torch (default: torch's choice; "
                                                          "1 is much faster on a busy shared machine)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bars and no closing line")
    run.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    shown = parser.add_argument_group("heatmaps")
    shown.add_argument("--percentile", type=percentile, default=99.5,
                       help="per-sample percentile of |relevance| shown at full colour (default 99.5)")
    shown.add_argument("--cmap", type=cmap, default="bwr", help="matplotlib diverging colour map (default bwr)")


def model_options(parser: argparse.ArgumentParser, default: str | None, help_inputs: str) -> None:
    """The model and input options; ``default`` is the default model (``None``: ``--model`` is required)."""
    group = parser.add_argument_group("model and inputs")
    group.add_argument("--model", "-m", required=default is None, default=default,
                       help=f"zoo name ({', '.join(parts.ZOO_NAMES)}), module:factory, file.py:factory (a torch model, "
                            "or a scikit-learn estimator for the model-agnostic methods) or a TorchScript file"
                            + (f" (default {default})" if default else ""))
    group.add_argument("--weights", help="a state dict (.pt) to load into the model")
    group.add_argument("--inputs", "-i", nargs="+", default=[], metavar="INPUT", help=help_inputs)
    group.add_argument("--text", action="append", default=[], metavar="TEXT",
                       help="a text input (repeatable; report: the texts of the text example)")
    group.add_argument("--num-samples", type=positive_int, default=16,
                       help="samples drawn from a generated data set such as ground-truth (default 16)")
    group.add_argument("--target", help="class to explain: argmax (default; the labels where the data has them), "
                                        "an index, one index per input separated by commas, or A-B: why class "
                                        "A rather than B (A may be argmax); for dense outputs (segmentation) a "
                                        "region of class CLS's map: CLS@predicted, CLS@box=TOP,LEFT,BOTTOM,RIGHT, "
                                        "CLS@pixel=ROW,COL or CLS@mask=FILE.npy")
    group.add_argument("--target-column", help="CSV inputs: the column holding the labels (for a "
                       "regressor, one output per sample: the true values, shown beside the prediction)")
    group.add_argument("--image-size", type=positive_int, help="side length images are resized to (default: "
                                                               "the zoo model's, else 224)")
    group.add_argument("--input-range", type=input_range, metavar="LOW,HIGH",
                       help="range images are scaled to (default: the zoo model's, else 0,1)")


INPUTS_HELP = ("image files or folders, skimage:NAME photos, .txt (one text per line), .csv, .npy/.npz "
               "(x, y, mask), or ground-truth (default: the zoo model's own inputs)")
