"""Shapley values at equal wall time: xaikit's default KernelSHAP against shap's KernelExplainer and shapiq.

Error to exact Shapley values against seconds per explained input, one point per budget (model evaluations
per input), for

- ``xaikit default``: ``xk.KernelSHAP(model, samples=budget)`` with ``estimator="auto"`` (it may spend more
  evaluations than ``samples`` on a cheap model: ``info["samples"]``); the rows are explained in one batched
  call, its time divided by the rows;
- ``shap KernelExplainer``: ``nsamples=budget``, ``l1_reg=False``, one input per call;
- shapiq's Shapley-value approximators (``KernelSHAP``, ``UnbiasedKernelSHAP``, ``PermutationSamplingSV``,
  ``SVARM``, ``StratifiedSamplingSV``, ``OwenSamplingSV``), ``approximate(budget, game)``, one input per call.

All evaluate the same torch model on the same coalition game (absent features at the zero baseline). Games:

- wine: the 13-feature MLP of :func:`xaikit.zoo.train_wine_mlp`, softmax probability of the predicted class;
  exact values from all 2^13 coalitions (``xk.ExactShapley``);
- EfficientNet-Lite0 on a grid of cells of a bundled photo (``--grid 3x4``: 12 cells; the logit of the
  predicted class), exact from all 2^cells coalitions (``xk.ExactShapley``).

Then, for every peer point (error e at t seconds per input), xaikit's best error among its points no slower
than t. Times are best of ``--repeats`` interleaved calls (the machine is shared).

Run (benchmark venv with shap and shapiq, see benchmarks/results/shapley_time.md):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_shapley_time.py --game wine
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_shapley_time.py --game image --photos 1 \
        --grid 2x5 --seeds 1 --repeats 1 --budgets 32 64 128 256 --peers KernelSHAP PermutationSamplingSV SVARM
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import xaikit as xk
from xaikit.zoo import train_wine_mlp

SHAPIQ = ("KernelSHAP", "UnbiasedKernelSHAP", "PermutationSamplingSV", "SVARM", "StratifiedSamplingSV",
          "OwenSamplingSV")


def relative_error(estimate, exact) -> np.ndarray:
    estimate, exact = np.asarray(estimate, dtype=float), np.asarray(exact, dtype=float)
    return np.linalg.norm(estimate - exact, axis=1) / np.linalg.norm(exact, axis=1)


def grid_mask(height: int, width: int, rows: int = 3, cols: int = 4) -> torch.Tensor:
    """``(height, width)`` integer cell ids of a rows x cols grid."""
    r = torch.arange(height)[:, None] * rows // height
    c = torch.arange(width)[None, :] * cols // width
    return r * cols + c


def wine_game(rows: int):
    model, x_all, _ = train_wine_mlp()
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:rows]]
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731 - a plain function
    target = fn(x).argmax(1)
    exact = xk.ExactShapley(fn)(x, target=target).info["feature_attribution"].double().numpy()

    def coalitions(i: int):
        def value(z: np.ndarray) -> np.ndarray:
            zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.bool)
            with torch.no_grad():
                return fn(torch.where(zt, x[i], torch.zeros(())))[:, int(target[i])].double().numpy()
        return value
    return fn, x, target, None, exact, coalitions, (32, 64, 128, 256, 512, 1024, 2048, 4096)


def image_game(photos: int, rows: int = 3, cols: int = 4, slic: int | None = None):
    from xaikit.zoo import load_efficientnet_lite0, load_image

    net = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in ("chelsea", "coffee", "astronaut")[:photos]])
    if slic is None:
        mask, d = grid_mask(*x.shape[2:], rows, cols), rows * cols
    else:  # SLIC superpixels of the first photo (``--slic N``: one photo, its own number of segments)
        from xaikit.methods.machinery.features import resolve_features

        assert photos == 1, "--slic segments one photo"
        segments = resolve_features(f"slic:{slic}", x)
        mask, d = segments.mask[0, 0], int(segments.count[0])
        print(f"SLIC: {d} superpixels", flush=True)
    with torch.no_grad():
        target = net(x).argmax(1)
    began = time.perf_counter()
    info = xk.ExactShapley(net, features=mask, batch_size=64)(x, target=target).info
    exact = info["feature_attribution"]
    print(f"exact ({2 ** d:,} coalitions per photo): {time.perf_counter() - began:.1f} s", flush=True)
    cells = torch.nn.functional.one_hot(mask, d).permute(2, 0, 1).float()  # (d, H, W)

    def coalitions(i: int):
        def value(z: np.ndarray) -> np.ndarray:
            zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.float32)
            out = []
            with torch.no_grad():
                for chunk in zt.split(64):
                    present = torch.einsum("mk,khw->mhw", chunk, cells)[:, None]
                    out.append(net(x[i] * present)[:, int(target[i])].double())
            return torch.cat(out).numpy()
        return value
    for i in range(x.shape[0]):  # the peers' game is xaikit's: the same values at the full and empty coalitions
        ends = coalitions(i)(np.array([[True] * d, [False] * d]))
        assert np.allclose(ends, [float(info["value_full"][i]), float(info["value_empty"][i])], atol=1e-4), ends
    return net, x, target, mask, exact.double().numpy(), coalitions, (64, 128, 256, 512, 1024)


def run_xaikit(model, x, target, features, budget, seed):
    began = time.perf_counter()
    expl = xk.KernelSHAP(model, samples=budget, seed=seed, **({} if features is None else {"features": features}))
    expl = expl(x, target=target)
    spent = (time.perf_counter() - began) / x.shape[0]
    return expl.info["feature_attribution"].double().numpy(), spent, f"{expl.info['estimator']}, " \
        f"{int(expl.info['samples'])} evaluations"


def run_shap(coalitions, x, target, budget, seed, d):
    import shap

    out = np.zeros((x.shape[0], d))
    began = time.perf_counter()
    for i in range(x.shape[0]):
        value = coalitions(i)
        np.random.seed(seed)
        explainer = shap.KernelExplainer(lambda z: value(z > 0.5), np.zeros((1, d)))
        out[i] = np.asarray(explainer.shap_values(np.ones((1, d)), nsamples=budget, silent=True, l1_reg=False))[0]
    return out, (time.perf_counter() - began) / x.shape[0], ""


def run_shapiq(name, coalitions, x, budget, seed, d):
    import shapiq

    out = np.zeros((x.shape[0], d))
    began = time.perf_counter()
    for i in range(x.shape[0]):
        values = getattr(shapiq, name)(n=d, random_state=seed).approximate(budget=budget, game=coalitions(i))
        out[i] = [values[(j,)] for j in range(d)]
    return out, (time.perf_counter() - began) / x.shape[0], ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", choices=("wine", "image"), default="wine")
    parser.add_argument("--rows", type=int, default=10, help="wine rows")
    parser.add_argument("--photos", type=int, default=1)
    parser.add_argument("--grid", default="3x4", help="image cells, rows x columns")
    parser.add_argument("--slic", type=int, help="SLIC superpixels (about N) of one photo instead of the grid")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peers", nargs="*", default=list(SHAPIQ))
    parser.add_argument("--budgets", nargs="*", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    game = wine_game(args.rows) if args.game == "wine" else image_game(args.photos, *map(int, args.grid.split("x")),
                                                                       slic=args.slic)
    model, x, target, features, exact, coalitions, budgets = game
    budgets = args.budgets or budgets
    d = exact.shape[1]
    methods = {"xaikit default": lambda b, s: run_xaikit(model, x, target, features, b, s),
               "shap KernelExplainer": lambda b, s: run_shap(coalitions, x, target, b, s, d)}
    methods.update({f"shapiq {n}": (lambda b, s, n=n: run_shapiq(n, coalitions, x, b, s, d)) for n in args.peers})
    points: dict = {m: {} for m in methods}
    for budget in budgets:
        errors: dict = {m: [] for m in methods}
        times: dict = {m: [] for m in methods}
        notes: dict = {}
        for seed in range(args.seeds):
            for repeat in range(args.repeats):  # interleaved: the machine's speed drifts
                for name, call in methods.items():
                    estimate, spent, note = call(budget, seed)
                    times[name].append(spent)
                    notes[name] = note
                    if repeat == 0:
                        errors[name].append(relative_error(estimate, exact))
        for name in methods:
            points[name][budget] = (float(np.median(np.concatenate(errors[name]))), min(times[name]))
        print(f"budget {budget}: " + "; ".join(f"{n} {points[n][budget][0]:.4f} ({points[n][budget][1]:.4f} s)"
                                              for n in methods) + f" [{notes['xaikit default']}]", flush=True)
    print(f"\nMedian relative error ‖φ̂ − φ‖ / ‖φ‖ (seconds per input, best of {args.repeats})\n")
    print("| budget | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for budget in budgets:
        print(f"| {budget} | " + " | ".join(f"{points[m][budget][0]:.4f} ({points[m][budget][1]:.4f})"
                                           for m in methods) + " |")
    print("\nAt equal time: for each peer point, xaikit's best error among its points no slower\n")
    print("| peer | budget | peer error (s/input) | xaikit best within that time | ratio |")
    print("|---|---|---|---|---|")
    ours = points["xaikit default"]
    for name in methods:
        if name == "xaikit default":
            continue
        for budget in budgets:
            error, spent = points[name][budget]
            within = [e for e, t in ours.values() if t <= spent]
            best = f"{min(within):.4f} | {min(within) / error:.2f}" if within else "none that fast | -"
            print(f"| {name} | {budget} | {error:.4f} ({spent:.4f}) | {best} |")


if __name__ == "__main__":
    main()
