"""Explanation by example: CEM (flips, keeps, sparsity, time against its limit), neighbour class agreement on
the shapes data set, exact search speed, TracIn speed.

Run: ``PYTHONPATH=src python benchmarks/bench_examples.py [--part cem|neighbours|search|tracin ...] [--seeds 3]``

CEM's limit: every FISTA iteration needs one forward+backward pass of the batch (the gradient of the smooth
loss) and one forward pass (checking the new iterate), so

    ratio = CEM time / (modes × c_steps × iterations × (forward+backward + forward) time of the batch),

with the pass times measured right before and right after the CEM call (the minimum of both). Times are
process CPU time with one thread (robust when other processes share the machine) and wall time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from xaikit.examples import CEM, FeatureIndex, TracIn
from xaikit.zoo import make_shapes, train_digits_mlp, train_shapes_model


def clocks() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def pass_cost(model, x, repeats: int = 20) -> float:
    """CPU seconds of one forward+input-gradient pass plus one forward pass of the batch (min over repeats)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        leaf = x.detach().requires_grad_(True)
        torch.autograd.grad(model(leaf).sum(), leaf)
        with torch.no_grad():
            model(x)
        best = min(best, time.process_time() - began)
    return best


def mean_sd(values) -> str:
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {sd:.2g}"


def cem_part(seeds: int) -> None:
    digits, dx, _ = train_digits_mlp(seed=0)
    shapes = train_shapes_model(seed=0)
    cases = [
        ("digits MLP (64-32-10)", digits, lambda s: dx[16 * s: 16 * (s + 1)],
         dict(feature_range=(0.0, 1.0)), "paper: c_init=10, 9 c-steps × 1000 iterations, κ=0, β=0.1, absent=0"),
        ("shapes CNN (32×32)", shapes, lambda s: make_shapes(16, seed=100 + s).x,
         dict(feature_range=(-1.0, 1.0), absent=0.0, c_init=100.0, c_steps=4, iterations=200),
         "c_init=100, 4 c-steps × 200 iterations, κ=0, β=0.1, absent=0 (mid-grey)"),
    ]
    print("| model | settings | batch (seed) | PN found | PN flips | PP found | PP keeps | PN sparsity | PP sparsity "
          "| CPU s / batch of 16 | wall s | CPU s / sample | ratio to limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, model, batch, settings, text in cases:
        for seed in range(seeds):
            x = batch(seed)
            before = pass_cost(model, x)
            cem = CEM(model, **settings)
            cpu, wall = clocks()
            result = cem(x)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            limit = min(before, pass_cost(model, x)) * 2 * cem.c_steps * cem.iterations
            with torch.no_grad():
                flips = (model(result.pn).argmax(1) != result.target).float().mean()
                keeps = (model(result.pp).argmax(1) == result.target).float().mean()
            print(f"| {name} | {text} | 16 ({seed}) | {result.pn_found.float().mean():.2f} | {flips:.2f} | "
                  f"{result.pp_found.float().mean():.2f} | {keeps:.2f} | {mean_sd(result.info['pn_sparsity'])} | "
                  f"{mean_sd(result.info['pp_sparsity'])} | {cpu:.1f} | {wall:.1f} | {cpu / 16:.2f} | "
                  f"{cpu / limit:.2f} |", flush=True)


def neighbours_part(seeds: int) -> None:
    print("| training seed | layer | metric | k=1 | k=5 | k=10 | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for seed in range(seeds):
        train = make_shapes(1024, seed=seed)
        model = train_shapes_model(train, seed=seed)
        test = make_shapes(512, seed=100 + seed)
        accuracy = (model(test.x).argmax(1) == test.y).float().mean()
        for layer in (None, "features.6"):
            for metric in ("cosine", "euclidean"):
                index = FeatureIndex(model, layer=layer, metric=metric).fit(train)
                found = index.neighbours(test.x, k=10)
                share = [(found.label[:, :k] == test.y[:, None]).float().mean() for k in (1, 5, 10)]
                print(f"| {seed} | {index.features.label} | {metric} | " + " | ".join(f"{s:.3f}" for s in share)
                      + f" | {accuracy:.3f} |", flush=True)


def search_part() -> None:
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(100_000, 64, generator=g), torch.randn(64, 64, generator=g)
    index = FeatureIndex.from_vectors(vectors, metric="euclidean")
    for _ in range(2):
        began = time.process_time()
        found = index.search(queries, k=10)
        ours = time.process_time() - began
        began = time.process_time()
        brute = torch.cdist(queries, vectors).topk(10, dim=1, largest=False)
        reference = time.process_time() - began
    same = torch.equal(found.index, brute.indices)
    print(f"| 100,000 × 64 vectors, 64 queries, k=10, Euclidean | {ours:.3f} | {reference:.3f} | {same} |")


def tracin_part() -> None:
    train = make_shapes(1024, seed=0)
    model = train_shapes_model(train, seed=0)
    queries = make_shapes(16, seed=100).x
    for settings in ({"layer": "last"}, {"layer": "all", "projection": 256}):
        began = time.process_time()
        tracin = TracIn(model, **settings).fit(train)
        fit = time.process_time() - began
        began = time.process_time()
        top = tracin.top(queries, k=5)
        query = time.process_time() - began
        same = (train.y[top.supporting[:, 0]] == model(queries).argmax(1)).float().mean()
        print(f"| {settings} | {fit:.2f} | {query:.2f} | {same:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["cem", "neighbours", "search", "tracin"])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "cem" in args.part:
        cem_part(args.seeds)
    if "neighbours" in args.part:
        neighbours_part(args.seeds)
    if "search" in args.part:
        print("| case | our CPU s | cdist + topk CPU s | same indices |\n|---|---|---|---|")
        search_part()
    if "tracin" in args.part:
        print("| TracIn on 1,024 shapes training images, 16 queries | fit CPU s | top-5 CPU s | top proponent "
              "has the predicted class |\n|---|---|---|---|")
        tracin_part()


if __name__ == "__main__":
    main()
