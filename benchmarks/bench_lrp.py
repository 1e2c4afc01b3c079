"""LRP cost against the plain-gradient limit: time of LRP / time of gradient × input, same model and batch.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_lrp.py [--repeats 3] [--quick]
The reference is raw torch (forward + torch.autograd.grad w.r.t. the input, times the input). Each timing is
the minimum over repeats, all measured in one run, interleaved.
"""
from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    size, batch = (112, 2) if args.quick else (224, 8)
    models = {"ResNet-50-like": resnet50_like(), "VGG-16-like": vgg16_like(), "EfficientNet-Lite0": load_efficientnet_lite0()}
    composites = ("epsilon_plus_flat", "epsilon_gamma_box")
    rows = []
    for name, model in models.items():
        x = torch.randn(batch, 3, size, size).clamp(-1, 1)
        candidates = {"gradient × input": lambda: gradient_x_input(model, x)}
        for comp in composites:
            settings = {"low": -1.0, "high": 1.0} if "box" in comp else {}
            lrp = xk.LRP(model, composite=comp, batch_size=batch, **settings)
            candidates[comp] = lambda lrp=lrp: lrp(x, target=0)
        best = {k: float("inf") for k in candidates}
        for fn in candidates.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for key, fn in candidates.items():
                began = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - began)
        base = best["gradient × input"]
        for comp in composites:
            rows.append((name, comp, base, best[comp], best[comp] / base))
    print(f"threads: {torch.get_num_threads()}, input {batch}×3×{size}×{size}, min of {args.repeats} runs\n")
    print("| model | composite | gradient × input (s) | LRP (s) | ratio |")
    print("|---|---|---|---|---|")
    for name, comp, base, t, ratio in rows:
        print(f"| {name} | {comp} | {base:.3f} | {t:.3f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
