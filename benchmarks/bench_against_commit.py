"""This tree against an earlier commit, in one process: LRP time / gradient × input time for both, interleaved.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_against_commit.py --base 3495a94 [--repeats 5] [--quick]

The base commit's ``src/xaikit`` is exported with ``git archive`` into a temporary folder and imported as the
package ``xaikit_base`` (xaikit's own imports are relative), so both versions explain the same models on the
same inputs, round by round: a drift of the machine hits both alike. Reported per model and composite: the
median over rounds of (LRP / gradient × input of the same round) for each version, and the median of
(this tree / base). Import time: ``import xaikit`` in fresh interpreters, alternating the versions.
"""
from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import xaikit as xk  # noqa: E402
from archs import resnet50_like, vgg16_like  # noqa: E402
from bench_lrp import gradient_x_input  # noqa: E402


def export_base(commit: str, folder: Path) -> None:
    """``src/xaikit`` of ``commit`` as ``folder/xaikit_base``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src/xaikit"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "src" / "xaikit").rename(folder / "xaikit_base")


def import_seconds(path: str, package: str, rounds: int) -> list[float]:
    code = f"import sys, time; sys.path.insert(0, {path!r}); t = time.perf_counter(); import {package}; " \
           "print(time.perf_counter() - t)"
    return [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
            for _ in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 2 at 112×112")
    parser.add_argument("--import-rounds", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=["ResNet-50-like", "VGG-16-like", "EfficientNet-Lite0"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    export_base(args.base, folder)
    sys.path.insert(0, str(folder))
    base = importlib.import_module("xaikit_base")
    size, batch = (112, 2) if args.quick else (224, 8)
    torch.manual_seed(0)
    factories = {"ResNet-50-like": resnet50_like, "VGG-16-like": vgg16_like}
    try:
        from xaikit.zoo import load_efficientnet_lite0
        factories["EfficientNet-Lite0"] = load_efficientnet_lite0
    except ImportError:
        pass
    models = {name: factories[name]() for name in args.models if name in factories}
    print(f"| model | composite | this tree: LRP / grad×input | base {args.base}: LRP / grad×input | this / base |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        x = torch.randn(batch, 3, size, size).clamp(-1, 1)
        for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
            settings = {"low": -1.0, "high": 1.0} if "box" in composite else {}
            calls = {"grad": lambda: gradient_x_input(model, x)}
            for label, package in (("new", xk), ("old", base)):
                lrp = package.LRP(model, composite=composite, batch_size=batch, **settings)
                calls[label] = lambda lrp=lrp: lrp(x, target=0)
            for call in calls.values():
                call()
            rounds = []
            for _ in range(args.repeats):
                times = {}
                for label, call in calls.items():
                    began = time.perf_counter()
                    call()
                    times[label] = time.perf_counter() - began
                rounds.append(times)
            new = statistics.median(r["new"] / r["grad"] for r in rounds)
            old = statistics.median(r["old"] / r["grad"] for r in rounds)
            both = statistics.median(r["new"] / r["old"] for r in rounds)
            print(f"| {name} | {composite} | {new:.2f} | {old:.2f} | {both:.3f} |", flush=True)
    new_import, old_import = [], []
    for _ in range(args.import_rounds):
        new_import += import_seconds(str(ROOT / "src"), "xaikit", 1)
        old_import += import_seconds(str(folder), "xaikit_base", 1)
    print(f"\nimport time (median of {args.import_rounds}, alternating): this tree "
          f"{statistics.median(new_import):.2f} s, base {statistics.median(old_import):.2f} s")


if __name__ == "__main__":
    main()
