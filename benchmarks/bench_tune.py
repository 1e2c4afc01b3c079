"""Rule search by metric (issue 15): successive halving against the exhaustive 7⁴ = 2,401-configuration γ grid
(Pahde et al. 2023) on the shapes CNN, and the winner against the LRP presets on held-out samples.

Set-up (all seeded): the shapes CNN ``train_shapes_model(seed=0)``; ``make_shapes(16 + 256, seed=1)``: the first
8 images are the tuning pool, the last 256 the held-out split (never seen by any search). Objective:
pixel-flipping, most relevant first, 64 pixels per step (17 points of the curve), zero (grey) baseline, on
the logit of the true class (lower is better). Space: γ ∈ {0, 0.01, 0.05, 0.1, 0.25, 0.5, 1} for each of the
four conv layers (groups by depth), LRP-ε (1e-6) on the linear head.

Phases (run in this order; each appends to / reads its results file under benchmarks/out/, so an
interrupted phase resumes):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_tune.py grid      # 2,401 × 8 evaluations
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_tune.py search    # halving, 10 seeds, budget 1,920 each
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_tune.py holdout   # grid best, searches, presets
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_tune.py broad     # z⁺/ε/first-layer rules, 32 images
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_tune.py effnet    # EfficientNet-Lite0, 4 photos
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import xaikit as xk
from xaikit.tune.search import fingerprint
from xaikit.tune.store import Store
from xaikit.zoo import make_shapes, train_shapes_model

OUT = Path(__file__).parent / "out" / "tune"
GAMMAS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
TUNE, HELD = 8, 256
BUDGET = 2401 * TUNE // 10  # ≥ 10× fewer metric evaluations than the grid
SEEDS = tuple(range(10))
EFFNET_BUDGET = 120  # 40× fewer than the 2,401 × 2 evaluations of the grid on the two tuning photos


def setup():
    model = train_shapes_model(seed=0)
    data = make_shapes(16 + HELD, seed=1)
    tune_data = (data.x[:TUNE], data.y[:TUNE])
    held = (data.x[16:], data.y[16:])  # images TUNE..15 are used by neither split
    space = xk.tune.LRPSpace(model, groups=4, gamma=GAMMAS)
    metric = {"pixel_flipping": xk.metrics.PixelFlipping(pixels_per_step=64, batch_size=1024)}
    return model, tune_data, held, space, metric


def _prefilled(path: Path, source: Path, model, tune_data, space, metric, **settings) -> None:
    """Start ``path`` with another results file's scores (same metric, same samples) under this search's
    fingerprint, so the search reads them back instead of computing them again (evaluations still count)."""
    if path.exists() or not source.exists():
        return
    objectives = xk.tune.make_objectives(metric)
    x, y = tune_data
    store = Store(fingerprint([space], objectives, x, y, **settings), path)
    for line in source.read_text().splitlines()[1:]:
        row = json.loads(line)
        keep = [i for i, s in enumerate(row["samples"]) if s < TUNE]
        if keep:
            store.add(row["key"], [row["samples"][i] for i in keep],
                      {o: [row["scores"][o][i] for i in keep] for o in row["scores"]})


def grid() -> None:
    model, tune_data, _, space, metric = setup()
    # an earlier grid run on 16 tuning images (interrupted to save time): its scores of images 0..7 are reused
    _prefilled(OUT / "grid.jsonl", OUT / "grid16.jsonl", model, tune_data, space, metric, seed=0, strategy="grid",
               eta=3, min_samples=4, refine=True, budget=None)
    began = time.perf_counter()
    result = xk.tune.tune(model, tune_data, space, metric, strategy="grid", results=OUT / "grid.jsonl",
                          batch_size=49, progress=True)
    seconds = time.perf_counter() - began
    result.to_csv(OUT / "grid.csv")
    summary = {"winner": result.winner.key, "mean": result.winner.mean, "sem": result.winner.sem,
               "evaluations": result.evaluations, "computed": result.computed, "seconds": seconds}
    (OUT / "grid.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def search() -> None:
    """Seed 0 computes every score itself (its time is measured); the other seeds read the scores of the grid
    (the same per-sample scores), so they cost no time, but their metric evaluations are counted the same."""
    model, tune_data, _, space, metric = setup()
    rows = []
    for seed in SEEDS:
        path = OUT / f"search_{seed}.jsonl"
        if seed != 0:
            _prefilled(path, OUT / "grid.jsonl", model, tune_data, space, metric, seed=seed, strategy="halving",
                       eta=3, min_samples=4, refine=True, budget=BUDGET)
        began = time.perf_counter()
        result = xk.tune.tune(model, tune_data, space, metric, budget=BUDGET, seed=seed, results=path,
                              progress=True)
        seconds = time.perf_counter() - began
        result.to_csv(OUT / f"search_{seed}.csv")
        result.plot(OUT / f"search_{seed}.png")
        if seed == 0:
            (OUT / "search_0.md").write_text(result.to_markdown(limit=15) + "\n\n" + result.code())
        rows.append({"seed": seed, "winner": result.winner.key, "mean": result.winner.mean,
                     "sem": result.winner.sem, "evaluations": result.evaluations, "computed": result.computed,
                     "tried": len(result.candidates), "seconds": seconds})
        print(rows[-1])
    old = {r["seed"]: r for r in json.loads((OUT / "search.json").read_text())} if (OUT / "search.json").exists() else {}
    old.update({r["seed"]: r for r in rows})
    (OUT / "search.json").write_text(json.dumps([old[k] for k in sorted(old)], indent=2))


def holdout() -> None:
    model, _, held, space, metric = setup()
    grid_best = json.loads((OUT / "grid.json").read_text())["winner"]
    config = lambda key: dict(item.split("=", 1) for item in key.split(":", 1)[1].split(","))  # noqa: E731
    build = lambda key: xk.LRP(model, composite=space.composite(  # noqa: E731
        {k: f"gamma={float(v.split('=')[1])!r}" for k, v in config(key).items()}))
    methods = {"grid best": build(grid_best)}
    winners: dict[str, list[str]] = {}
    for name, version in (("search.json", ""), ("search_v1.json", " v1")):
        if (OUT / name).exists():
            for row in json.loads((OUT / name).read_text()):
                winners.setdefault(row["winner"], []).append(f"{row['seed']}{version}")
    for key, seeds in winners.items():
        if key != grid_best:
            methods[f"search seeds {','.join(seeds)}: {key.split(':', 1)[1]}"] = build(key)
    print("grid best found by seeds", winners.get(grid_best, []))
    for preset in ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1"):
        methods[f"preset {preset}"] = xk.LRP(model, composite=preset)
    methods["preset epsilon_gamma_box"] = xk.LRP(model, composite="epsilon_gamma_box", low=-1.0, high=1.0)
    began = time.perf_counter()
    table = xk.tune.holdout(model, held, methods, metric, reference="grid best")
    text = table.to_markdown()
    print(text)
    (OUT / "holdout.md").write_text(text + f"\n\n({time.perf_counter() - began:.0f} s)\n")


def broad() -> None:
    """A broader space (z⁺, ε and a first-layer rule besides γ) tuned on 32 other images (make_shapes(32,
    seed=3)), checked on the same 256 held-out images against the presets and the grid's best."""
    model, _, held, space, metric = setup()
    data = make_shapes(32, seed=3)
    wide = xk.tune.LRPSpace(model, groups=4, rules=["gamma=0.0", "gamma=0.1", "gamma=0.25", "gamma=1.0", "zplus",
                                                    "epsilon=0.25"], first=[None, "flat", "zbox"], low=-1.0, high=1.0)
    began = time.perf_counter()
    result = xk.tune.tune(model, (data.x, data.y), wide, metric, budget=2000, seed=0, results=OUT / "broad.jsonl",
                          progress=True)
    seconds = time.perf_counter() - began
    result.to_csv(OUT / "broad.csv")
    result.composite.to_json(OUT / "broad_composite.json")
    grid_best = json.loads((OUT / "grid.json").read_text())["winner"]
    config = dict(item.split("=", 1) for item in grid_best.split(":", 1)[1].split(","))
    methods = {"broad search": result.method(model), "grid best": xk.LRP(model, composite=space.composite(config)),
               "preset epsilon_plus_flat": xk.LRP(model, composite="epsilon_plus_flat"),
               "preset epsilon_plus": xk.LRP(model, composite="epsilon_plus")}
    table = xk.tune.holdout(model, held, methods, metric, reference="broad search")
    text = (f"winner {result.winner.key}: tuning {result.winner.mean} ± {result.winner.sem}; "
            f"{result.evaluations} evaluations of a {result.space_size}-configuration space on 32 images "
            f"(grid: {result.space_size * 32}), {len(result.candidates)} configurations, {seconds:.0f} s\n\n"
            + table.to_markdown())
    print(text)
    (OUT / "broad.md").write_text(text + "\n")


def effnet() -> None:
    from xaikit.zoo import IMAGES, load_efficientnet_lite0, load_image

    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in IMAGES])
    with torch.no_grad():
        y = model(x).argmax(1)
    # 2 photos to tune on, the other 2 held out; 9 points of the pixel-flipping curve
    tune_data, held = (x[:2], y[:2]), (x[2:], y[2:])
    metric = {"pixel_flipping": xk.metrics.PixelFlipping(pixels_per_step=224 * 224 // 8, batch_size=16)}
    space = xk.tune.LRPSpace(model, groups=4, gamma=GAMMAS)
    began = time.perf_counter()
    result = xk.tune.tune(model, tune_data, space, metric, budget=EFFNET_BUDGET, min_samples=1, eta=2,
                          results=OUT / "effnet.jsonl", batch_size=4, progress=True)
    seconds = time.perf_counter() - began
    result.to_csv(OUT / "effnet.csv")
    result.composite.to_json(OUT / "effnet_composite.json")
    methods = {"tuned": result.method(model)}
    for preset in ("epsilon", "epsilon_plus", "epsilon_plus_flat"):
        methods[f"preset {preset}"] = xk.LRP(model, composite=preset)
    methods["preset epsilon_gamma_box"] = xk.LRP(model, composite="epsilon_gamma_box", low=-1.0, high=1.0)
    table = xk.tune.holdout(model, held, methods, metric, reference="tuned", batch_size=2)
    text = (f"winner {result.winner.key}: tuning {result.winner.mean} ± {result.winner.sem}, "
            f"{result.evaluations} evaluations, {len(result.candidates)} configurations, {seconds:.0f} s\n\n"
            + table.to_markdown())
    print(text)
    (OUT / "effnet.md").write_text(text + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("grid", "search", "holdout", "broad", "effnet"))
    parser.add_argument("--seeds", type=int, nargs="+", help="search: only these seeds")
    args = parser.parse_args()
    if args.seeds:
        SEEDS = tuple(args.seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    {"grid": grid, "search": search, "holdout": holdout, "broad": broad, "effnet": effnet}[args.phase]()
