"""``xaikit serve``: the local web application (xaikit.serve, docs/serve.md).

    xaikit serve -m ground-truth-cnn --data ground-truth     # explain the ground-truth CNN on its own samples
    xaikit serve -m ground-truth-cnn --data ground-truth --train-data ground-truth   # + its training data (TRAK)
    xaikit serve -m efficientnet-lite0 --data photos/         # an image folder
    xaikit serve --run out/run                                 # browse a run folder (no model needed)

The model comes only from the command line: the browser never names code to import.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from . import parts
from .errors import NotFound, UsageError
from .options import common_options, input_range, positive_int


#: the side length of the ground-truth data set's images (xaikit.zoo.groundtruth.make_shapes)
GROUND_TRUTH_SIZE = 32


def add_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser("serve", help="a local web application: live explanations, concepts, examples, runs",
                       description="Serve a model and its data (or a run folder) in the browser, on 127.0.0.1 "
                                   "unless --host says otherwise.")
    p.add_argument("--model", "-m", help=f"zoo name ({', '.join(parts.ZOO_NAMES)}), module:factory, "
                                         "file.py:factory, a TorchScript file or a Hugging Face folder "
                                         "(default: none, a run folder only)")
    p.add_argument("--weights", help="a state dict (.pt) to load into the model")
    p.add_argument("--data", help="a folder of inputs (images, .txt, .csv) or ground-truth (samples of the "
                                  "ground-truth data set, written to a folder for the session)")
    p.add_argument("--run", help="a xaikit run output folder for the run explorer")
    p.add_argument("--train-data", "--revise-data", dest="revise_data",
                   help="labelled training data of the revise view and of the examples view's training-data "
                        "attribution (TRAK): decoy-digits[:SEED], ground-truth[:SEED] (the shapes the "
                        "ground-truth CNN was trained on; default SEED: --seed) or a .npz with x, y "
                        "(and x_test, y_test)")
    p.add_argument("--revise-out", help="folder the revise view saves revisions in (default: a temporary folder)")
    p.add_argument("--root", action="append", default=[], metavar="FOLDER",
                   help="another folder files may be served from (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; any other address warns)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--upload-limit", type=positive_int, default=8, metavar="MIB",
                   help="largest upload in MiB (default 8)")
    p.add_argument("--image-size", type=positive_int, help="side length images are resized to")
    p.add_argument("--input-range", type=input_range, metavar="LOW,HIGH", help="range images are scaled to")
    p.add_argument("--num-samples", type=positive_int, default=32, help="samples of --data ground-truth (32)")
    common_options(p)
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    config = make_config(args)
    try:
        from ..serve.server import serve as run_server
    except ImportError as err:
        raise parts.Unavailable(f"xaikit serve needs the serve extra: pip install \"xaikit[serve]\" ({err})") from None
    print(f"xaikit serve: http://{config.host}:{config.port} (Ctrl-C stops it)")
    try:
        run_server(config)
    finally:
        if args.data == parts.GROUND_TRUTH_DATA:  # the samples written for this session
            shutil.rmtree(config.data, ignore_errors=True)
    return 0


def make_config(args: argparse.Namespace) -> Any:
    """The :class:`~xaikit.serve.config.ServeConfig` of the parsed arguments (the model loaded)."""
    from ..serve.config import ServeConfig

    if args.model is None and args.run is None:
        raise UsageError("give a model (--model) or a run folder (--run)")
    for name in ("run", *(["data"] if args.data != parts.GROUND_TRUTH_DATA else [])):
        value = getattr(args, name)
        if value is not None and not Path(value).exists():
            raise NotFound(f"--{name} {value!r} not found")
    roots = []
    for root in args.root:
        if not Path(root).is_dir():
            raise NotFound(f"--root {root!r} is not a folder")
        roots.append(Path(root))
    loaded = None
    if args.model is not None:
        from .models import load_model

        loaded = load_model(args.model, args.weights, args.device, args.seed, args.image_size, args.input_range)
        if args.model == parts.GROUND_TRUTH_MODEL and args.image_size is None:
            loaded.size = GROUND_TRUTH_SIZE
    data = args.data
    if data == parts.GROUND_TRUTH_DATA:
        data = ground_truth_folder(args.num_samples, args.seed)
    extra: dict[str, Any] = {}
    if getattr(args, "revise_data", None):
        from .improve_command import revision_data

        spec = args.revise_data
        if spec == parts.GROUND_TRUTH_DATA:  # the training shapes of the model loaded with --seed
            spec = f"{spec}:{args.seed}"
        extra["revise"] = revision_data(spec)
        extra["revise_out"] = args.revise_out
    return ServeConfig(model=loaded, data=data, run=args.run, roots=tuple(roots), host=args.host, port=args.port,
                       upload_limit=args.upload_limit * 2 ** 20, extra=extra)


def ground_truth_folder(n: int, seed: int) -> Path:
    """``n`` held-out ground-truth samples written as PNG files (named ``<index>-<class>.png``) into a folder of
    the temporary directory, kept for the session."""
    import tempfile

    import numpy as np
    import torch
    from skimage import io

    x, y, _ = parts.ground_truth_data(n, seed)
    folder = Path(tempfile.mkdtemp(prefix="xaikit-serve-ground-truth-"))
    pixels = ((x.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    for i, (image, label) in enumerate(zip(pixels, y.tolist())):
        io.imsave(folder / f"{i:03d}-{label}.png", np.ascontiguousarray(image), check_contrast=False)
    return folder
