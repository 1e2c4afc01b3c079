"""``xaikit run``: a whole data set through methods and metrics into a resumable run folder (xaikit.run).

    xaikit run -m efficientnet-lite0 -i photos/ --methods lrp:composite=epsilon_gamma_box -o out/run
    xaikit run -i ground-truth --num-samples 512 --metrics pixel_flipping pointing_game --engine ray
    xaikit run ... --engine ray --address auto      # on a running cluster (`ray start --head`)

Rerunning the same command resumes: only the shards not yet written are computed.
"""
from __future__ import annotations

import argparse
from typing import Any

from . import parts
from .errors import NotFound, UsageError
from .options import batch_size, input_range, positive_int

DEFAULT_METHODS = ("lrp",)


class CLIModel:
    """A picklable model factory for the workers: the model as the CLI loads it (zoo, module:factory, file)."""

    def __init__(self, spec: str, weights: str | None, seed: int) -> None:
        self.spec, self.weights, self.seed = spec, weights, seed

    def __call__(self) -> Any:
        from .models import load_model

        return load_model(self.spec, self.weights, "cpu", self.seed).model


def add_parser(sub: Any) -> None:
    """Add the ``run`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser("run", help="a data set through methods and metrics -> Parquet rows, zarr maps (resumable)",
                       description="Explain and evaluate a whole data set, in-process or on Ray, into a run "
                                   "folder (manifest.json, rows/*.parquet, maps/ zarr). Rerun to resume.")
    p.add_argument("--model", "-m", default=parts.GROUND_TRUTH_MODEL,
                   help=f"zoo name ({', '.join(parts.ZOO_NAMES)}), module:factory, file.py:factory or a TorchScript "
                        f"file (default {parts.GROUND_TRUTH_MODEL})")
    p.add_argument("--weights", help="a state dict (.pt) to load into the model")
    p.add_argument("--inputs", "-i", default=parts.GROUND_TRUTH_DATA, metavar="DATA",
                   help="a folder of images, a .csv or .parquet table, or ground-truth (default)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                   help="method specs NAME or NAME:key=value,... (default: lrp, its composite by the input: "
                        "epsilon_plus_flat for images, epsilon_plus for tables)")
    p.add_argument("--metrics", nargs="+", default=[], metavar="METRIC", help="metric specs (default none)")
    p.add_argument("--target", default="auto", help="auto (labels where the data has them, else arg-max), argmax, "
                                                    "label, or a class index")
    p.add_argument("--label-column", help="tables: the column holding the labels")
    p.add_argument("--image-size", type=positive_int, help="side length images are resized to (default: the "
                                                           "zoo model's, else 224)")
    p.add_argument("--input-range", type=input_range, metavar="LOW,HIGH", help="range images are scaled to")
    p.add_argument("--num-samples", type=positive_int, default=64, help="samples of ground-truth (default 64)")
    p.add_argument("--out", "-o", default="out/run", help="run folder (default out/run)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run found in the folder")
    p.add_argument("--no-maps", action="store_true", help="keep only the per-sample scalars, not the attributions")
    p.add_argument("--engine", choices=("inprocess", "ray"), default="inprocess",
                   help="default inprocess; ray starts workers first (a fixed 5-10 s), for long or multi-GPU runs")
    p.add_argument("--address", help="Ray cluster address (auto: the running cluster); none starts a local one")
    p.add_argument("--workers", type=positive_int, help="Ray actors (default: one per GPU, else per CPU)")
    p.add_argument("--shard-size", type=positive_int, default=64, help="samples per shard (default 64)")
    p.add_argument("--batch-size", type=batch_size, default="auto", metavar="N|auto",
                   help="samples per method call inside a shard; a fixed N gives the same bytes on every engine")
    p.add_argument("--seed", type=int, default=0, help="seed of the model factory, the shards and seeded methods")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the workers run")
    p.add_argument("--threads", type=positive_int, help="CPU threads of torch in-process")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    p.set_defaults(func=command)


def _data(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The data argument of :func:`xaikit.run.run` and its source options."""
    from pathlib import Path

    if args.inputs == parts.GROUND_TRUTH_DATA:
        from ..run import TensorSource

        x, y, mask = parts.ground_truth_data(args.num_samples, args.seed)
        return TensorSource(x, y, mask, name="ground-truth"), {}
    path = Path(args.inputs)
    if not path.exists():
        raise NotFound(f"input {args.inputs!r} not found")
    if path.is_dir():
        entry = parts.IMAGE_MODELS.get(args.model, {})
        low, high = args.input_range or (entry.get("low", 0.0), entry.get("high", 1.0))
        return path, {"size": args.image_size or entry.get("size", 224), "low": low, "high": high}
    return path, {"label_column": args.label_column}


def command(args: argparse.Namespace) -> int:
    """Run ``xaikit run``."""
    from .. import run as xrun
    from .specs import parse_spec

    target = args.target
    if target not in ("auto", "argmax", "label"):
        if not target.isdigit():
            raise UsageError(f"--target must be auto, argmax, label or a class index, got {target!r}")
        target = int(target)
    try:
        spec = xrun.RunSpec(
            model=CLIModel(args.model, args.weights, args.seed),
            methods={text: parse_spec(text) for text in args.methods},
            metrics={text: parse_spec(text) for text in args.metrics}, target=target, seed=args.seed,
            batch_size=args.batch_size, shard_size=args.shard_size, save_maps=not args.no_maps, device=args.device)
        data, options = _data(args)
        result = xrun.run(spec, data, args.out, engine=args.engine, address=args.address, workers=args.workers,
                          overwrite=args.overwrite, progress=not args.quiet, **options)
    except xrun.MissingExtra as err:
        raise parts.Unavailable(str(err)) from None
    except (xrun.WorkerSetupError, xrun.ClusterUnreachable, FileNotFoundError) as err:
        raise NotFound(str(err)) from None
    except (xrun.ManifestMismatch, ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    if not args.quiet:
        print(f"wrote {result.out}/ (manifest.json, rows/, maps/)")
    return 0
