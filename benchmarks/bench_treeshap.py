"""TreeSHAP against shap's TreeExplainer: agreement and time on scikit-learn forests and gradient boosting.

Run (a venv with shap; it pulls numba, so it is not in the ``test`` extra):

    python3 -m venv /work/venvs/bench && /work/venvs/bench/bin/pip install torch==2.13.0 -e ".[test]" shap
    PYTHONPATH=src nice -n 10 /work/venvs/bench/bin/python benchmarks/bench_treeshap.py [--repeats 3]

For each model and algorithm: the largest absolute difference of the Shapley values, and the median time of
each library over interleaved repeats (xaikit, shap, xaikit, shap, ...), single-threaded (``OMP_NUM_THREADS=1``
is set before numpy loads). shap's first call compiles nothing for TreeExplainer (its C++ extension), but its
explainer's construction is timed separately from the call, as ours is (xaikit's construction reads the trees and
computes the per-leaf pattern tables; for the interventional algorithm those depend on the background).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.ensemble import (GradientBoostingClassifier, GradientBoostingRegressor,  # noqa: E402
                              RandomForestClassifier, RandomForestRegressor)


def problem(seed: int = 0, n: int = 2000, d: int = 10):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x[:, 0] + 2 * x[:, 1] * (x[:, 2] > 0) - x[:, 3] ** 2 + np.sin(3 * x[:, 4]) + 0.3 * rng.normal(size=n)
    return x, y


def models(x, y):
    return {
        "RandomForestRegressor(100 trees, depth 8)": (RandomForestRegressor(100, max_depth=8, random_state=0)
                                                      .fit(x, y), 0),
        "RandomForestClassifier(100 trees, depth 8)": (RandomForestClassifier(100, max_depth=8, random_state=0)
                                                       .fit(x, y > 0), 1),
        "GradientBoostingRegressor(200 stages, depth 4)": (GradientBoostingRegressor(n_estimators=200, max_depth=4,
                                                                                     random_state=0).fit(x, y), 0),
        "GradientBoostingClassifier(200 stages, depth 4)": (GradientBoostingClassifier(n_estimators=200, max_depth=4,
                                                                                       random_state=0)
                                                            .fit(x, y > 0), 0),
    }


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return float(np.median(times)), out


def main() -> None:
    import shap

    from xaikit.tabular import TreeSHAP

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--background", type=int, default=100)
    args = parser.parse_args()
    x, y = problem()
    rows, background = x[:args.rows], x[1000:1000 + args.background]
    print(f"shap {shap.__version__}; {args.rows} rows explained, background {args.background} rows, "
          f"median of {args.repeats} interleaved repeats, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}\n")
    print("| model | algorithm | max abs diff | xaikit call s | shap call s | ratio call | xaikit build s | "
          "shap build s | ratio build + call |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (model, target) in models(x, y).items():
        for algorithm in ("path_dependent", "interventional"):
            def build_ours():
                return (TreeSHAP(model) if algorithm == "path_dependent"
                        else TreeSHAP(model, algorithm="interventional", background=background))

            def build_theirs():
                return (shap.TreeExplainer(model) if algorithm == "path_dependent"
                        else shap.TreeExplainer(model, data=background, feature_perturbation="interventional"))

            times: dict[str, list[float]] = {"ours_build": [], "ours": [], "theirs_build": [], "theirs": []}
            for _ in range(args.repeats):  # interleaved: xaikit, shap, xaikit, shap, ...
                t, ours = timed(build_ours, 1)
                times["ours_build"].append(t)
                t, phi = timed(lambda: ours(rows, target=target).attribution.numpy(), 1)
                times["ours"].append(t)
                t, theirs = timed(build_theirs, 1)
                times["theirs_build"].append(t)
                t, sv = timed(lambda: theirs.shap_values(rows, check_additivity=False), 1)
                times["theirs"].append(t)
            sv = np.asarray(sv)
            sv = sv[..., target] if sv.ndim == 3 else sv
            diff = np.abs(phi - sv).max()
            m = {key: float(np.median(value)) for key, value in times.items()}
            print(f"| {name} | {algorithm} | {diff:.1e} | {m['ours']:.3f} | {m['theirs']:.3f} | "
                  f"{m['ours'] / m['theirs']:.2f} | {m['ours_build']:.3f} | {m['theirs_build']:.3f} | "
                  f"{(m['ours'] + m['ours_build']) / (m['theirs'] + m['theirs_build']):.2f} |", flush=True)


if __name__ == "__main__":
    main()
