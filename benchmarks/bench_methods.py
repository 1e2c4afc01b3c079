"""Speed of the non-propagation methods on EfficientNet-Lite0 (224×224, batch 4) against the best per-sample cost.

Run: ``PYTHONPATH=src python benchmarks/bench_methods.py [--repeats 2]``. For each method the ratio is

    wall time of one call / (number of forward (or gradient) passes × best per-sample cost),

where the best per-sample cost is the minimum over chunk sizes 1, 2, 4, 8, 16, 32 measured in the same run
(before and after the methods, keeping the minimum). Targets: IG ≤ 1.1, the forward-only methods ≤ 1.2.
"cold" calls start with an empty chunk-size cache (the auto-tuner explores on the real work); "warm" calls
reuse the size it found.
"""
from __future__ import annotations

import argparse
import time

import torch

import xaikit as xk
from xaikit import batching
from xaikit.zoo import load_efficientnet_lite0, load_image

CHUNKS = (1, 2, 4, 8, 16, 32)
N = 4


def per_sample_cost(model, images: torch.Tensor, gradient: bool, repeats: int = 2) -> dict[int, float]:
    """Seconds per sample of a forward (or forward+input-gradient) pass at each chunk size (min over repeats)."""
    costs = {}
    for chunk in CHUNKS:
        x = images[:chunk]
        best = float("inf")
        for _ in range(repeats + 1):  # the first run warms up the allocator for this shape
            began = time.perf_counter()
            if gradient:
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(model(leaf)[:, 285].sum(), leaf)
            else:
                with torch.no_grad():
                    model(x)
            best = min(best, (time.perf_counter() - began) / chunk)
        costs[chunk] = best
    return costs


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats per chunk size")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in ("chelsea", "coffee", "astronaut", "rocket")])
    images = torch.randn(32, 3, 224, 224).clamp(-1, 1)
    forward_before = per_sample_cost(model, images, gradient=False, repeats=args.repeats)
    gradient_before = per_sample_cost(model, images, gradient=True, repeats=args.repeats)

    steps, windows, samples = 16, 32, 96
    methods = [  # (label, factory, passes per call, kind of pass)
        (f"IntegratedGradients(steps={steps})", lambda: xk.IntegratedGradients(model, steps=steps), N * steps, "gradient"),
        (f"Occlusion(window={windows})", lambda: xk.Occlusion(model, window=windows), N * (1 + (224 // windows) ** 2), "forward"),
        (f"RISE(masks={samples})", lambda: xk.RISE(model, masks=samples, seed=0), N * (1 + samples), "forward"),
        (f"LIME(samples={samples}, grid:8)", lambda: xk.LIME(model, samples=samples, seed=0), N * (1 + samples), "forward"),
        (f"KernelSHAP(samples={samples}, grid:8)", lambda: xk.KernelSHAP(model, samples=samples, seed=0),
         N * (2 + samples), "forward"),
    ]
    rows = []
    for label, make, passes, kind in methods:
        batching._best_chunk.clear()  # cold: the auto-tuner explores on this call's work
        cold = timed(lambda: make()(x, target=285))
        chosen = sorted({v for k, v in batching._best_chunk.items() if k[1] == id(model)})
        warm = timed(lambda: make()(x, target=285))
        rows.append((label, passes, kind, cold, warm, chosen))

    forward_after = per_sample_cost(model, images, gradient=False, repeats=args.repeats)
    gradient_after = per_sample_cost(model, images, gradient=True, repeats=args.repeats)
    forward = {c: min(forward_before[c], forward_after[c]) for c in CHUNKS}
    gradient = {c: min(gradient_before[c], gradient_after[c]) for c in CHUNKS}
    best = {"forward": min(forward.values()), "gradient": min(gradient.values())}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; EfficientNet-Lite0, 224×224, batch {N}\n")
    print("| chunk size | " + " | ".join(map(str, CHUNKS)) + " |")
    print("|---|" + "---|" * len(CHUNKS))
    print("| forward ms/sample | " + " | ".join(f"{1000 * forward[c]:.1f}" for c in CHUNKS) + " |")
    print("| forward+gradient ms/sample | " + " | ".join(f"{1000 * gradient[c]:.1f}" for c in CHUNKS) + " |")
    print()
    print("| method | passes | best ms/pass | cold s | cold ratio | warm s | warm ratio | limit | auto chunk |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, passes, kind, cold, warm, chosen in rows:
        ideal = passes * best[kind]
        limit = 1.1 if kind == "gradient" else 1.2
        print(f"| {label} | {passes} {kind} | {1000 * best[kind]:.1f} | {cold:.2f} | {cold / ideal:.2f} | "
              f"{warm:.2f} | {warm / ideal:.2f} | {limit} | {', '.join(map(str, chosen))} |")


if __name__ == "__main__":
    main()
