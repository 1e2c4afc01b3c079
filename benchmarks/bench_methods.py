"""Speed of the non-propagation methods on EfficientNet-Lite0 (224×224, batch 4) against the best per-sample cost.

Run: ``PYTHONPATH=src python benchmarks/bench_methods.py [--repeats 2] [--clock cpu] [--threads 1] [--part ...]``
(``--part speed``: the timings only; ``--part shapley``: the sample-efficiency table of the Shapley
estimators on wine, in seconds).
For each method the ratio is

    time of one call / (number of forward (or forward+gradient) passes × best per-sample cost),

where the best per-sample cost is the minimum over chunk sizes 1, 2, 4, 8, 16, 32, measured right before and
right after that method in the same run (the minimum of both). Targets: IG ≤ 1.1, forward-only methods ≤ 1.2.
A "cold" call starts with an empty chunk-size cache (the auto-tuner explores on the real work); a "warm"
call reuses the size it found. ``--clock cpu`` measures process CPU time instead of wall time, for the
benchmark and for the auto-tuner alike, which is robust when other processes share the machine (use it with
``--threads 1``); on a quiet machine use the default wall clock.
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


def per_sample_cost(model, images: torch.Tensor, gradient: bool, repeats: int, clock) -> dict[int, float]:
    """Seconds per sample of a forward (or forward+input-gradient) pass at each chunk size (min over repeats)."""
    costs = {}
    for chunk in CHUNKS:
        x = images[:chunk]
        best = float("inf")
        for _ in range(repeats + 1):  # the first run warms up the allocator for this shape
            began = clock()
            if gradient:
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(model(leaf)[:, 285].sum(), leaf)
            else:
                with torch.no_grad():
                    model(x)
            best = min(best, (clock() - began) / chunk)
        costs[chunk] = best
    return costs


def timed(call, clock) -> float:
    began = clock()
    call()
    return clock() - began


def sample_efficiency(seeds: int = 40, budget: int = 96) -> None:
    """Paired/antithetic vs plain Shapley estimators at equal budget on wine (13 features), against exact values.

    The sampling designs alone (``estimator="plain"``); the network surrogate is measured by bench_shapley.py."""
    plain = {"estimator": "plain"}
    from xaikit.zoo import train_wine_mlp

    model, x_all, _ = train_wine_mlp()
    x = x_all[::30][:6]
    print(f"\nwine, 6 samples, {budget} evaluations per sample, {seeds} seeds: mean ‖φ̂ − φ_exact‖²\n")
    print("| game | KernelSHAP paired | KernelSHAP plain | permutations antithetic | permutations plain |")
    print("|---|---|---|---|---|")
    for game, settings in (("baseline 0 (data mean)", {}), ("background (18 training samples)", {"background": x_all[::10]})):
        exact = xk.ExactShapley(model, **settings)(x).info["feature_attribution"]
        makes = (
            lambda s: xk.KernelSHAP(model, samples=budget, seed=s, **plain, **settings),
            lambda s: xk.KernelSHAP(model, samples=budget, paired=False, seed=s, **plain, **settings),
            lambda s: xk.PermutationShapley(model, permutations=budget // 12, seed=s, **plain, **settings),
            lambda s: xk.PermutationShapley(model, permutations=budget // 12, antithetic=False, seed=s, **plain,
                                            **settings),
        )
        errors = [sum(float(((make(s)(x).info["feature_attribution"] - exact) ** 2).sum(1).mean())
                      for s in range(seeds)) / seeds for make in makes]
        print(f"| {game} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats per chunk size")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, robust when other processes share the machine")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--part", choices=("all", "speed", "shapley"), default="all")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "shapley":
        return sample_efficiency()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    batching._clock = clock  # the auto-tuner times chunks with the same clock as the benchmark
    torch.manual_seed(0)
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in ("chelsea", "coffee", "astronaut", "rocket")])
    images = torch.randn(32, 3, 224, 224).clamp(-1, 1)

    steps, window, samples = 32, 32, 96
    methods = [  # (label, factory, passes per call, kind of pass)
        (f"IntegratedGradients(steps={steps})", lambda: xk.IntegratedGradients(model, steps=steps),
         N * steps, "gradient"),
        (f"Occlusion(window={window})", lambda: xk.Occlusion(model, window=window),
         N * (1 + (224 // window) ** 2), "forward"),
        (f"RISE(masks={samples})", lambda: xk.RISE(model, masks=samples, seed=0), N * (1 + samples), "forward"),
        (f"LIME(samples={samples}, grid:8)", lambda: xk.LIME(model, samples=samples, seed=0),
         N * (1 + samples), "forward"),
        (f"KernelSHAP(samples={samples}, grid:8, plain)",  # the surrogate's fit: bench_shapley.py --cost
         lambda: xk.KernelSHAP(model, samples=samples, estimator="plain", seed=0),
         N * (2 + samples), "forward"),
    ]
    rows, costs = [], {}
    for label, make, passes, kind in methods:
        before = per_sample_cost(model, images, kind == "gradient", args.repeats, clock)
        batching._best_chunk.clear()  # cold: the auto-tuner explores on this call's work
        cold = timed(lambda: make()(x, target=285), clock)
        chosen = sorted({v for k, v in batching._best_chunk.items() if k[1] == id(model)})
        warm = timed(lambda: make()(x, target=285), clock)
        after = per_sample_cost(model, images, kind == "gradient", args.repeats, clock)
        cost = {c: min(before[c], after[c]) for c in CHUNKS}
        costs.setdefault(kind, []).append(cost)
        rows.append((label, passes, kind, min(cost.values()), cold, warm, chosen))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; "
          f"EfficientNet-Lite0, 224×224, batch {N}\n")
    print("| per-sample cost (ms), min over the run | " + " | ".join(f"chunk {c}" for c in CHUNKS) + " |")
    print("|---|" + "---|" * len(CHUNKS))
    for kind, label in (("forward", "forward"), ("gradient", "forward + input gradient")):
        best = {c: min(cost[c] for cost in costs[kind]) for c in CHUNKS}
        print(f"| {label} | " + " | ".join(f"{1000 * best[c]:.1f}" for c in CHUNKS) + " |")
    print()
    print("| method | passes | best ms/pass | cold s | cold ratio | warm s | warm ratio | limit | auto chunk |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, passes, kind, best, cold, warm, chosen in rows:
        ideal = passes * best
        limit = 1.1 if kind == "gradient" else 1.2
        print(f"| {label} | {passes} {kind} | {1000 * best:.1f} | {cold:.2f} | {cold / ideal:.2f} | "
              f"{warm:.2f} | {warm / ideal:.2f} | {limit} | {', '.join(map(str, chosen))} |")
    if args.part == "all":
        sample_efficiency()


if __name__ == "__main__":
    main()
