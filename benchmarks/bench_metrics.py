"""Speed of the metrics on EfficientNet-Lite0, 224×224, batch 4 (the four bundled photos).

For each metric: the number of forward passes it makes (counted by a wrapper around the model), its time, and
the ratio to a lower bound measured in the same run:

- perturbation metrics: forward passes × the best per-sample forward cost over chunk sizes 1, 2, 4, ..., 32;
- Max-Sensitivity: (samples + 1) × the cost of explaining the batch once (it explains the batch, then all
  perturbed copies in one call).

The reference cost is measured right before and right after each metric and the lower one is used (the machine
may be shared). ROAD's time spent in the imputation solve is reported too, with its number of V-cycles
(batched calls of the multigrid preconditioner: the CG iterations + 1) and of image-V-cycles (the same,
summed over the images still iterating). Run:

    PYTHONPATH=src python benchmarks/bench_metrics.py [--repeat 1] [--threads N] [--only PixelFlipping,ROAD]

On a machine shared with other jobs, ``--threads 1`` gives far steadier timings (competing OpenMP threads
make small chunks erratically slow).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import xaikit as xk
from xaikit import batching
from xaikit.zoo import IMAGES, load_efficientnet_lite0, load_image


class Counting(nn.Module):
    """Counts the samples the model is run on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.samples = 0

    def forward(self, x):
        self.samples += x.shape[0]
        return self.inner(x)


def best_forward_cost(model: nn.Module, x: torch.Tensor, sizes=(1, 2, 4, 8, 16, 32), repeats: int = 3) -> tuple[float, int, dict]:
    """Best seconds per sample over chunk sizes (each timed on a full chunk of copies of the batch)."""
    per_size = {}
    with torch.no_grad():
        model(x[:1])  # warm-up
        for size in sizes:
            inputs = x.repeat((size + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:size]
            best = float("inf")
            for _ in range(repeats):
                began = time.perf_counter()
                model(inputs)
                best = min(best, (time.perf_counter() - began) / size)
            per_size[size] = best
    size = min(per_size, key=per_size.get)
    return per_size[size], size, per_size


def explanation_cost(method, x: torch.Tensor, target, repeats: int = 3) -> float:
    method(x, target=target)  # warm-up (and the auto chunk choice)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        method(x, target=target)
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per metric (the fastest counts)")
    parser.add_argument("--only", default="", help="comma-separated metric names")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in IMAGES])
    with torch.no_grad():
        target = model(x).argmax(1)
    attribution = xk.InputXGradient(model)(x, target=target).attribution
    counting = Counting(model).eval()
    metrics = {
        "PixelFlipping": xk.metrics.PixelFlipping(pixels_per_step=224),
        "RegionPerturbation": xk.metrics.RegionPerturbation(patch_size=8, steps=100),
        "FaithfulnessCorrelation": xk.metrics.FaithfulnessCorrelation(samples=100, subset_size=224),
        "IROF": xk.metrics.IROF(segments=50),
        "ROAD": xk.metrics.ROAD(),
    }
    only = [m for m in args.only.split(",") if m]
    rows = []
    from xaikit.metrics import faithfulness

    imputing = {"s": 0.0}
    solve = faithfulness.noisy_linear_imputation

    def timed_imputation(*a, **k):
        began = time.perf_counter()
        try:
            return solve(*a, **k)
        finally:
            imputing["s"] += time.perf_counter() - began

    faithfulness.noisy_linear_imputation = timed_imputation
    from xaikit.metrics import imputation

    cycles = {"calls": 0, "images": 0}  # V-cycles on the full grid (one per CG iteration, + 1), and × images
    cycle = imputation.Multigrid.__call__

    def counted_cycle(self, residual, level=0):
        if level == 0:
            cycles["calls"] += 1
            cycles["images"] += residual.shape[0]
        return cycle(self, residual, level)

    imputation.Multigrid.__call__ = counted_cycle
    for name, metric in metrics.items():
        if only and name not in only:
            continue
        cost, size, per_size = best_forward_cost(model, x)
        best, best_imputing = float("inf"), 0.0
        for _ in range(args.repeat):
            counting.samples = 0
            imputing["s"] = 0.0
            cycles["calls"] = cycles["images"] = 0
            batching._best_chunk.clear()  # every run pays its own chunk-size exploration
            began = time.perf_counter()
            metric(counting, x, target, attribution)
            elapsed = time.perf_counter() - began
            if elapsed < best:
                best, best_imputing, best_cycles = elapsed, imputing["s"], dict(cycles)
        chosen = [v for k, v in batching._best_chunk.items() if k[0] == "forward" and k[1] == id(counting)]
        after, size_after, per_size_after = best_forward_cost(model, x)  # the machine may have changed
        if after < cost:
            cost, size, per_size = after, size_after, per_size_after
        reference = counting.samples * cost
        note = f"{size} ({chosen[0] if chosen else 'not cached'})"
        if best_imputing:
            note += (f"; imputation {best_imputing:.2f} s, {best_cycles['calls']} V-cycles "
                     f"({best_cycles['images']} image-V-cycles)")
        rows.append((name, counting.samples, best, reference, best / reference, note))
        print(f"{name}: {counting.samples} forwards, {best:.2f} s, reference {reference:.2f} s, "
              f"ratio {best / reference:.2f}; per-sample cost by chunk "
              f"{dict((k, round(v * 1000, 1)) for k, v in per_size.items())} ms; {note}", flush=True)
    if not only or "MaxSensitivity" in only:
        method = xk.InputXGradient(model)
        samples = 10
        metric = xk.metrics.MaxSensitivity(samples=samples)
        unit = explanation_cost(method, x, target)
        best = float("inf")
        for _ in range(args.repeat):
            began = time.perf_counter()
            metric(model, x, target, method)
            best = min(best, time.perf_counter() - began)
        reference = (samples + 1) * unit
        rows.append(("MaxSensitivity (InputXGradient)", f"{samples + 1} explanations of the batch", best, reference,
                     best / reference, "-"))
        print(f"MaxSensitivity: {best:.2f} s, reference {reference:.2f} s, ratio {best / reference:.2f}", flush=True)
    print()
    print("| metric | forward passes | time (s) | reference (s) | ratio | best chunk (auto chose); notes |")
    print("|---|---|---|---|---|---|")
    for name, passes, seconds, reference, ratio, chunk in rows:
        print(f"| {name} | {passes} | {seconds:.2f} | {reference:.2f} | {ratio:.2f} | {chunk} |")


if __name__ == "__main__":
    main()
