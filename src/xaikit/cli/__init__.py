"""The ``xaikit`` command line: ``explain``, ``evaluate``, ``report``, ``run`` and ``tune`` (see ``docs/cli.md``,
``docs/run.md``, ``docs/tune.md``).

Every error ends the run with one line on stderr and a non-zero exit code: 1 the run failed, 2 bad arguments
(unknown method, metric, setting or option value), 3 a file, model or input that does not exist or cannot be
loaded, 4 a part of xaikit or an optional dependency that is not installed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .._version import __version__
from . import parts
from .errors import FAILED, INTERRUPTED, UNAVAILABLE, USAGE, CLIError, UsageError, one_line
from .options import INPUTS_HELP, common_options, model_options, positive_int


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Lazy:
    """``commands.<name>``, imported when the subcommand runs: ``xaikit --help`` loads no torch-heavy room."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, args: argparse.Namespace) -> int:
        from . import commands

        return getattr(commands, self.name)(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``xaikit`` and its subcommands."""
    commands = argparse.Namespace(**{name: _Lazy(name) for name in ("explain", "evaluate", "report")})

    parser = _Parser(prog="xaikit", description="Explain, evaluate and report on PyTorch models.")
    parser.add_argument("--version", action="version", version=f"xaikit {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("explain", help="heatmap PNGs and raw attributions (.npz) of methods on inputs",
                       description="Explain a model on inputs with one or more methods.")
    model_options(p, None, INPUTS_HELP)
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="method specs NAME or NAME:key=value,key=value, e.g. lrp:composite=epsilon_gamma_box "
                        "(default: gradient input_x_gradient lrp; causal language models: input_x_gradient "
                        "lrp:composite=attnlrp lrp:composite=cp_lrp)")
    p.add_argument("--max-new-tokens", type=positive_int, default=8,
                   help="causal language models: length of the greedy answer explained (default 8)")
    p.add_argument("--overlay", action="store_true", help="draw the heatmap PNGs over the inputs")
    p.add_argument("--view", choices=("dft", "stft"), help="signals (.npy/.npz/.wav, (N, C, T)): explain in the "
                   "frequency (dft) or time-frequency (stft: 256-sample Hann window, hop 64) domain through a "
                   "virtual inspection layer; writes signal-<method>-<input>.png with the spectrogram relevance")
    p.add_argument("--out", "-o", default="out/explain", help="output folder (default out/explain)")
    common_options(p)
    p.set_defaults(func=commands.explain)

    p = sub.add_parser("evaluate", help="methods × metrics on a data set -> scores.csv / scores.json",
                       description="Score attribution methods with evaluation metrics on a data set.")
    model_options(p, parts.GROUND_TRUTH_MODEL, INPUTS_HELP)
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="method specs (default: the main methods)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="metric specs NAME or NAME:key=value,... "
                                                                   "(default: a faithfulness, localisation, "
                                                                   "complexity and randomisation selection)")
    p.add_argument("--out", "-o", default="out/evaluate", help="output folder (default out/evaluate)")
    common_options(p)
    p.set_defaults(func=commands.evaluate)

    p = sub.add_parser("report", help="a self-contained HTML report folder",
                       description="Write an HTML report: heatmaps of an image model, a metrics table on the "
                                   "ground-truth data set, and token heatmaps of a text model.")
    model_options(p, "efficientnet-lite0", INPUTS_HELP)
    p.add_argument("--methods", nargs="+", metavar="METHOD", help="heatmap methods (default: the main methods)")
    p.add_argument("--eval-model", default=parts.GROUND_TRUTH_MODEL,
                   help=f"model of the metrics table (default {parts.GROUND_TRUTH_MODEL})")
    p.add_argument("--eval-inputs", nargs="+", default=[], metavar="INPUT", help="data of the metrics table "
                                                                                "(default: the model's own)")
    p.add_argument("--eval-methods", nargs="+", metavar="METHOD", help="methods of the metrics table")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="metrics of the metrics table")
    p.add_argument("--text-model", default="minilm", help="model of the text example (default minilm)")
    p.add_argument("--text-methods", nargs="+", metavar="METHOD", help="methods of the text example")
    p.add_argument("--sections", nargs="+", default=["images", "concepts", "metrics", "examples", "text"],
                   choices=("images", "concepts", "metrics", "examples", "text", "contrastive"),
                   help="sections to include "
                   "(default all but contrastive; concepts: top channels of --concept-layer with %% share, conditional "
                   "heatmaps and reference crops; examples: nearest samples and pertinent positive/negative of one "
                   "sample of the metrics data; contrastive: anchors and runner-up counterfactuals of the inputs)")
    p.add_argument("--concept-layer", default=None, help="layer of the concepts section (default: the last conv)")
    p.add_argument("--strict", action="store_true", help="fail when a section cannot be made (default: the "
                                                         "report says what is missing)")
    p.add_argument("--title", default="xaikit report", help="title of the report")
    p.add_argument("--out", "-o", default="out/report", help="output folder (default out/report)")
    common_options(p)
    p.set_defaults(func=commands.report)

    from .improve_command import add_parser as add_improve
    from .run import add_parser as add_run
    from .serve_command import add_parser as add_serve
    from .tune_command import add_parser as add_tune

    add_run(sub)
    add_tune(sub)
    add_serve(sub)
    add_improve(sub)
    return parser


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    return name


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"xaikit: warning: {str(message).strip().splitlines()[0]}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xaikit`` with ``argv`` (default: the command line); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and argument errors
        return int(stop.code or 0)
    if args.command is None:
        print("xaikit: error: give a command: explain, evaluate, report, run, tune, serve or improve (see xaikit --help)",
              file=sys.stderr)
        return USAGE
    args.argv = argv
    prog = f"xaikit {args.command}"
    import torch

    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            import numpy as np

            args.device = _resolve_device(args.device)
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            torch.manual_seed(args.seed)
            np.random.seed(args.seed % 2**32)
            return args.func(args)
        except CLIError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return err.code
        except parts.Unavailable as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return UNAVAILABLE
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:  # noqa: BLE001 - one line for the user; --debug shows the traceback
            if args.debug:
                raise
            print(f"{prog}: failed: {type(err).__name__}: {one_line(err)} (--debug shows the traceback)",
                  file=sys.stderr)
            return FAILED
        finally:
            torch.set_num_threads(threads)  # main() may run inside a notebook or a test


__all__ = ["main", "build_parser"]
