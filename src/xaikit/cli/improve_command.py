"""``xaikit improve``: repeat a saved revision (explanatory interactive learning, :mod:`xaikit.improve.revise`).

    xaikit improve out/revision                       # model and data as revision.json names them
    xaikit improve out/revision -m module:factory --data train.npz -o out/again

The folder holds what the web app's revise view (or ``ReviseResult.save``) wrote: ``revision.json`` (the
settings, and the model and data it was made on), ``masks.npz`` and ``weights.pt``. The same revision is done
again on a fresh copy of the model and written to ``--out`` with the accuracy before and after.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import NotFound, UsageError
from .options import positive_int

#: data sets known by name in revision.json / --data
DECOY = "decoy-digits"
#: the ground-truth shapes the bundled CNN was trained on (``ground-truth[:SEED]``: 512 samples drawn with SEED)
GROUND_TRUTH = "ground-truth"
#: training samples of ``ground-truth`` (as the report's examples section searches)
GROUND_TRUTH_TRAIN = 512


def add_parser(sub: Any) -> None:
    """Add the ``improve`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser("improve", help="repeat a saved revision (RRR on painted masks, P-ClArC) -> revised weights",
                       description="Repeat the revision saved in a folder (revision.json, masks.npz, weights.pt: "
                                   "what `xaikit serve`'s revise view writes) on a fresh copy of the model.")
    p.add_argument("revision", help="folder of the saved revision")
    p.add_argument("--model", "-m", help="model spec (default: the one revision.json names)")
    p.add_argument("--weights", help="a state dict (.pt) to load into the model before revising")
    p.add_argument("--data", help=f"{DECOY}[:SEED], {GROUND_TRUTH}[:SEED] or a .npz with x, y (and x_test, y_test) "
                                  "(default: the data revision.json names)")
    p.add_argument("--out", "-o", help="folder of the repeated revision (default REVISION/repeated)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the model factory (default 0)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where to run (default cpu)")
    p.add_argument("--threads", type=positive_int, help="CPU threads of torch")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress and no table")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    p.set_defaults(func=command)


def revision_data(spec: Any) -> dict[str, Any]:
    """The training data ``x``, ``y`` and the evaluation sets of a data spec: ``"decoy-digits[:SEED]"``,
    ``"ground-truth[:SEED]"`` (the bundled CNN's training shapes, no evaluation set), a dict
    ``{"kind": "decoy-digits", "seed": S, "n_train": N}`` (as revision.json holds it) or a ``.npz`` path."""
    import numpy as np
    import torch

    if isinstance(spec, str) and spec.split(":")[0] in (DECOY, GROUND_TRUTH):
        kind, _, seed = spec.partition(":")
        seed = seed or "0"
        if not seed.isdigit():
            raise UsageError(f"--data {kind}:SEED needs an integer seed, got {seed!r}")
        spec = {"kind": kind, "seed": int(seed)}
    if isinstance(spec, dict) and spec.get("kind") == GROUND_TRUTH:
        from .parts import ground_truth_training

        n = int(spec.get("n_train", GROUND_TRUTH_TRAIN))
        x, y = ground_truth_training(n, int(spec.get("seed", 0)))
        return {"x": x, "y": y, "evaluate": {}, "about": {"kind": GROUND_TRUTH, "seed": int(spec.get("seed", 0)),
                                                          "n_train": n}}
    if isinstance(spec, dict) and spec.get("kind") == DECOY:
        from ..zoo import make_decoy_digits

        train, test = make_decoy_digits(int(spec.get("seed", 0)), n_train=int(spec.get("n_train", 1000)))
        return {"x": train.x, "y": train.y, "evaluate": {"decoy test": (test.x, test.y)}, "about": spec}
    if isinstance(spec, dict) and spec.get("kind") == "npz":
        spec = spec.get("path")
    if isinstance(spec, str) and spec.endswith(".npz"):
        path = Path(spec)
        if not path.is_file():
            raise NotFound(f"data file {spec!r} not found")
        with np.load(path) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise UsageError(f"{spec!r} must hold arrays x and y (missing: {', '.join(missing)})")
            data = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
        evaluate = {"test": (data["x_test"], data["y_test"].long())} if {"x_test", "y_test"} <= set(data) else {}
        return {"x": data["x"].float(), "y": data["y"].long(), "evaluate": evaluate,
                "about": {"kind": "npz", "path": str(path)}}
    raise UsageError(f"data must be {DECOY}[:SEED], {GROUND_TRUTH}[:SEED] or a .npz file with x and y, got {spec!r}")


def command(args: argparse.Namespace) -> int:
    """Run ``xaikit improve``."""
    from ..improve.revise import load_revision, repeat
    from .models import load_model

    folder = Path(args.revision)
    try:
        files = load_revision(folder)
    except FileNotFoundError as err:
        raise NotFound(str(err)) from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    model_spec = args.model or files.record.get("model")
    if not model_spec:
        raise UsageError(f"{folder}/revision.json names no model; give --model")
    data_spec = args.data or files.record.get("data")
    if not data_spec:
        raise UsageError(f"{folder}/revision.json names no data; give --data")
    data = revision_data(data_spec)
    model = load_model(model_spec, args.weights, args.device, args.seed).model  # main() resolved --device auto
    data["x"], data["y"] = data["x"].to(args.device), data["y"].to(args.device)
    data["evaluate"] = {k: (x.to(args.device), y.to(args.device)) for k, (x, y) in data["evaluate"].items()}

    def progress(done: int, total: int, info: dict) -> None:
        if not args.quiet and (done == total or done % max(1, total // 10) == 0):
            print(f"xaikit improve: step {done}/{total} {info}", flush=True)

    try:
        result = repeat(model, folder, data["x"], data["y"], evaluate=data["evaluate"], progress=progress)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    out = Path(args.out) if args.out else folder / "repeated"
    result.save(out, about={"model": model_spec, "data": data["about"], "repeats": str(folder)})
    if not args.quiet:
        print(result.to_markdown())
        print(f"wrote {out}/ (revision.json, masks.npz, weights.pt)")
    return 0
