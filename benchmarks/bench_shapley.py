"""Accuracy of the Shapley estimators against exact values, across budgets, next to the reference strategy.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_shapley.py [--samples 20] [--seeds 3] [--shap]``;
``--cost`` times the plain and the surrogate estimators instead (a cheap tabular model and an image model).

Two games with exact Shapley values (single zero baseline = the data mean of standardised features):

- wine: a 13-32-32-3 tanh MLP (:func:`xaikit.zoo.train_wine_mlp`), the softmax probability of the predicted
  class (a plain function, not a module); exact values from all 2^13 coalitions;
- breast cancer: 30 features, :class:`xaikit.zoo.BlockAdditive` (8 tanh MLPs on overlapping blocks of 8
  features), its log-odds; exact values block by block (Shapley values are linear in the game), since 2^30
  coalitions are out of reach. Inside a block the features interact at every order.

For each budget (model evaluations per sample besides v(∅) and v(F)) it reports the median over samples and
seeds of the relative error ‖φ̂ - φ‖ / ‖φ‖ of

- ``reference``: our own copy of the strategy of the reference library's KernelExplainer (written from its
  description, not its code): sizes 1 and d-1, 2 and d-2, ... enumerated while the budget allows, each
  with its Shapley-kernel weight; the remaining budget drawn with replacement from the kernel's size
  distribution over the other sizes, each draw with its complement, repeated draws adding weight; the
  weights of the sampled part rescaled to the kernel mass left; the efficiency-constrained weighted least
  squares;
- ``KernelSHAP plain``: xaikit's regression estimator (exact sizes, stratified paired sampling without
  replacement, regression adjustment; ``estimator="plain"``);
- ``KernelSHAP``: the default, the same adjusted by a network fitted to the values (``estimator="surrogate"``,
  :mod:`xaikit.methods.machinery.shapley_surrogate`); ``ratio`` = KernelSHAP / reference;
- ``Permutation plain`` / ``PermutationShapley``: antithetic orders, ``budget // (d - 1)`` orders (rounded
  down to even), without and with the surrogate;
- with ``--shap``: the reference library's KernelExplainer itself, if installed.
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch

import xaikit as xk
from xaikit.zoo import train_cancer_blocks, train_wine_mlp

BUDGETS = (128, 256, 512, 1024, 2048, 4096)


def reference_design(d: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions ``(C, d)`` and regression weights ``(C,)`` of the reference strategy (see the module docstring)."""
    half = math.ceil((d - 1) / 2)
    paired = math.floor((d - 1) / 2)
    size_weight = np.array([(d - 1) / (s * (d - s)) for s in range(1, half + 1)])
    size_weight[:paired] *= 2
    size_weight /= size_weight.sum()
    rows, weights = [], []
    left, remaining, full = budget, size_weight.copy(), 0
    for s in range(1, half + 1):
        count = math.comb(d, s) * (2 if s <= paired else 1)
        if left * remaining[s - 1] / count < 1 - 1e-8:
            break
        full += 1
        left -= count
        if remaining[s - 1] < 1:
            remaining /= 1 - remaining[s - 1]
        w = size_weight[s - 1] / math.comb(d, s) / (2 if s <= paired else 1)
        for members in itertools.combinations(range(d), s):
            z = np.zeros(d, bool)
            z[list(members)] = True
            rows += [z, ~z] if s <= paired else [z]
            weights += [w, w] if s <= paired else [w]
    if full < half and left > 0:
        p = size_weight[full:] / size_weight[full:].sum()
        seen: dict[bytes, int] = {}
        sampled, counts = [], []
        for _ in range(100 * budget):
            if left <= 0:
                break
            s = int(rng.choice(len(p), p=p)) + full + 1
            z = np.zeros(d, bool)
            z[rng.permutation(d)[:s]] = True
            for zz in ([z, ~z] if s <= paired else [z]):
                key = zz.tobytes()
                if key in seen:
                    counts[seen[key]] += 1
                elif left > 0:
                    seen[key] = len(sampled)
                    sampled.append(zz)
                    counts.append(1.0)
                    left -= 1
        counts = np.array(counts) * size_weight[full:].sum() / max(sum(counts), 1e-300)
        rows += sampled
        weights += list(counts)
    return np.array(rows), np.array(weights)


def reference_estimate(z: np.ndarray, w: np.ndarray, y: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Efficiency-constrained weighted least squares for all samples: ``y`` ``(N, C)`` values minus v(∅)."""
    d = z.shape[1]
    zf = z.astype(float)
    kkt = np.zeros((d + 1, d + 1))
    kkt[:d, :d] = zf.T @ (w[:, None] * zf)
    kkt[:d, d] = kkt[d, :d] = 1.0
    rhs = np.concatenate([(y * w) @ zf, total[:, None]], 1)
    return np.linalg.lstsq(kkt, rhs.T, rcond=None)[0][:d].T


def values(fn, x: torch.Tensor, z: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """``v(z)`` ``(N, C)`` for all samples: the features in z from x, the others 0."""
    zt = torch.as_tensor(z)
    out = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            scores = fn(torch.where(zt, x[i], torch.zeros(())))
            out.append(scores[:, target[i]].double().numpy())
    return np.stack(out)


def relative_error(estimate, exact) -> np.ndarray:
    estimate, exact = np.asarray(estimate, dtype=float), np.asarray(exact, dtype=float)
    return np.linalg.norm(estimate - exact, axis=1) / np.linalg.norm(exact, axis=1)


def games(samples: int):
    model, x_all, _ = train_wine_mlp()
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:samples]]
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731 - a plain function
    target = fn(x).argmax(1)
    exact = xk.ExactShapley(fn)(x, target=target).info["feature_attribution"].double().numpy()
    yield "wine (13 features, MLP, class probability)", fn, x, target, exact
    blocks, x_all, _ = train_cancer_blocks()
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:samples]]
    with torch.no_grad():
        exact = blocks.exact_shapley(x).numpy()
    yield "breast cancer (30 features, block-additive MLPs, log-odds)", blocks, x, torch.zeros(len(x), dtype=torch.long), exact


def run(samples: int, seeds: int, with_shap: bool) -> None:
    for name, fn, x, target, exact in games(samples):
        d = x.shape[1]
        print(f"\n### {name}\n")
        cols = ["budget", "reference", "KernelSHAP plain", "KernelSHAP", "ratio", "Permutation plain",
                "PermutationShapley"] + (["shap"] if with_shap else [])
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        v0 = values(fn, x, np.zeros((1, d), bool), target)[:, 0]
        vf = values(fn, x, np.ones((1, d), bool), target)[:, 0]
        for budget in BUDGETS:
            errors: dict[str, list] = {k: [] for k in ("ref", "kernel_plain", "kernel", "perm_plain", "perm", "shap")}
            for seed in range(seeds):
                z, w = reference_design(d, budget, np.random.default_rng(seed))
                y = values(fn, x, z, target) - v0[:, None]
                errors["ref"].append(relative_error(reference_estimate(z, w, y, vf - v0), exact))
                orders = max(2, budget // (d - 1) // 2 * 2)
                for estimator, suffix in (("plain", "_plain"), ("surrogate", "")):
                    expl = xk.KernelSHAP(fn, samples=budget, seed=seed, estimator=estimator)(x, target=target)
                    errors["kernel" + suffix].append(relative_error(expl.info["feature_attribution"], exact))
                    expl = xk.PermutationShapley(fn, permutations=orders, seed=seed, estimator=estimator)
                    expl = expl(x, target=target)
                    errors["perm" + suffix].append(relative_error(expl.info["feature_attribution"], exact))
                if with_shap:
                    errors["shap"].append(shap_error(fn, x, target, exact, budget, seed))
            m = {k: float(np.median(np.concatenate(e))) for k, e in errors.items() if e}
            row = [str(budget), f"{m['ref']:.4f}", f"{m['kernel_plain']:.4f}", f"{m['kernel']:.4f}",
                   f"{m['kernel'] / m['ref']:.2f}", f"{m['perm_plain']:.4f}", f"{m['perm']:.4f}"]
            if with_shap:
                row.append(f"{m['shap']:.4f}")
            print("| " + " | ".join(row) + " |", flush=True)


def shap_error(fn, x, target, exact, budget, seed) -> np.ndarray:
    import shap

    errors = []
    for i in range(x.shape[0]):
        f = lambda a, t=int(target[i]): fn(torch.as_tensor(a, dtype=torch.float32)).detach().double().numpy()[:, t]  # noqa: E731
        np.random.seed(seed)
        explainer = shap.KernelExplainer(f, np.zeros((1, x.shape[1])))
        phi = explainer.shap_values(x[i:i + 1].numpy().astype(float), nsamples=budget, silent=True, l1_reg=False)
        errors.append(relative_error(np.asarray(phi).reshape(1, -1), exact[i:i + 1])[0])
    return np.array(errors)


def cost(repeats: int = 2) -> None:
    """Seconds per call of the plain and the surrogate-adjusted estimators, interleaved, on a cheap model (the
    wine MLP, 20 rows) and an image model (EfficientNet-Lite0, the four bundled photos, grid:8 = 64 features)."""
    from xaikit.zoo import load_efficientnet_lite0, load_image

    model, x_all, _ = train_wine_mlp()
    wine = (lambda t: torch.softmax(model(t), -1), x_all[:20], "wine MLP, 20 rows, 13 features")
    net = load_efficientnet_lite0()
    photos = torch.cat([load_image(name) for name in ("chelsea", "coffee", "astronaut", "rocket")])
    cases = [(*wine, 512), (*wine, 4096), (net, photos, "EfficientNet-Lite0, 4 photos, 64 features", 96),
             (net, photos, "EfficientNet-Lite0, 4 photos, 64 features", 512)]
    print("| model | samples | KernelSHAP plain s | surrogate s | ratio | PermutationShapley plain s | surrogate s "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for fn, x, label, samples in cases:
        d = x.shape[1] if x.ndim == 2 else 64
        orders = max(2, samples // (d - 1) // 2 * 2)
        makers = {("kernel", e): (lambda e=e: xk.KernelSHAP(fn, samples=samples, estimator=e, seed=0))
                  for e in ("plain", "surrogate")}
        makers.update({("perm", e): (lambda e=e: xk.PermutationShapley(fn, permutations=orders, estimator=e, seed=0))
                       for e in ("plain", "surrogate")})
        times: dict = {k: [] for k in makers}
        for _ in range(repeats):  # interleaved: the machine's speed drifts
            for key, make in makers.items():
                began = time.perf_counter()
                make()(x, target=0 if x.ndim == 2 else 285)
                times[key].append(time.perf_counter() - began)
        t = {k: min(v) for k, v in times.items()}
        print(f"| {label} | {samples} | {t['kernel', 'plain']:.2f} | {t['kernel', 'surrogate']:.2f} | "
              f"{t['kernel', 'surrogate'] / t['kernel', 'plain']:.2f} | {t['perm', 'plain']:.2f} | "
              f"{t['perm', 'surrogate']:.2f} | {t['perm', 'surrogate'] / t['perm', 'plain']:.2f} |", flush=True)


def auto(repeats: int = 2) -> None:
    """The default ``estimator="auto"`` against the named estimators at the same ``samples``: error to the exact
    values and seconds per call (best of ``repeats``, interleaved), on the wine MLP (20 rows); then the choice
    it makes on EfficientNet-Lite0 (one photo, grid:8)."""
    from xaikit.zoo import load_efficientnet_lite0, load_image

    net, photo = load_efficientnet_lite0(), load_image("chelsea")
    expl = xk.KernelSHAP(net, samples=96, seed=0)(photo, target=285)
    print(f"EfficientNet-Lite0, one photo, 64 features, samples=96: auto -> {expl.info['estimator']} "
          f"({expl.info.get('estimator_choice')}), {expl.info['time_s']:.1f} s\n")
    model, x_all, _ = train_wine_mlp()
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:20]]
    target = fn(x).argmax(1)
    exact = xk.ExactShapley(fn)(x, target=target).info["feature_attribution"].double().numpy()
    print("| samples | estimator | evaluations used | median error | seconds per call |")
    print("|---|---|---|---|---|")
    for samples in (128, 512):
        rows = {}
        for _ in range(repeats):
            for estimator in ("plain", "surrogate", "auto"):
                began = time.perf_counter()
                expl = xk.KernelSHAP(fn, samples=samples, estimator=estimator, seed=0)(x, target=target)
                spent = time.perf_counter() - began
                error = float(np.median(relative_error(expl.info["feature_attribution"], exact)))
                label = estimator if estimator != "auto" else f"auto -> {expl.info['estimator']}"
                old = rows.get(estimator)
                rows[estimator] = (label, expl.info["samples"], error, min(spent, old[3]) if old else spent)
        for label, used, error, spent in rows.values():
            print(f"| {samples} | {label} | {used} | {error:.4f} | {spent:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="explained rows per data set")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shap", action="store_true", help="also run the reference library (if installed)")
    parser.add_argument("--cost", action="store_true", help="time the estimators instead (plain vs surrogate)")
    parser.add_argument("--auto", action="store_true", help="the cost-aware default against the named estimators")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.auto:
        auto()
        return
    began = time.perf_counter()
    if args.cost:
        cost()
    else:
        run(args.samples, args.seeds, args.shap)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
