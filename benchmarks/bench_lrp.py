"""LRP cost against the plain-gradient limit: time of LRP / time of gradient × input, same model and batch.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_lrp.py [--repeats 3] [--quick]
The reference is raw torch (forward + torch.autograd.grad w.r.t. the input, times the input). All calls run in
one process, interleaved round by round; reported are the ratio of the minima over the rounds and the median of
each round's ratio (LRP call / the gradient call of the same round), which drifts of the machine affect less.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xaikit as xk  # noqa: E402
from archs import resnet50_like, vgg16_like  # noqa: E402
from xaikit.zoo import load_efficientnet_lite0  # noqa: E402


def gradient_x_input(model, x):
    x = x.detach().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    return g * x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 2 at 112×112 (a smoke run)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, robust when other processes share the machine")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=["ResNet-50-like", "VGG-16-like", "EfficientNet-Lite0"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    size, batch = (112, 2) if args.quick else (224, 8)
    factories = {"ResNet-50-like": resnet50_like, "VGG-16-like": vgg16_like, "EfficientNet-Lite0": load_efficientnet_lite0}
    models = {name: factories[name]() for name in args.models}
    composites = ("epsilon_plus_flat", "epsilon_gamma_box")
    rows = []
    for name, model in models.items():
        x = torch.randn(batch, 3, size, size).clamp(-1, 1)
        candidates = {"gradient × input": lambda: gradient_x_input(model, x)}
        for comp in composites:
            settings = {"low": -1.0, "high": 1.0} if "box" in comp else {}
            lrp = xk.LRP(model, composite=comp, batch_size=batch, **settings)
            candidates[comp] = lambda lrp=lrp: lrp(x, target=0)
        times: dict[str, list[float]] = {k: [] for k in candidates}
        for fn in candidates.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for key, fn in candidates.items():
                began = clock()
                fn()
                times[key].append(clock() - began)
        base = times["gradient × input"]
        for comp in composites:  # the ratio of the minima, and the median of each round's ratio
            paired = statistics.median(t / b for t, b in zip(times[comp], base))
            rows.append((name, comp, min(base), min(times[comp]), min(times[comp]) / min(base), paired))
    print(f"threads: {torch.get_num_threads()}, {args.clock} clock, input {batch}×3×{size}×{size}, "
          f"min of {args.repeats} runs\n")
    print("| model | composite | gradient × input (s) | LRP (s) | ratio of minima | median ratio per round |")
    print("|---|---|---|---|---|---|")
    for name, comp, base, t, ratio, paired in rows:
        print(f"| {name} | {comp} | {base:.3f} | {t:.3f} | {ratio:.2f}× | {paired:.2f}× |")


if __name__ == "__main__":
    main()
